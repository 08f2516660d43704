import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  LabelVocabulary,
  QuestionPriorBaseline,
  loadTokenizer,
  openShardDataset,
  prepareShards,
  readVqaTaskSplit,
  sharedDataDir,
  trainTokenizer,
  writePhantomCorpus,
  SkipLog,
  CARVE_GROUP_BY,
  type CarveSpec,
  type PhantomManifestLine,
} from '@m3ae/data';
import {
  chooseBackend,
  createModel,
  flattenParams,
  loadCheckpoint,
  presetConfig,
  setParamsFromFlat,
  vqaMetrics,
  VQA_LOSSES,
  type M3AEModel,
  type VqaLoss,
  type VqaMetrics,
} from '@m3ae/model';
import { loadRunConfig, type StepReport } from '@m3ae/protocol';
import { evaluatePhantom, HEAD_BIASES, heldOutEvaluation, zeroShotRetrieval, zeroShotRetrievalModel, type HeadBias, type ZeroShotRetrieval } from '@m3ae/tasks';
import { formatEvaluation, modelSetup, runModelConfig, trainInProcess, type EvaluationEntry } from '@m3ae/training';
import { runEval } from '../commands/eval.js';
import { runFinetune, type FinetuneOptions, type FinetuneResult } from '../commands/finetune.js';
import { registerBenchArea, type BenchOptions } from './areas.js';
import { parseSizeSpec, type Sizes as BenchSizes } from './sizes.js';
import { machineInfo, mean, type BenchRow } from './report.js';

/**
 * `m3ae bench learning`: does pre-training learn, and does it help downstream?
 *
 * (a) Phantom corpus (procedural images whose captions state what the image shows): after pre-training, masked
 *     words that describe the image (lesion density, size, shape, location, region, plane, modality) are predicted
 *     with the true image and with another sample's image — cross-modal learning shows as a gap — and the MIM loss
 *     on held-out images is set against predicting each masked patch's mean (zero in the per-patch-normalised
 *     target space).
 * (b) Real data: `small` pre-trained on the MedPix 2.0 pairs, then fine-tuned on VQA-RAD training questions
 *     (validation and held-out splits carved by image), against the same fine-tuning from random initialisation,
 *     the same fine-tuning of a question-only model (`inputs: text`: every image blank), the question-only answer
 *     table and the majority answer. Selection on validation only; the held-out split is read once per model.
 * (s) From scratch, no pre-training: a model fine-tuned on VQA-RAD from random initialisation against the same
 *     model trained question-only, the answer table and the majority answer (issue 13).
 * (r) Held-out pairs (issue 13): pre-training on the MedPix 2.0 train pairs with the held-out evaluation
 *     (`evaluation.every`) on MedPix dev (other cases), ITM / MLM accuracy and MIM loss against ITM chance, a
 *     unigram model of the training captions and the untrained model; then zero-shot retrieval by ITM ranking on the dev pairs, R@1/5/10 of
 *     the pre-trained model against the same model at its random initialisation (the run's step 0) and chance.
 *
 * Sizes are flags (`--size key=value,...`, see SIZE_DEFAULTS) so that the run fits the machine.
 */
const workspaceRoot = resolve(import.meta.dirname, '../../..');

const SIZE_DEFAULTS = {
  /** Parts to run: a (phantom), b (real data), s (VQA-RAD from scratch), r (held-out evaluation and retrieval); s and r are not in the default. */
  parts: 'a,b',
  /**
   * (b) seconds for pre-training and the three fine-tunings together (0: the fixed step and epoch counts below). The
   * bench times a few steps of each first, then sizes the pre-training steps and each fine-tuning's steps to fit
   * (`planBudget`); the table says what it used.
   */
  'budget-s': 0,
  /** Where the work (pre-training checkpoint, fine-tuned models) stays for `m3ae eval` ('': a temporary folder, removed). */
  out: '',
  // (a) phantom corpus: `tiny` widened to 64; at these sizes the cross-modal gap appears (ITM leaves chance after
  // ~600 steps; with lr 1e-3 nothing image-related is learnt, with 5e-4 and 1,024 images the text is memorised).
  'phantom-train': 8192,
  'phantom-eval': 64,
  'phantom-px': 48,
  'phantom-preset': 'tiny',
  'phantom-steps': 1500,
  'phantom-batch': 16,
  'phantom-lr': 2e-4,
  /** Width of the phantom model (0: the preset's); heads = width / 16. */
  'phantom-hidden': 64,
  // (b) real data
  vocab: 8192,
  'pretrain-px': 64,
  'pretrain-text': 40,
  'pretrain-steps': 320,
  'pretrain-batch': 16,
  'pretrain-lr': 5e-4,
  'ft-px': 64,
  'ft-epochs': 3,
  'ft-batch': 16,
  'ft-lr': 1e-4,
  /** Gradient-norm clipping in fine-tuning (0: none), the same for both inits. */
  'ft-clip': 1,
  /** The VQA answer loss of every fine-tuning here (`--vqa-loss`): softmax for these small models (BENCHMARKS.md, issue 13). */
  'ft-vqa-loss': 'softmax',
  'ft-train-limit': 0,
  /** Validate on the first n validation questions (0: all 307). */
  'ft-val-limit': 0,
  /** Examples per forward/backward pass in fine-tuning (speed only: the gradients are exact). */
  'ft-micro': 16,
  micro: 8,
  /** Compute threads (wasm is single-threaded): data-parallel pre-training and fine-tuning. */
  threads: 2,
  seed: 0,
  // (s) from scratch: the preset, image side, BPE vocabulary (trained on the carved training questions), schedule.
  'scratch-preset': 'tiny',
  'scratch-px': 40,
  'scratch-vocab': 1000,
  'scratch-epochs': 30,
  'scratch-batch': 32,
  'scratch-lr': 1e-3,
  /** The head's initial last-layer bias (`--head-bias`): `prior`, the training answers' log frequencies (issue 13, third reading). */
  'scratch-head-bias': 'prior',
  /**
   * What the carve of (s) keeps together (`--carve-by`): `image` (validation and held-out images never trained on:
   * the readings so far) or `question` (held-out questions may be about training images, as in VQA-RAD's official
   * test set; issue 13, fourth reading). The same fractions and seed either way.
   */
  'scratch-carve': 'image',
  /**
   * (s) with pre-training (issue 13's second target): steps of pre-training the same preset, at the same image side
   * and with the part's own vocabulary, on the MedPix 2.0 train pairs before a third fine-tuning from that checkpoint
   * (0: none, the part as before). The random-initialisation and question-only models then take the checkpoint's
   * configuration, which is the preset's, so their figures are those of the part without pre-training.
   */
  'scratch-pretrain-steps': 0,
  'scratch-pretrain-batch': 32,
  'scratch-pretrain-lr': 5e-4,
  // (r) held-out evaluation and zero-shot retrieval: the preset (0 width: the preset's), image side, text length,
  // schedule, evaluation period and size, retrieval pairs (MedPix dev has 196 images).
  'r-preset': 'tiny',
  'r-hidden': 64,
  'r-px': 64,
  'r-text': 40,
  'r-steps': 300,
  'r-batch': 16,
  'r-lr': 5e-4,
  'r-eval-every': 50,
  'r-eval-samples': 196,
  'r-pairs': 196,
} as const;

const QUICK: Partial<Record<keyof typeof SIZE_DEFAULTS, number | string>> = {
  'phantom-train': 64,
  'phantom-eval': 16,
  'phantom-steps': 10,
  'pretrain-px': 32,
  'pretrain-steps': 4,
  'pretrain-batch': 4,
  'ft-px': 32,
  'ft-epochs': 1,
  'ft-train-limit': 64,
  'ft-val-limit': 32,
  vocab: 1000,
  'scratch-epochs': 1,
  'scratch-px': 16,
  'r-px': 32,
  'r-steps': 4,
  'r-batch': 4,
  'r-eval-every': 2,
  'r-eval-samples': 8,
  'r-pairs': 8,
};

/**
 * The recipe on a GPU (`--backend webgpu`; explicit `--size` keys still win): part (b) with `small` at 128 px in
 * batches of 64, sized to a budget that fits one 9-minute device call with room for start-up and evaluation. The
 * sizes are first guesses from the H200 probe (`small`, B = 128: 57 samples/s at 224 px); a device run replaces them.
 */
const GPU: Partial<Record<keyof typeof SIZE_DEFAULTS, number | string>> = {
  parts: 'b',
  'budget-s': 420,
  'pretrain-px': 128,
  'pretrain-batch': 64,
  'pretrain-steps': 100_000,
  micro: 64,
  'ft-px': 128,
  'ft-batch': 64,
  'ft-micro': 64,
  'ft-epochs': 20,
  'ft-lr': 1e-4,
  threads: 1,
};

type Sizes = BenchSizes<typeof SIZE_DEFAULTS>;

/** Shares of a (b) budget: pre-training, and each of the three fine-tunings (the rest: evaluation and set-up). */
export const BUDGET_SHARES = { pretrain: 0.45, finetune: 0.15 } as const;

/** Validations of a budgeted fine-tuning: every quarter of its steps (`evalEvery`), so about five with the last. */
export const BUDGET_VALIDATIONS = 5;

/** What the timing runs of a (b) budget measured, in seconds. */
export interface BudgetTiming {
  /** Data preparation and the timing runs. */
  spentS: number;
  /** A pre-training step after the first. */
  pretrainStepS: number;
  /** A fine-tuning step after the first. */
  finetuneStepS: number;
  /** One validation of the fine-tuning. */
  validationS: number;
  /** A fine-tuning's set-up (data, model) besides its steps and validations. */
  finetuneSetupS: number;
  /** The held-out evaluation after each fine-tuning, in validations (held-out questions / validation questions). */
  holdoutPerValidation: number;
}

/**
 * Steps that fit a (b) budget from measured times: the pre-training gets its share of what the timing runs left; each
 * fine-tuning gets its share, less its set-up, its validations and its held-out evaluation. At least one step each, at
 * most the fixed counts.
 */
export function planBudget(budgetS: number, t: BudgetTiming, max: { pretrainSteps: number; finetuneSteps: number }): { pretrainSteps: number; finetuneSteps: number } {
  for (const [k, v] of Object.entries({ budgetS, ...t })) if (!(Number.isFinite(v) && v >= 0)) throw new Error(`planBudget: ${k} = ${v}; expected a finite number >= 0`);
  const left = Math.max(0, budgetS - t.spentS);
  const fit = (seconds: number, stepS: number, most: number): number => Math.max(1, Math.min(most, Math.floor(Math.max(0, seconds) / Math.max(stepS, 1e-6))));
  const finetuneOverheadS = t.finetuneSetupS + (BUDGET_VALIDATIONS + t.holdoutPerValidation) * t.validationS;
  return {
    pretrainSteps: fit(BUDGET_SHARES.pretrain * left, t.pretrainStepS, max.pretrainSteps),
    finetuneSteps: fit(BUDGET_SHARES.finetune * left - finetuneOverheadS, t.finetuneStepS, max.finetuneSteps),
  };
}

/** `--size a=1,b=2` (repeatable) over the defaults; unknown keys and non-numbers are errors naming them. */
export function parseSizes(spec: string | undefined, quick: boolean, gpu = false): Sizes {
  return parseSizeSpec(SIZE_DEFAULTS, spec, { ...(gpu ? GPU : {}), ...(quick ? QUICK : {}) });
}

export interface PretrainRun {
  model: M3AEModel;
  /** The pre-training checkpoint (the trainer's last), for fine-tuning and `m3ae eval`. */
  checkpoint: string;
  seconds: number;
  /** Mean seconds of a step after the first (the first compiles kernels and grows memory). */
  stepSeconds: number;
  samples: number;
  /** Mean per-step losses over the last tenth of the steps. */
  last: { mlm: number; mim: number; itm: number; itmAccuracy: number };
  /** The held-out evaluations, when asked for. */
  evaluations: EvaluationEntry[];
}

/** Per-step losses of a window of steps, averaged. */
class LossWindow {
  private readonly sum = { mlm: 0, mim: 0, itm: 0, mlmAccuracy: 0, itmAccuracy: 0 };
  private n = 0;
  add(r: StepReport): void {
    this.sum.mlm += r.losses.mlm ?? NaN;
    this.sum.mim += r.losses.mim ?? NaN;
    this.sum.itm += r.losses.itm ?? NaN;
    this.sum.mlmAccuracy += r.accuracy.mlm ?? NaN;
    this.sum.itmAccuracy += r.accuracy.itm ?? NaN;
    this.n++;
  }
  mean(): { mlm: number; mim: number; itm: number; mlmAccuracy: number; itmAccuracy: number } {
    const d = (x: number): number => (this.n > 0 ? x / this.n : NaN);
    return { mlm: d(this.sum.mlm), mim: d(this.sum.mim), itm: d(this.sum.itm), mlmAccuracy: d(this.sum.mlmAccuracy), itmAccuracy: d(this.sum.itmAccuracy) };
  }
}

/**
 * Pre-training in this process: the run configuration `m3ae train` would get, trained by the same {@link Trainer}
 * with the workers' gradient computers in this process (data parallel over `threads` compute threads) — the same
 * parameters as the cluster by construction. The checkpoint lands in `output`.
 */
export async function pretrainInProcess(o: {
  preset: string;
  overrides: Record<string, unknown>;
  shards: string;
  tokenizer: string;
  output: string;
  steps: number;
  batch: number;
  micro: number;
  learningRate: number;
  seed: number;
  threads?: number;
  backend?: string | undefined;
  /** The held-out evaluation (`evaluation` of the run configuration); its entries are logged and returned. */
  evaluation?: { every: number; data: string; samples: number };
  log: (line: string) => void;
}): Promise<PretrainRun> {
  const t0 = performance.now();
  const config = loadRunConfig({
    base: {
      runId: `bench-learning-${o.seed}`,
      seed: o.seed,
      model: { preset: o.preset, overrides: o.overrides },
      data: { dir: o.shards, tokenizer: o.tokenizer },
      training: { steps: o.steps, globalBatch: o.batch, microBatch: Math.min(o.micro, o.batch), learningRate: o.learningRate, warmupFraction: 0.1, clipNorm: 1 },
      compute: { backend: o.backend ?? 'auto' },
      checkpoint: { dir: o.output, every: 0, keep: 1 },
      ...(o.evaluation ? { evaluation: o.evaluation } : {}),
    },
    env: {},
  });
  const evaluations: EvaluationEntry[] = [];
  const setup = await modelSetup(config, { log: o.log, onEvaluate: (e) => evaluations.push(e) });
  let win = new LossWindow();
  const tail = new LossWindow();
  const logEvery = Math.max(1, Math.floor(o.steps / 10));
  const f = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : '-');
  const stepMs: number[] = [];
  const onStep = (r: StepReport): void => {
    stepMs.push(r.durationMs);
    win.add(r);
    if (r.step >= Math.floor(o.steps * 0.9)) tail.add(r);
    if ((r.step + 1) % logEvery !== 0) return;
    const m = win.mean();
    o.log(`pre-training step ${r.step + 1}/${o.steps} (${((performance.now() - t0) / 1000).toFixed(0)} s): MLM ${f(m.mlm)} (acc ${f(m.mlmAccuracy)}), MIM ${f(m.mim)}, ITM ${f(m.itm)} (acc ${f(m.itmAccuracy)})`);
    win = new LossWindow();
  };
  try {
    const summary = await trainInProcess(config, setup, { threads: o.threads, events: { onStep } });
    const model = createModel(runModelConfig(config), { zeroInit: true });
    const loaded = await loadCheckpoint(summary.checkpoint as string, model.manifest);
    setParamsFromFlat(model, loaded.params);
    const last = tail.mean();
    const stepSeconds = mean(stepMs.length > 1 ? stepMs.slice(1) : stepMs) / 1000;
    return { model, checkpoint: summary.checkpoint as string, seconds: (performance.now() - t0) / 1000, stepSeconds, samples: summary.steps * o.batch, last: { mlm: last.mlm, mim: last.mim, itm: last.itm, itmAccuracy: last.itmAccuracy }, evaluations };
  } finally {
    await setup.close?.();
  }
}

type Log = (line: string) => void;

async function phantomPart(s: Sizes, work: string, log: Log): Promise<PartResult> {
  const px = s['phantom-px'];
  const trainDir = join(work, 'phantom-train');
  const evalDir = join(work, 'phantom-eval');
  log(`phantom corpus: ${s['phantom-train']} training and ${s['phantom-eval']} held-out images at ${px} px`);
  await writePhantomCorpus({ output: trainDir, count: s['phantom-train'], seed: s.seed + 1, size: px });
  await writePhantomCorpus({ output: evalDir, count: s['phantom-eval'], seed: s.seed + 2, size: px });
  const trainLines = (await readFile(join(trainDir, 'manifest.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as PhantomManifestLine);
  const evalLines = (await readFile(join(evalDir, 'manifest.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as PhantomManifestLine);
  await writeFile(join(work, 'phantom-captions.txt'), trainLines.map((l) => l.text).join('\n') + '\n');
  await trainTokenizer({ sources: [{ kind: 'text', path: join(work, 'phantom-captions.txt') }], vocabSize: 400, output: join(work, 'phantom-tok.json'), agreementSamples: 20 });
  const tok = await loadTokenizer(join(work, 'phantom-tok.json'));
  await prepareShards({ source: 'manifest', input: join(trainDir, 'manifest.jsonl'), output: join(work, 'phantom-shards'), imageSize: px, tokenizer: tok });
  const width = s['phantom-hidden'] > 0 ? { hiddenSize: s['phantom-hidden'], numHeads: Math.max(1, Math.round(s['phantom-hidden'] / 16)) } : {};
  const overrides = { imageSize: px, maxTextLength: 32, vocabSize: Math.max(tok.vocabSize, 8), padTokenId: tok.special.pad, ...width };
  const config = presetConfig(s['phantom-preset'], overrides);
  {
    const before = createModel(config, { seed: s.seed });
    const untrained = await evaluatePhantom(before, tok, evalLines, evalDir, s.seed);
    before.dispose();
    const run = await pretrainInProcess({
      preset: s['phantom-preset'],
      overrides,
      shards: join(work, 'phantom-shards'),
      tokenizer: tok.path,
      output: join(work, 'phantom-pretrain'),
      steps: s['phantom-steps'],
      batch: s['phantom-batch'],
      micro: s.micro,
      learningRate: s['phantom-lr'],
      seed: s.seed,
      threads: s.threads,
      log,
    });
    const ev = await evaluatePhantom(run.model, tok, evalLines, evalDir, s.seed);
    run.model.dispose();
    const rows: BenchRow[] = [];
    let t = 0;
    let tc = 0;
    let mc = 0;
    let untrainedTrue = 0;
    for (const [attr, r] of Object.entries(ev.byAttribute)) {
      rows.push({
        part: 'a phantom',
        measure: `MLM acc. on ${attr} words (tokens)`,
        value: r.tokens ? (100 * r.trueCorrect) / r.tokens : NaN,
        baseline: r.tokens ? (100 * r.mismatchedCorrect) / r.tokens : NaN,
        'baseline is': 'mismatched image',
        n: r.tokens,
      });
      t += r.tokens;
      tc += r.trueCorrect;
      mc += r.mismatchedCorrect;
      untrainedTrue += untrained.byAttribute[attr]?.trueCorrect ?? 0;
    }
    rows.push({ part: 'a phantom', measure: 'MLM acc. on all image words (tokens)', value: (100 * tc) / t, baseline: (100 * mc) / t, 'baseline is': 'mismatched image', n: t });
    rows.push({ part: 'a phantom', measure: 'MIM loss, masked patches (held out)', value: ev.mimLoss, baseline: ev.mimBaseline, 'baseline is': 'predict patch mean', n: ev.maskedPatches });
    rows.push({ part: 'a phantom', measure: 'MIM loss before pre-training', value: untrained.mimLoss, baseline: ev.mimBaseline, 'baseline is': 'predict patch mean', n: untrained.maskedPatches });
    const figures = {
      phantom_mlm_image_words_true_pct: (100 * tc) / t,
      phantom_mlm_image_words_mismatched_pct: (100 * mc) / t,
      phantom_mlm_gap_points: (100 * (tc - mc)) / t,
      phantom_mlm_untrained_true_pct: (100 * untrainedTrue) / t,
      phantom_mim_loss: ev.mimLoss,
      phantom_mim_baseline_patch_mean: ev.mimBaseline,
      phantom_mim_vs_baseline: ev.mimLoss / ev.mimBaseline,
      phantom_pretrain_seconds: Math.round(run.seconds),
      phantom_pretrain_samples: run.samples,
    };
    const notes = [
      `(a) ${s['phantom-preset']}${s['phantom-hidden'] > 0 ? ` (width ${s['phantom-hidden']})` : ''} at ${px} px, ${s['phantom-steps']} steps × ${s['phantom-batch']} (${run.samples} samples, ${run.seconds.toFixed(0)} s); last-10% training losses: MLM ${run.last.mlm.toFixed(3)}, MIM ${run.last.mim.toFixed(3)}, ITM ${run.last.itm.toFixed(3)} (acc ${(100 * run.last.itmAccuracy).toFixed(1)}%).`,
    ];
    return { rows, figures, notes };
  }
}

function vqaRow(measure: string, m: VqaMetrics, baseline: number | undefined, baselineIs: string, part = 'b VQA-RAD'): BenchRow {
  return {
    part,
    measure,
    value: 100 * m.overall.accuracy,
    baseline: baseline === undefined ? NaN : 100 * baseline,
    'baseline is': baselineIs,
    n: m.overall.total,
    'open %': 100 * m.open.accuracy,
    'closed %': 100 * m.closed.accuracy,
  };
}

type PartResult = { rows: BenchRow[]; figures: Record<string, number | string | boolean>; notes: string[] };

/**
 * The real pre-training corpus: a BPE vocabulary on the MedPix, ROCO and IU X-ray text (trained once per work folder)
 * and MedPix 2.0 shards of one split at `px`.
 */
async function medpixShards(s: Sizes, work: string, data: string, log: Log, split: 'train' | 'dev', px: number): Promise<{ shards: string; tokPath: string; tok: Awaited<ReturnType<typeof loadTokenizer>>; pairs: number }> {
  const medpix = join(data, 'medpix2');
  const tokPath = join(work, 'tokenizer.json');
  if (!existsSync(tokPath)) {
    log(`tokenizer: BPE ${s.vocab} on MedPix, ROCO and IU X-ray text`);
    await trainTokenizer({
      sources: [{ kind: 'medpix', path: medpix }, { kind: 'roco', path: join(data, 'roco') }, { kind: 'iu-xray', path: join(data, 'iu_xray_reports', 'annotation.json') }],
      vocabSize: s.vocab,
      output: tokPath,
      agreementSamples: 50,
    });
  }
  const tok = await loadTokenizer(tokPath);
  const shards = join(work, `medpix-${split}-${px}px`);
  return { shards, tokPath, tok, pairs: await preparedMedPix(data, split, px, tok, shards) };
}

/** MedPix 2.0 shards of one split at `px`, tokenized with `tok`, in `shards` (prepared once per folder); their pair count. */
async function preparedMedPix(data: string, split: 'train' | 'dev', px: number, tok: Awaited<ReturnType<typeof loadTokenizer>>, shards: string): Promise<number> {
  if (!existsSync(join(shards, 'dataset.json'))) await prepareShards({ source: 'medpix', input: join(data, 'medpix2'), split, output: shards, imageSize: px, tokenizer: tok });
  return openShardDataset(shards).then(async (d) => (await d.close(), d.size));
}

/** (b) step 1: a BPE vocabulary on the real text, MedPix shards, and `small` pre-trained on them. */
type MedPixShards = Awaited<ReturnType<typeof medpixShards>>;

async function pretrainOnMedPix(
  s: Sizes,
  medpix: MedPixShards,
  steps: number,
  output: string,
  log: Log,
  backend: string | undefined,
): Promise<{ run: PretrainRun; vocabSize: number; pairs: number }> {
  const { shards, tokPath, tok, pairs } = medpix;
  const overrides = { imageSize: s['pretrain-px'], maxTextLength: s['pretrain-text'], vocabSize: Math.max(tok.vocabSize, presetConfig('small').vocabSize), padTokenId: tok.special.pad };
  log(`pre-training small (${s['pretrain-px']} px, text ${s['pretrain-text']}) on ${pairs} MedPix pairs: ${steps} steps × ${s['pretrain-batch']}`);
  const run = await pretrainInProcess({
    preset: 'small',
    overrides,
    shards,
    tokenizer: tokPath,
    output,
    steps,
    batch: s['pretrain-batch'],
    micro: s.micro,
    learningRate: s['pretrain-lr'],
    seed: s.seed,
    threads: s.threads,
    backend,
    log,
  });
  run.model.dispose();
  return { run, vocabSize: tok.vocabSize, pairs };
}

/** Steps of each timing run of a (b) budget. */
const BUDGET_TIMING_STEPS = 3;

/** The VQA-RAD carve of (b) and (s): validation (selection) and held-out (reported) splits, by image. */
const BENCH_CARVE: CarveSpec = { seed: 0, valFraction: 0.1, testFraction: 0.15 };

/** A fine-tuned model's selection and its held-out figures (the held-out split read once, after selection). */
interface Tuned {
  ft: FinetuneResult;
  holdout: VqaMetrics;
}

type Variant = 'pretrained' | 'random' | 'question-only';

/**
 * Fine-tunes VQA-RAD once per variant with the same settings — `pretrained` (from `checkpoint`), `random` (the same
 * backbone from random initialisation), `question-only` (random initialisation, `inputs: text`: every image blank) —
 * each selected on validation, its held-out split read once.
 */
async function fineTuneVariants(
  variants: readonly Variant[],
  s: Sizes,
  vqaRad: string,
  own: Omit<FinetuneOptions, 'output' | 'init' | 'inputs' | 'log' | 'task' | 'data'>,
  work: string,
  log: Log,
  backend: string | undefined,
): Promise<Partial<Record<Variant, Tuned>>> {
  // What every fine-tuning of the bench shares: the carve, clipping, VQA loss, seed, training limit and threads.
  const common = {
    task: 'vqa-rad' as const,
    data: vqaRad,
    carve: BENCH_CARVE,
    clipNorm: s['ft-clip'],
    vqaLoss: vqaLossSize(s),
    seed: s.seed,
    ...(s['ft-train-limit'] > 0 ? { trainLimit: s['ft-train-limit'] } : {}),
    ...(s['ft-val-limit'] > 0 ? { valLimit: s['ft-val-limit'] } : {}),
    threads: s.threads,
    ...own,
  };
  const results: Partial<Record<Variant, Tuned>> = {};
  // One after the other, each data parallel over the threads (the same results as side by side).
  for (const v of variants) {
    const ft = await runFinetune({
      ...common,
      output: join(work, `ft-${v}`),
      init: v === 'pretrained' ? 'pretrained' : 'random',
      ...(v === 'question-only' ? { inputs: 'text' as const } : {}),
      backend,
      log: (l) => log(`[${v}] ${l}`),
    });
    const { metrics } = await runEval({ task: 'vqa-rad', data: common.data, split: 'holdout', batchSize: 32, checkpoint: ft.output, ...(backend ? { backend } : {}) });
    if (metrics.kind !== 'vqa') throw new Error('expected VQA metrics');
    results[v] = { ft, holdout: metrics.vqa };
    log(`[${v}] held-out overall ${(100 * metrics.vqa.overall.accuracy).toFixed(2)}% (selected step ${ft.bestStep}, val ${(100 * ft.bestScore).toFixed(2)}%)`);
  }
  return results;
}

function tuned(r: Partial<Record<Variant, Tuned>>, v: Variant): Tuned {
  const t = r[v];
  if (!t) throw new Error(`bench learning: no ${v} fine-tuning result`);
  return t;
}

/** (b) the text-free baselines on the held-out split: the question-only answer prior and the majority answer. */
async function answerBaselines(s: Sizes, vqaRad: string, carve: CarveSpec): Promise<{ prior: VqaMetrics; majority: VqaMetrics; majorityAnswer: string }> {
  const skipLog = new SkipLog();
  const train = await readVqaTaskSplit('vqa-rad', vqaRad, 'train', { skipLog, carve });
  const holdout = await readVqaTaskSplit('vqa-rad', vqaRad, 'holdout', { skipLog, carve });
  const prior = new QuestionPriorBaseline(s['ft-train-limit'] > 0 ? train.slice(0, s['ft-train-limit']) : train);
  const vocab = LabelVocabulary.inOrderOfAppearance(train.map((e) => e.answer));
  const labels = holdout.map((e) => vocab.labelOf(e.answer));
  const types = holdout.map((e) => e.answerType);
  return {
    prior: vqaMetrics(holdout.map((e) => vocab.labelOf(prior.predict(e.question))), labels, types),
    majority: vqaMetrics(holdout.map(() => vocab.labelOf(prior.majorityAnswer)), labels, types),
    majorityAnswer: prior.majorityAnswer,
  };
}

function vqaFigures(prefix: string, m: VqaMetrics): Record<string, number> {
  return { [`${prefix}_pct`]: 100 * m.overall.accuracy, [`${prefix}_open_pct`]: 100 * m.open.accuracy, [`${prefix}_closed_pct`]: 100 * m.closed.accuracy };
}

function selectedAt(t: Tuned): string {
  return `step ${t.ft.bestStep} (val ${(100 * t.ft.bestScore).toFixed(1)}%)`;
}

async function realPart(s: Sizes, work: string, log: Log, backend: string | undefined): Promise<PartResult> {
  const data = sharedDataDir(workspaceRoot);
  if (!data) throw new Error('bench learning (b) needs the real MedPix and VQA-RAD data: set M3AE_SHARED_DATA or provide ../shared/data (or --size parts=a)');
  const vqaRad = join(data, 'vqa_rad');
  const t0 = performance.now();
  const medpix = await medpixShards(s, work, data, log, 'train', s['pretrain-px']);
  const ftSettings = { tokenizer: medpix.tokPath, imageSize: s['ft-px'], epochs: s['ft-epochs'], globalBatch: s['ft-batch'], microBatch: s['ft-micro'], learningRate: s['ft-lr'] };
  // A budget: time a few steps of pre-training and of fine-tuning (from random initialisation: the same cost), then
  // size both to fit.
  let pretrainSteps = s['pretrain-steps'];
  let budgeted: { finetuneSteps: number; timing: BudgetTiming } | undefined;
  if (s['budget-s'] > 0) {
    const timing = await pretrainOnMedPix(s, medpix, BUDGET_TIMING_STEPS, join(work, 'timing-pretrain'), log, backend);
    // The fine-tuning's timing run validates (the validation split, or its first ft-val-limit questions) after every step: the time between two
    // step reports, less the later step, is one validation.
    const steps: { at: number; ms: number }[] = [];
    const ft = await runFinetune({
      task: 'vqa-rad',
      data: vqaRad,
      carve: BENCH_CARVE,
      ...ftSettings,
      // Enough epochs for the steps even where one epoch is one step.
      epochs: BUDGET_TIMING_STEPS,
      steps: BUDGET_TIMING_STEPS,
      evalEvery: 1,
      ...(s['ft-train-limit'] > 0 ? { trainLimit: s['ft-train-limit'] } : {}),
      ...(s['ft-val-limit'] > 0 ? { valLimit: s['ft-val-limit'] } : {}),
      init: 'random',
      preset: 'small',
      augment: false,
      resume: false,
      seed: s.seed,
      threads: s.threads,
      output: join(work, 'timing-finetune'),
      log: (l) => log(`[timing] ${l}`),
      vqaLoss: vqaLossSize(s),
      onStep: (r) => steps.push({ at: performance.now(), ms: r.durationMs }),
      ...(backend ? { backend } : {}),
    });
    if (steps.length < 2) throw new Error(`bench learning: the fine-tuning's timing run made ${steps.length} step(s); expected ${BUDGET_TIMING_STEPS}`);
    const finetuneStepS = mean(steps.slice(1).map((x) => x.ms)) / 1000;
    const validationS = Math.max(0, mean(steps.slice(1).map((x, i) => x.at - (steps[i] as { at: number }).at - x.ms)) / 1000);
    const t: BudgetTiming = {
      spentS: (performance.now() - t0) / 1000,
      pretrainStepS: timing.run.stepSeconds,
      finetuneStepS,
      validationS,
      finetuneSetupS: Math.max(0, ft.seconds - steps.reduce((a, x) => a + x.ms, 0) / 1000 - steps.length * validationS),
      holdoutPerValidation: (await readVqaTaskSplit('vqa-rad', vqaRad, 'holdout', { skipLog: new SkipLog(), carve: BENCH_CARVE })).length / Math.max(1, ft.valExamples),
    };
    const plan = planBudget(s['budget-s'], t, { pretrainSteps: s['pretrain-steps'], finetuneSteps: Number.MAX_SAFE_INTEGER });
    pretrainSteps = plan.pretrainSteps;
    budgeted = { finetuneSteps: plan.finetuneSteps, timing: t };
    log(
      `budget ${s['budget-s']} s: ${t.spentS.toFixed(0)} s of data and timing runs; pre-training ${t.pretrainStepS.toFixed(2)} s a step; fine-tuning ${t.finetuneStepS.toFixed(2)} s a step, ${t.validationS.toFixed(1)} s a validation, ${t.finetuneSetupS.toFixed(0)} s of set-up: pre-training ${pretrainSteps} steps, each fine-tuning ${plan.finetuneSteps} steps`,
    );
  }
  const { run, vocabSize, pairs } = await pretrainOnMedPix(s, medpix, pretrainSteps, join(work, 'pretrain'), log, backend);
  const results = await fineTuneVariants(
    ['pretrained', 'random', 'question-only'],
    s,
    vqaRad,
    { checkpoint: run.checkpoint, ...ftSettings, ...(budgeted ? { steps: budgeted.finetuneSteps, evalEvery: Math.max(1, Math.ceil(budgeted.finetuneSteps / (BUDGET_VALIDATIONS - 1))) } : {}) },
    work,
    log,
    backend,
  );
  const usedS = (performance.now() - t0) / 1000;
  const base = await answerBaselines(s, vqaRad, BENCH_CARVE);
  const [p, r, q] = [tuned(results, 'pretrained'), tuned(results, 'random'), tuned(results, 'question-only')];
  const rows: BenchRow[] = [
    vqaRow('held-out acc.: pre-trained small + fine-tuning', p.holdout, r.holdout.overall.accuracy, 'random init + same fine-tuning'),
    vqaRow('held-out acc.: random init + fine-tuning', r.holdout, q.holdout.overall.accuracy, 'trained question-only model'),
    vqaRow('held-out acc.: trained question-only model (same fine-tuning, blank images)', q.holdout, base.prior.overall.accuracy, 'question-only answer table'),
    vqaRow('held-out acc.: question-only answer table', base.prior, base.majority.overall.accuracy, `majority answer "${base.majorityAnswer}"`),
  ];
  const figures = {
    vqa_rad_holdout_questions: p.holdout.overall.total,
    ...vqaFigures('vqa_rad_overall_pretrained', p.holdout),
    ...vqaFigures('vqa_rad_overall_random_init', r.holdout),
    ...vqaFigures('vqa_rad_overall_question_only_model', q.holdout),
    vqa_rad_overall_question_prior_pct: 100 * base.prior.overall.accuracy,
    vqa_rad_overall_majority_pct: 100 * base.majority.overall.accuracy,
    pretrained_beats_random_init: p.holdout.overall.accuracy > r.holdout.overall.accuracy,
    random_init_minus_question_only_points: 100 * (r.holdout.overall.accuracy - q.holdout.overall.accuracy),
    medpix_pretrain_samples: run.samples,
    medpix_pretrain_seconds: Math.round(run.seconds),
    finetune_seconds_pretrained: Math.round(p.ft.seconds),
    finetune_seconds_random: Math.round(r.ft.seconds),
    finetune_seconds_question_only: Math.round(q.ft.seconds),
    finetune_steps: p.ft.steps,
    budget_s: s['budget-s'],
    used_s: Math.round(usedS),
    ...(budgeted
      ? { budget_timing_s: Math.round(budgeted.timing.spentS), pretrain_step_s: budgeted.timing.pretrainStepS, finetune_step_s: budgeted.timing.finetuneStepS, validation_s: budgeted.timing.validationS }
      : {}),
  };
  const notes = [
    `(b) small at ${s['pretrain-px']} px, text ${s['pretrain-text']}, vocabulary ${vocabSize}: ${run.samples / s['pretrain-batch']} steps × ${s['pretrain-batch']} = ${run.samples} MedPix samples (${(run.samples / pairs).toFixed(1)} epochs, ${run.seconds.toFixed(0)} s); last-10% losses MLM ${run.last.mlm.toFixed(3)}, MIM ${run.last.mim.toFixed(3)}, ITM ${run.last.itm.toFixed(3)} (acc ${(100 * run.last.itmAccuracy).toFixed(1)}%).`,
    `(b) fine-tuning (all three identical but for init and inputs): ${finetuneSummary(p.ft)}; selected on validation at ${selectedAt(p)} (pre-trained), ${selectedAt(r)} (random), ${selectedAt(q)} (question-only); the held-out split (${p.holdout.overall.total} questions, disjoint images) read once per model.`,
    `(b) held-out answers not in the training vocabulary: ${p.holdout.unseenAnswers} (counted wrong for every row).`,
    s['budget-s'] > 0
      ? `(b) time: ${usedS.toFixed(0)} s of a ${s['budget-s']} s budget (data and timing runs ${budgeted?.timing.spentS.toFixed(0)} s; pre-training ${run.seconds.toFixed(0)} s; fine-tuning with its held-out evaluation ${p.ft.seconds.toFixed(0)} / ${r.ft.seconds.toFixed(0)} / ${q.ft.seconds.toFixed(0)} s, ${p.ft.steps} steps each)`
      : `(b) time: ${usedS.toFixed(0)} s (no budget: the fixed step and epoch counts)`,
  ];
  return { rows, figures, notes };
}

function vqaLossSize(s: Sizes): VqaLoss {
  const l = s['ft-vqa-loss'];
  if (!(VQA_LOSSES as readonly string[]).includes(l)) throw new Error(`--size ft-vqa-loss=${l}: expected one of ${VQA_LOSSES.join(', ')}`);
  return l as VqaLoss;
}

function finetuneSummary(ft: FinetuneResult): string {
  const st = ft.settings;
  return `${st.epochs} epochs × ${st.stepsPerEpoch} steps of ${st.globalBatch}, ${st.imageSize} px, lr ${st.learningRate} (head ×${st.lrMultiplierHead}, fusion ×${st.lrMultiplierMultiModal}, warm-up ${st.warmupFraction}), clipping ${st.clipNorm || 'none'}, VQA loss ${ft.meta.head.loss ?? 'bce-sum'}, ${ft.trainExamples} training / ${ft.valExamples} validation questions`;
}

/**
 * (s) From scratch: a BPE vocabulary trained on the carved training questions only, then the preset fine-tuned on
 * VQA-RAD from random initialisation with images and question-only (every image blank), same settings and seed,
 * each selected on validation, the held-out split read once per model; against the answer table and the majority.
 */
function headBiasSize(s: Sizes): HeadBias {
  const b = s['scratch-head-bias'];
  if (!(HEAD_BIASES as readonly string[]).includes(b)) throw new Error(`--size scratch-head-bias=${b}: expected one of ${HEAD_BIASES.join(', ')}`);
  return b as HeadBias;
}

/** The carve of (s): BENCH_CARVE grouped as `scratch-carve` says (`image`: BENCH_CARVE itself). */
export function scratchCarve(s: Pick<Sizes, 'scratch-carve'>): CarveSpec {
  const by = s['scratch-carve'];
  if (!(CARVE_GROUP_BY as readonly string[]).includes(by)) throw new Error(`--size scratch-carve=${by}: expected one of ${CARVE_GROUP_BY.join(', ')}`);
  return by === 'image' ? BENCH_CARVE : { ...BENCH_CARVE, groupBy: by as CarveSpec['groupBy'] };
}

async function scratchPart(s: Sizes, work: string, log: Log, backend: string | undefined): Promise<PartResult> {
  const data = sharedDataDir(workspaceRoot);
  if (!data) throw new Error('bench learning (s) needs the real VQA-RAD data: set M3AE_SHARED_DATA or provide ../shared/data');
  const vqaRad = join(data, 'vqa_rad');
  const carve = scratchCarve(s);
  const train = await readVqaTaskSplit('vqa-rad', vqaRad, 'train', { skipLog: new SkipLog(), carve });
  const questions = join(work, 'scratch-questions.txt');
  await writeFile(questions, train.map((e) => e.question).join('\n') + '\n');
  const tokPath = join(work, 'scratch-tokenizer.json');
  await trainTokenizer({ sources: [{ kind: 'text', path: questions }], vocabSize: s['scratch-vocab'], output: tokPath, agreementSamples: 5 });
  const preset = s['scratch-preset'];
  if (presetConfig(preset).vocabSize < s['scratch-vocab']) throw new Error(`--size scratch-vocab=${s['scratch-vocab']}: expected at most the ${preset} preset's vocabulary (${presetConfig(preset).vocabSize})`);
  const pretrain = s['scratch-pretrain-steps'] > 0 ? await scratchPretrain(s, data, tokPath, work, log, backend) : undefined;
  log(`(s) ${preset} from random initialisation at ${s['scratch-px']} px on ${train.length} VQA-RAD training questions: with images, and question-only${pretrain ? ', and from the MedPix pre-training' : ''}`);
  const results = await fineTuneVariants(
    pretrain ? ['pretrained', 'random', 'question-only'] : ['random', 'question-only'],
    s,
    vqaRad,
    {
      preset,
      tokenizer: tokPath,
      imageSize: s['scratch-px'],
      epochs: s['scratch-epochs'],
      globalBatch: s['scratch-batch'],
      microBatch: s['scratch-batch'],
      learningRate: s['scratch-lr'],
      lrMultiplierHead: 1,
      lrMultiplierMultiModal: 1,
      headBias: headBiasSize(s),
      carve,
      ...(pretrain ? { checkpoint: pretrain.run.checkpoint } : {}),
    },
    work,
    log,
    backend,
  );
  const base = await answerBaselines(s, vqaRad, carve);
  const [r, q] = [tuned(results, 'random'), tuned(results, 'question-only')];
  const p = pretrain ? tuned(results, 'pretrained') : undefined;
  const rows: BenchRow[] = [
    ...(p ? [vqaRow(`held-out acc.: ${preset} pre-trained on MedPix, fine-tuned`, p.holdout, r.holdout.overall.accuracy, 'random init + same fine-tuning', 's VQA-RAD scratch')] : []),
    vqaRow(`held-out acc.: ${preset} from random init, fine-tuned`, r.holdout, q.holdout.overall.accuracy, 'trained question-only model', 's VQA-RAD scratch'),
    vqaRow(`held-out acc.: ${preset} trained question-only (blank images)`, q.holdout, base.prior.overall.accuracy, 'question-only answer table', 's VQA-RAD scratch'),
    vqaRow('held-out acc.: question-only answer table', base.prior, base.majority.overall.accuracy, `majority answer "${base.majorityAnswer}"`, 's VQA-RAD scratch'),
  ];
  const figures = {
    scratch_carve: s['scratch-carve'],
    scratch_holdout_questions: r.holdout.overall.total,
    ...vqaFigures('scratch_random_init', r.holdout),
    ...vqaFigures('scratch_question_only_model', q.holdout),
    scratch_question_prior_pct: 100 * base.prior.overall.accuracy,
    scratch_majority_pct: 100 * base.majority.overall.accuracy,
    scratch_random_init_minus_question_only_points: 100 * (r.holdout.overall.accuracy - q.holdout.overall.accuracy),
    scratch_finetune_seconds_random: Math.round(r.ft.seconds),
    scratch_finetune_seconds_question_only: Math.round(q.ft.seconds),
    ...(p && pretrain
      ? {
          ...vqaFigures('scratch_pretrained', p.holdout),
          scratch_pretrained_minus_random_init_points: 100 * (p.holdout.overall.accuracy - r.holdout.overall.accuracy),
          scratch_finetune_seconds_pretrained: Math.round(p.ft.seconds),
          scratch_pretrain_samples: pretrain.run.samples,
          scratch_pretrain_seconds: Math.round(pretrain.run.seconds),
        }
      : {}),
  };
  const notes = [
    ...(p && pretrain
      ? [
          `(s) pre-training: ${preset} at ${s['scratch-px']} px with the part's vocabulary, ${s['scratch-pretrain-steps']} steps × ${s['scratch-pretrain-batch']} = ${pretrain.run.samples} MedPix train samples (${(pretrain.run.samples / pretrain.pairs).toFixed(1)} epochs of ${pretrain.pairs} pairs, ${pretrain.run.seconds.toFixed(0)} s), lr ${s['scratch-pretrain-lr']}; last-10% losses MLM ${pretrain.run.last.mlm.toFixed(3)}, MIM ${pretrain.run.last.mim.toFixed(3)}, ITM ${pretrain.run.last.itm.toFixed(3)} (acc ${(100 * pretrain.run.last.itmAccuracy).toFixed(1)}%); fine-tuned as the others, selected on validation at ${selectedAt(p)}.`,
        ]
      : []),
    `(s) ${preset}, a ${s['scratch-vocab']}-token BPE vocabulary trained on the ${train.length} carved training questions: ${finetuneSummary(r.ft)}, head bias ${r.ft.settings.headBias}; selected on validation at ${selectedAt(r)} (with images) and ${selectedAt(q)} (question-only); the held-out split (${r.holdout.overall.total} questions, ${carve.groupBy === 'question' ? 'carved by question: its images also occur in training, exact duplicates never on both sides' : 'disjoint images'}) read once per model.`,
  ];
  return { rows, figures, notes };
}

/**
 * (s) pre-training: the part's preset at its image side, with the part's vocabulary (trained on the carved VQA-RAD
 * training questions), on the MedPix 2.0 train pairs tokenized with it. The configuration is the preset's but for the
 * image side, so the fine-tunings from random initialisation are the same models with or without it.
 */
async function scratchPretrain(s: Sizes, data: string, tokPath: string, work: string, log: Log, backend: string | undefined): Promise<{ run: PretrainRun; pairs: number }> {
  const px = s['scratch-px'];
  const shards = join(work, `scratch-medpix-train-${px}px`);
  const pairs = await preparedMedPix(data, 'train', px, await loadTokenizer(tokPath), shards);
  const preset = s['scratch-preset'];
  log(`(s) pre-training ${preset} (${px} px) on ${pairs} MedPix train pairs: ${s['scratch-pretrain-steps']} steps × ${s['scratch-pretrain-batch']}`);
  const run = await pretrainInProcess({
    preset,
    overrides: { imageSize: px },
    shards,
    tokenizer: tokPath,
    output: join(work, 'scratch-pretrain'),
    steps: s['scratch-pretrain-steps'],
    batch: s['scratch-pretrain-batch'],
    micro: s['scratch-pretrain-batch'],
    learningRate: s['scratch-pretrain-lr'],
    seed: s.seed,
    threads: s.threads,
    backend,
    log,
  });
  run.model.dispose();
  return { run, pairs };
}

/** One direction's R@1/5/10 as a row (percentages), against a baseline's R@10. */
function recallRows(name: string, r: ZeroShotRetrieval, baseline: ZeroShotRetrieval | undefined, baselineIs: string): BenchRow[] {
  return (['i2t', 't2i'] as const).map((d) => ({
    part: 'r MedPix retrieval',
    measure: `${name}, ${d === 'i2t' ? 'image→text' : 'text→image'} R@10 (R@1 / R@5)`,
    value: 100 * r.metrics[d].r10,
    baseline: baseline ? 100 * baseline.metrics[d].r10 : 100 * r.chance[d].r10,
    'baseline is': baselineIs,
    n: d === 'i2t' ? r.metrics.images : r.metrics.texts,
    'R@1 %': 100 * r.metrics[d].r1,
    'R@5 %': 100 * r.metrics[d].r5,
  }));
}

/**
 * (r) Pre-training on the MedPix train pairs with the held-out evaluation on MedPix dev (disjoint cases), then zero-shot
 * retrieval (ITM ranking) on the dev pairs: the pre-trained model against the same model at its random initialisation.
 */
async function retrievalPart(s: Sizes, work: string, log: Log, backend: string | undefined): Promise<PartResult> {
  const data = sharedDataDir(workspaceRoot);
  if (!data) throw new Error('bench learning (r) needs the real MedPix data: set M3AE_SHARED_DATA or provide ../shared/data');
  const px = s['r-px'];
  const train = await medpixShards(s, work, data, log, 'train', px);
  const dev = await medpixShards(s, work, data, log, 'dev', px);
  const preset = s['r-preset'];
  const width = s['r-hidden'] > 0 ? { hiddenSize: s['r-hidden'], numHeads: Math.max(1, Math.round(s['r-hidden'] / 16)) } : {};
  const overrides = { imageSize: px, maxTextLength: s['r-text'], vocabSize: Math.max(train.tok.vocabSize, presetConfig(preset).vocabSize), padTokenId: train.tok.special.pad, ...width };
  const config = presetConfig(preset, overrides);
  log(`(r) ${preset}${s['r-hidden'] > 0 ? ` (width ${s['r-hidden']})` : ''} at ${px} px on ${train.pairs} MedPix train pairs, ${s['r-steps']} steps × ${s['r-batch']}; held-out: ${dev.pairs} MedPix dev pairs every ${s['r-eval-every']} steps`);
  const devData = await openShardDataset(dev.shards);
  try {
    // The run's step 0: the same seeded initial values the trainer starts from.
    const initial = createModel(config, { seed: s.seed });
    const initialParams = await flattenParams(initial);
    const untrained = await heldOutEvaluation(initial, { dataset: devData, tokenizer: train.tok, seed: s.seed, samples: s['r-eval-samples'] });
    initial.dispose();
    const run = await pretrainInProcess({
      preset,
      overrides,
      shards: train.shards,
      tokenizer: train.tokPath,
      output: join(work, 'pretrain-r'),
      steps: s['r-steps'],
      batch: s['r-batch'],
      micro: s.micro,
      learningRate: s['r-lr'],
      seed: s.seed,
      threads: s.threads,
      backend,
      evaluation: { every: s['r-eval-every'], data: dev.shards, samples: s['r-eval-samples'] },
      log,
    });
    const pretrainedParams = await flattenParams(run.model);
    run.model.dispose();
    const retrieval = async (params: Float32Array): Promise<ZeroShotRetrieval> => {
      const m = zeroShotRetrievalModel(config, params);
      try {
        return await zeroShotRetrieval(m, { dataset: devData, tokenizer: train.tok, pairs: s['r-pairs'] });
      } finally {
        m.dispose();
      }
    };
    const pre = await retrieval(pretrainedParams);
    const rand = await retrieval(initialParams);
    const last = run.evaluations.at(-1);
    if (!last) throw new Error('bench learning (r): the run made no held-out evaluation');
    const h = last.baseline.unigramEntropy;
    const u = last.baseline.unigramHeldOut;
    const rows: BenchRow[] = [
      { part: 'r MedPix held-out', measure: `ITM accuracy after step ${last.step} (%)`, value: 100 * last.accuracy.itm, baseline: 100 * last.baseline.itmChance, 'baseline is': 'chance', n: last.counts.itm },
      { part: 'r MedPix held-out', measure: `MLM loss after step ${last.step} (nats)`, value: last.loss.mlm, baseline: u, 'baseline is': 'unigram model, same tokens', n: last.counts.mlm },
      { part: 'r MedPix held-out', measure: `MLM accuracy after step ${last.step} (%)`, value: 100 * last.accuracy.mlm, baseline: 100 * untrained.accuracy.mlm, 'baseline is': 'untrained model', n: last.counts.mlm },
      { part: 'r MedPix held-out', measure: `MIM loss after step ${last.step}`, value: last.loss.mim, baseline: untrained.loss.mim, 'baseline is': 'untrained model', n: last.counts.mim },
      ...recallRows('pre-trained', pre, rand, 'random init (step 0)'),
      ...recallRows('random init (step 0)', rand, undefined, 'chance'),
    ];
    const figures = {
      r_heldout_pairs: last.pairs,
      r_heldout_itm_accuracy_pct: 100 * last.accuracy.itm,
      r_heldout_mlm_loss: last.loss.mlm,
      r_unigram_model_heldout_loss: u,
      r_unigram_entropy_train: h,
      r_heldout_mlm_accuracy_pct: 100 * last.accuracy.mlm,
      r_heldout_mim_loss: last.loss.mim,
      r_untrained_mim_loss: untrained.loss.mim,
      r_retrieval_pairs: pre.pairs,
      r_retrieval_captions: pre.texts,
      r_pretrained_i2t_r10_pct: 100 * pre.metrics.i2t.r10,
      r_random_i2t_r10_pct: 100 * rand.metrics.i2t.r10,
      r_pretrained_t2i_r10_pct: 100 * pre.metrics.t2i.r10,
      r_random_t2i_r10_pct: 100 * rand.metrics.t2i.r10,
      r_chance_i2t_r10_pct: 100 * pre.chance.i2t.r10,
      r_chance_t2i_r10_pct: 100 * pre.chance.t2i.r10,
      r_pretrain_seconds: Math.round(run.seconds),
    };
    const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
    const notes = [
      `(r) ${preset}${s['r-hidden'] > 0 ? ` (width ${s['r-hidden']})` : ''} at ${px} px, text ${s['r-text']}: ${s['r-steps']} steps × ${s['r-batch']} = ${run.samples} MedPix train samples (${run.seconds.toFixed(0)} s), lr ${s['r-lr']}; last-10% training losses MLM ${run.last.mlm.toFixed(3)}, MIM ${run.last.mim.toFixed(3)}, ITM ${run.last.itm.toFixed(3)} (acc ${pct(run.last.itmAccuracy)}).`,
      `(r) held-out (MedPix dev, ${last.pairs} pairs, masks fixed at seed ${s.seed}): untrained MLM loss ${untrained.loss.mlm.toFixed(3)}, acc ${pct(untrained.accuracy.mlm)}, ITM acc ${pct(untrained.accuracy.itm)}, MIM ${untrained.loss.mim.toFixed(3)}; then ${run.evaluations.map((e) => formatEvaluation(e).replace(/^held-out evaluation /, '')).join(' | ')}`,
      `(r) zero-shot retrieval on ${pre.pairs} MedPix dev images and their ${pre.texts} distinct captions: pre-trained vs random init R@10 image→text ${pct(pre.metrics.i2t.r10)} vs ${pct(rand.metrics.i2t.r10)}, text→image ${pct(pre.metrics.t2i.r10)} vs ${pct(rand.metrics.t2i.r10)} (chance ${pct(pre.chance.i2t.r10)} / ${pct(pre.chance.t2i.r10)}).`,
    ];
    return { rows, figures, notes };
  } finally {
    await devData.close();
  }
}

registerBenchArea('learning', {
  description: 'does pre-training learn (phantom MLM gap, MIM vs patch mean) and help (VQA-RAD after MedPix pre-training vs random init and a question prior)?',
  async run(options: BenchOptions) {
    const choice = await chooseBackend({ backend: options.backend ?? 'auto' });
    const sizes = parseSizes(options.extra['size'], options.quick, choice.name === 'webgpu');
    const parts = sizes.parts.split(',').map((x) => x.trim());
    const log: Log = (line) => process.stderr.write(`[bench learning] ${line}\n`);
    const keep = sizes.out !== '';
    const work = keep ? resolve(sizes.out) : await mkdtemp(join(tmpdir(), 'm3ae-bench-learning-'));
    if (keep) await mkdir(work, { recursive: true });
    const rows: BenchRow[] = [];
    const figures: Record<string, number | string | boolean> = {};
    const notes: string[] = [`sizes: ${JSON.stringify(sizes)}`];
    try {
      for (const [name, part] of [
        ['a', () => phantomPart(sizes, work, log)],
        ['b', () => realPart(sizes, work, log, options.backend)],
        ['s', () => scratchPart(sizes, work, log, options.backend)],
        ['r', () => retrievalPart(sizes, work, log, options.backend)],
      ] as const) {
        if (!parts.includes(name)) continue;
        const t0 = performance.now();
        const r = await part();
        rows.push(...r.rows);
        Object.assign(figures, r.figures, { [`part_${name}_seconds`]: Math.round((performance.now() - t0) / 1000) });
        notes.push(...r.notes);
      }
      if (keep) notes.push(`kept in ${work} for m3ae eval: pre-training checkpoints under pretrain/ (part s: scratch-pretrain/), fine-tuned models under ft-<variant>/best (and the timing runs' under timing-*)`);
    } finally {
      if (!keep) await rm(work, { recursive: true, force: true });
    }
    return { area: 'learning', machine: machineInfo(choice.name), rows, figures, notes };
  },
});
