import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
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
  type CarveSpec,
  type PhantomManifestLine,
} from '@m3ae/data';
import {
  chooseBackend,
  createModel,
  loadCheckpoint,
  presetConfig,
  setParamsFromFlat,
  vqaMetrics,
  type M3AEModel,
  type VqaMetrics,
} from '@m3ae/model';
import { loadRunConfig, type StepReport } from '@m3ae/protocol';
import { evaluatePhantom } from '@m3ae/tasks';
import { modelSetup, runModelConfig, trainInProcess } from '@m3ae/training';
import { runEval } from '../commands/eval.js';
import { runFinetune, type FinetuneResult } from '../commands/finetune.js';
import { registerBenchArea, type BenchOptions } from './areas.js';
import { machineInfo, type BenchRow } from './report.js';

/**
 * `m3ae bench learning`: does pre-training learn, and does it help downstream?
 *
 * (a) Phantom corpus (procedural images whose captions state what the image shows): after pre-training, masked
 *     words that describe the image (lesion density, size, shape, location, region, plane, modality) are predicted
 *     with the true image and with another sample's image — cross-modal learning shows as a gap — and the MIM loss
 *     on held-out images is set against predicting each masked patch's mean (zero in the per-patch-normalised
 *     target space).
 * (b) Real data: `small` pre-trained on the MedPix 2.0 pairs, then fine-tuned on VQA-RAD training questions
 *     (validation and held-out splits carved by image), against the same fine-tuning from random initialisation
 *     and a question-only answer prior. Selection on validation only; the held-out split is read once per model.
 *
 * Sizes are flags (`--size key=value,...`, see SIZE_DEFAULTS) so that the run fits the machine.
 */
const workspaceRoot = resolve(import.meta.dirname, '../../..');

const SIZE_DEFAULTS = {
  /** Parts to run: a (phantom), b (real data). */
  parts: 'a,b',
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
  'ft-train-limit': 0,
  /** Examples per forward/backward pass in fine-tuning (speed only: the gradients are exact). */
  'ft-micro': 16,
  micro: 8,
  /** Compute threads (wasm is single-threaded): data-parallel pre-training and fine-tuning. */
  threads: 2,
  seed: 0,
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
  vocab: 1000,
};

type Sizes = { -readonly [K in keyof typeof SIZE_DEFAULTS]: (typeof SIZE_DEFAULTS)[K] extends string ? string : number };

/** `--size a=1,b=2` (repeatable) over the defaults; unknown keys and non-numbers are errors naming them. */
export function parseSizes(spec: string | undefined, quick: boolean): Sizes {
  const out = { ...SIZE_DEFAULTS, ...(quick ? QUICK : {}) } as Record<string, number | string>;
  for (const part of (spec ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const [k, v] = part.split('=') as [string, string | undefined];
    if (!(k in SIZE_DEFAULTS) || v === undefined) throw new Error(`--size ${part}: expected key=value with key one of ${Object.keys(SIZE_DEFAULTS).join(', ')}`);
    if (typeof SIZE_DEFAULTS[k as keyof typeof SIZE_DEFAULTS] === 'number') {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) throw new Error(`--size ${k}=${v}: expected a number >= 0`);
      out[k] = n;
    } else out[k] = v;
  }
  return out as Sizes;
}

export interface PretrainRun {
  model: M3AEModel;
  /** The pre-training checkpoint (the trainer's last), for fine-tuning and `m3ae eval`. */
  checkpoint: string;
  seconds: number;
  samples: number;
  /** Mean per-step losses over the last tenth of the steps. */
  last: { mlm: number; mim: number; itm: number; itmAccuracy: number };
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
    },
    env: {},
  });
  const setup = await modelSetup(config);
  let win = new LossWindow();
  const tail = new LossWindow();
  const logEvery = Math.max(1, Math.floor(o.steps / 10));
  const f = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : '-');
  const onStep = (r: StepReport): void => {
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
    return { model, checkpoint: summary.checkpoint as string, seconds: (performance.now() - t0) / 1000, samples: summary.steps * o.batch, last: { mlm: last.mlm, mim: last.mim, itm: last.itm, itmAccuracy: last.itmAccuracy } };
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

function vqaRow(measure: string, m: VqaMetrics, baseline: number | undefined, baselineIs: string): BenchRow {
  return {
    part: 'b VQA-RAD',
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
type Init = 'pretrained' | 'random';

/** (b) step 1: a BPE vocabulary on the real text, MedPix shards, and `small` pre-trained on them. */
async function pretrainOnMedPix(s: Sizes, work: string, data: string, log: Log, backend: string | undefined): Promise<{ run: PretrainRun; tokPath: string; vocabSize: number; pairs: number }> {
  const medpix = join(data, 'medpix2');
  const tokPath = join(work, 'tokenizer.json');
  log(`tokenizer: BPE ${s.vocab} on MedPix, ROCO and IU X-ray text`);
  await trainTokenizer({
    sources: [{ kind: 'medpix', path: medpix }, { kind: 'roco', path: join(data, 'roco') }, { kind: 'iu-xray', path: join(data, 'iu_xray_reports', 'annotation.json') }],
    vocabSize: s.vocab,
    output: tokPath,
    agreementSamples: 50,
  });
  const tok = await loadTokenizer(tokPath);
  const shards = join(work, 'medpix-shards');
  await prepareShards({ source: 'medpix', input: medpix, split: 'train', output: shards, imageSize: s['pretrain-px'], tokenizer: tok });
  const pairs = await openShardDataset(shards).then(async (d) => (await d.close(), d.size));
  const overrides = { imageSize: s['pretrain-px'], maxTextLength: s['pretrain-text'], vocabSize: Math.max(tok.vocabSize, presetConfig('small').vocabSize), padTokenId: tok.special.pad };
  log(`pre-training small (${s['pretrain-px']} px, text ${s['pretrain-text']}) on ${pairs} MedPix pairs: ${s['pretrain-steps']} steps × ${s['pretrain-batch']}`);
  const run = await pretrainInProcess({
    preset: 'small',
    overrides,
    shards,
    tokenizer: tokPath,
    output: join(work, 'pretrain'),
    steps: s['pretrain-steps'],
    batch: s['pretrain-batch'],
    micro: s.micro,
    learningRate: s['pretrain-lr'],
    seed: s.seed,
    threads: s.threads,
    backend,
    log,
  });
  run.model.dispose();
  return { run, tokPath, vocabSize: tok.vocabSize, pairs };
}

/** (b) step 2: the same fine-tuning from both inits, each selected on validation, its held-out split read once. */
async function fineTuneBoth(s: Sizes, work: string, vqaRad: string, carve: CarveSpec, pre: { checkpoint: string; tokPath: string }, log: Log, backend: string | undefined): Promise<Record<Init, { ft: FinetuneResult; holdout: VqaMetrics }>> {
  const results = {} as Record<Init, { ft: FinetuneResult; holdout: VqaMetrics }>;
  // One after the other, each data parallel over the threads (the same results as side by side).
  for (const init of ['pretrained', 'random'] as const) {
    const ft = await runFinetune({
      task: 'vqa-rad',
      data: vqaRad,
      output: join(work, `ft-${init}`),
      checkpoint: pre.checkpoint,
      init,
      tokenizer: pre.tokPath,
      carve,
      imageSize: s['ft-px'],
      epochs: s['ft-epochs'],
      globalBatch: s['ft-batch'],
      microBatch: s['ft-micro'],
      learningRate: s['ft-lr'],
      clipNorm: s['ft-clip'],
      seed: s.seed,
      ...(s['ft-train-limit'] > 0 ? { trainLimit: s['ft-train-limit'] } : {}),
      backend,
      threads: s.threads,
      log: (l) => log(`[${init}] ${l}`),
    });
    const { metrics } = await runEval({ task: 'vqa-rad', data: vqaRad, split: 'holdout', batchSize: 32, checkpoint: ft.output, ...(backend ? { backend } : {}) });
    if (metrics.kind !== 'vqa') throw new Error('expected VQA metrics');
    results[init] = { ft, holdout: metrics.vqa };
    log(`[${init}] held-out overall ${(100 * metrics.vqa.overall.accuracy).toFixed(2)}% (selected step ${ft.bestStep}, val ${(100 * ft.bestScore).toFixed(2)}%)`);
  }
  return results;
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

async function realPart(s: Sizes, work: string, log: Log, backend: string | undefined): Promise<PartResult> {
  const data = sharedDataDir(workspaceRoot);
  if (!data) throw new Error('bench learning (b) needs the real MedPix and VQA-RAD data: set M3AE_SHARED_DATA or provide ../shared/data (or --size parts=a)');
  const vqaRad = join(data, 'vqa_rad');
  const { run, tokPath, vocabSize, pairs } = await pretrainOnMedPix(s, work, data, log, backend);
  // VQA-RAD: validation (selection) and held-out (reported) splits carved by image from the training questions.
  const carve: CarveSpec = { seed: 0, valFraction: 0.1, testFraction: 0.15 };
  const results = await fineTuneBoth(s, work, vqaRad, carve, { checkpoint: run.checkpoint, tokPath }, log, backend);
  const base = await answerBaselines(s, vqaRad, carve);
  const p = results.pretrained.holdout;
  const r = results.random.holdout;
  const rows: BenchRow[] = [
    vqaRow('held-out acc.: pre-trained small + fine-tuning', p, r.overall.accuracy, 'random init + same fine-tuning'),
    vqaRow('held-out acc.: random init + fine-tuning', r, base.prior.overall.accuracy, 'question-only prior'),
    vqaRow('held-out acc.: question-only answer prior', base.prior, base.majority.overall.accuracy, `majority answer "${base.majorityAnswer}"`),
  ];
  const figures = {
    vqa_rad_holdout_questions: p.overall.total,
    vqa_rad_overall_pretrained_pct: 100 * p.overall.accuracy,
    vqa_rad_overall_random_init_pct: 100 * r.overall.accuracy,
    vqa_rad_overall_question_prior_pct: 100 * base.prior.overall.accuracy,
    vqa_rad_overall_majority_pct: 100 * base.majority.overall.accuracy,
    vqa_rad_open_pretrained_pct: 100 * p.open.accuracy,
    vqa_rad_closed_pretrained_pct: 100 * p.closed.accuracy,
    pretrained_beats_random_init: p.overall.accuracy > r.overall.accuracy,
    pretrained_beats_question_prior: p.overall.accuracy > base.prior.overall.accuracy,
    medpix_pretrain_samples: run.samples,
    medpix_pretrain_seconds: Math.round(run.seconds),
    finetune_seconds_pretrained: Math.round(results.pretrained.ft.seconds),
    finetune_seconds_random: Math.round(results.random.ft.seconds),
  };
  const st = results.pretrained.ft.settings;
  const notes = [
    `(b) small at ${s['pretrain-px']} px, text ${s['pretrain-text']}, vocabulary ${vocabSize}: ${s['pretrain-steps']} steps × ${s['pretrain-batch']} = ${run.samples} MedPix samples (${(run.samples / pairs).toFixed(1)} epochs, ${run.seconds.toFixed(0)} s); last-10% losses MLM ${run.last.mlm.toFixed(3)}, MIM ${run.last.mim.toFixed(3)}, ITM ${run.last.itm.toFixed(3)} (acc ${(100 * run.last.itmAccuracy).toFixed(1)}%).`,
    `(b) fine-tuning (both inits identical): ${st.epochs} epochs × ${st.stepsPerEpoch} steps of ${st.globalBatch}, ${st.imageSize} px, lr ${st.learningRate} (head ×${st.lrMultiplierHead}, fusion ×${st.lrMultiplierMultiModal}), gradient clipping ${st.clipNorm || 'none'}, ${results.pretrained.ft.trainExamples} training / ${results.pretrained.ft.valExamples} validation questions; selected on validation at steps ${results.pretrained.ft.bestStep} (pre-trained) and ${results.random.ft.bestStep} (random); the held-out split (${p.overall.total} questions, disjoint images) read once per model.`,
    `(b) held-out answers not in the training vocabulary: ${p.unseenAnswers} (counted wrong for every row).`,
  ];
  return { rows, figures, notes };
}

registerBenchArea('learning', {
  description: 'does pre-training learn (phantom MLM gap, MIM vs patch mean) and help (VQA-RAD after MedPix pre-training vs random init and a question prior)?',
  async run(options: BenchOptions) {
    const sizes = parseSizes(options.extra['size'], options.quick);
    const choice = await chooseBackend({ backend: options.backend ?? 'auto' });
    const parts = sizes.parts.split(',').map((x) => x.trim());
    const log: Log = (line) => process.stderr.write(`[bench learning] ${line}\n`);
    const work = await mkdtemp(join(tmpdir(), 'm3ae-bench-learning-'));
    const rows: BenchRow[] = [];
    const figures: Record<string, number | string | boolean> = {};
    const notes: string[] = [`sizes: ${JSON.stringify(sizes)}`];
    try {
      for (const [name, part] of [['a', () => phantomPart(sizes, work, log)], ['b', () => realPart(sizes, work, log, options.backend)]] as const) {
        if (!parts.includes(name)) continue;
        const t0 = performance.now();
        const r = await part();
        rows.push(...r.rows);
        Object.assign(figures, r.figures, { [`part_${name}_seconds`]: Math.round((performance.now() - t0) / 1000) });
        notes.push(...r.notes);
      }
    } finally {
      await rm(work, { recursive: true, force: true });
    }
    return { area: 'learning', machine: machineInfo(choice.name), rows, figures, notes };
  },
});
