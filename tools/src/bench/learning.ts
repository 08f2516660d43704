import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import {
  EpochSampler,
  LabelVocabulary,
  QuestionPriorBaseline,
  buildPretrainBatch,
  hashUniforms,
  loadImage,
  loadTokenizer,
  openShardDataset,
  prepareShards,
  pretrainCounts,
  readVqaTaskSplit,
  sharedDataDir,
  trainTokenizer,
  writePhantomCorpus,
  SkipLog,
  type CarveSpec,
  type PhantomManifestLine,
  type ShardDataset,
  type TextTokenizer,
} from '@m3ae/data';
import {
  AdamW,
  chooseBackend,
  computeGradients,
  computeLosses,
  createModel,
  flattenParams,
  mimKeepCount,
  numPatches,
  presetConfig,
  saveCheckpoint,
  setParamsFromFlat,
  vqaMetrics,
  type M3AEConfig,
  type M3AEModel,
  type PretrainBatch,
  type VqaMetrics,
} from '@m3ae/model';
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
  /** Threads (wasm is single-threaded): data-parallel pre-training, and the two fine-tunings side by side. */
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

/**
 * Helper thread of the data-parallel pre-training below: it builds the micro-batches it is given (same builder, same
 * seeds as in the main thread) and returns each one's exact gradient; the parameters are read from shared memory.
 */
const PRETRAIN_THREAD = `
const { parentPort, workerData: w } = require('node:worker_threads');
(async () => {
  const data = await import(w.dataUrl);
  const model = await import(w.modelUrl);
  await model.chooseBackend({ backend: w.backend });
  const tokenizer = await data.loadTokenizer(w.tokenizer);
  const dataset = await data.openShardDataset(w.shards);
  const m = model.createModel(w.config, { seed: w.seed });
  const params = new Float32Array(w.params);
  parentPort.on('message', async (job) => {
    try {
      model.setParamsFromFlat(m, params);
      const out = [];
      for (const mb of job.micro) {
        const batch = await data.buildPretrainBatch({ ...job.common, dataset, tokenizer, indices: mb.indices, positions: mb.positions });
        const r = await model.computeGradients(m, batch, { normalizers: job.normalizers, training: true });
        out.push({ grads: r.grads, sums: r.sums, correct: r.correct, counts: r.counts });
      }
      parentPort.postMessage({ out }, out.map((o) => o.grads.buffer));
    } catch (e) {
      parentPort.postMessage({ error: String((e && e.stack) || e) });
    }
  });
  parentPort.postMessage({ ready: true });
})().catch((e) => parentPort.postMessage({ error: String((e && e.stack) || e) }));
`;

/** Helper thread of part (b): one fine-tuning and its single held-out evaluation (the two inits run side by side). */
const FINETUNE_THREAD = `
const { parentPort, workerData: w } = require('node:worker_threads');
(async () => {
  const ft = await import(w.finetuneUrl);
  const ev = await import(w.evalUrl);
  const r = await ft.runFinetune({ ...w.options, log: (l) => parentPort.postMessage({ log: l }) });
  const e = await ev.runEval({ ...w.evalOptions, checkpoint: r.output });
  parentPort.postMessage({ result: { ft: r, metrics: e.metrics } });
})().catch((e) => parentPort.postMessage({ error: String((e && e.stack) || e) }));
`;

/** Threads only from the built JavaScript (the helper imports the built libraries); from TypeScript sources: 1. */
const threadsAvailable = import.meta.url.endsWith('.js');

type MicroResult = Awaited<ReturnType<typeof computeGradients>>;

/** Running sums of a pre-training window: summed losses, correct predictions and item counts per objective. */
interface Totals {
  mlm: number;
  mim: number;
  itm: number;
  itmCorrect: number;
  mlmCorrect: number;
  n: { mlm: number; mim: number; itm: number };
}

function accumulate(w: Totals, r: MicroResult): void {
  w.mlm += r.sums.mlm;
  w.mim += r.sums.mim;
  w.itm += r.sums.itm;
  w.itmCorrect += r.correct.itm;
  w.mlmCorrect += r.correct.mlm;
  w.n.mlm += r.counts.mlm;
  w.n.mim += r.counts.mim;
  w.n.itm += r.counts.itm;
}

interface ThreadReply<T> {
  ready?: boolean;
  error?: string;
  log?: string;
  out?: T;
  result?: T;
}

/** The next message of a helper thread (an `error` message or the thread's failure rejects). */
function nextMessage<T>(w: Worker): Promise<ThreadReply<T>> {
  return new Promise((res, rej) => {
    const onMessage = (m: ThreadReply<T>): void => {
      if (m.log !== undefined) return;
      w.off('message', onMessage);
      w.off('error', rej);
      if (m.error !== undefined) rej(new Error(`helper thread: ${m.error}`));
      else res(m);
    };
    w.on('message', onMessage);
    w.once('error', rej);
  });
}

export interface PretrainRun {
  model: M3AEModel;
  seconds: number;
  samples: number;
  /** Mean losses over the last tenth of the steps. */
  last: { mlm: number; mim: number; itm: number; itmAccuracy: number };
}

/**
 * Pre-training in this process, computing exactly what the distributed trainer computes (the same batches from the
 * same sampler, exact micro-batch gradients with global normalizers, the same AdamW): with one worker `m3ae train`
 * gives the same parameters.
 */
export async function pretrainInProcess(o: {
  config: M3AEConfig;
  dataset: ShardDataset;
  tokenizer: TextTokenizer;
  steps: number;
  batch: number;
  micro: number;
  learningRate: number;
  seed: number;
  /** Threads computing micro-batches (data parallel, the same sums in the same order: the same parameters). @defaultValue 1 */
  threads?: number;
  backend?: string | undefined;
  log: (line: string) => void;
}): Promise<PretrainRun> {
  const t0 = performance.now();
  const { config, dataset, tokenizer } = o;
  const model = createModel(config, { seed: o.seed });
  const opt = new AdamW(model.manifest, { learningRate: o.learningRate, totalSteps: o.steps, warmupSteps: 0.1, maxGradNorm: 1 });
  const sampler = new EpochSampler({ size: dataset.size, seed: o.seed, globalBatchSize: Math.min(o.batch, dataset.size) });
  const params = new Float32Array(new SharedArrayBuffer(4 * model.manifest.size));
  params.set(await flattenParams(model));
  const helpers: Worker[] = [];
  const threads = threadsAvailable ? Math.max(1, Math.floor(o.threads ?? 1)) : 1;
  for (let t = 1; t < threads; t++) {
    const w = new Worker(PRETRAIN_THREAD, {
      eval: true,
      workerData: {
        dataUrl: import.meta.resolve('@m3ae/data'),
        modelUrl: import.meta.resolve('@m3ae/model'),
        backend: o.backend ?? 'auto',
        tokenizer: tokenizer.path,
        shards: dataset.dir,
        config,
        seed: o.seed,
        params: params.buffer,
      },
    });
    helpers.push(w);
    await nextMessage(w);
  }
  try {
    const tail: Totals = { mlm: 0, mim: 0, itm: 0, itmCorrect: 0, mlmCorrect: 0, n: { mlm: 0, mim: 0, itm: 0 } };
    const tailFrom = Math.floor(o.steps * 0.9);
    const logEvery = Math.max(1, Math.floor(o.steps / 10));
    const win: Totals = { mlm: 0, mim: 0, itm: 0, itmCorrect: 0, mlmCorrect: 0, n: { mlm: 0, mim: 0, itm: 0 } };
    for (let step = 0; step < o.steps; step++) {
      const gb = sampler.batchAt(step);
      const plain = {
        globalBatchSize: gb.indices.length,
        step,
        seed: o.seed,
        maxTextLength: config.maxTextLength,
        mlmProbability: config.mlmMaskRatio,
        mimMaskRatio: config.mimMaskRatio,
        numPatches: numPatches(config),
      };
      const common = { ...plain, dataset, tokenizer };
      const normalizers = await pretrainCounts({ ...common, indices: gb.indices, positions: gb.positions });
      const grads = new Float32Array(model.manifest.size);
      // Micro-batch j goes to thread j mod threads (0: this one); gradients are added in micro-batch order.
      const micro: { indices: Uint32Array; positions: Uint32Array }[] = [];
      for (let s = 0; s < gb.indices.length; s += o.micro) micro.push({ indices: gb.indices.slice(s, s + o.micro), positions: gb.positions.slice(s, s + o.micro) });
      const replies = helpers.map((w, h) => {
        const reply = nextMessage<MicroResult[]>(w);
        w.postMessage({ common: { ...plain, imageSize: config.imageSize }, normalizers, micro: micro.filter((_, j) => j % threads === h + 1) });
        return reply;
      });
      const mine: MicroResult[] = [];
      for (let j = 0; j < micro.length; j += threads) {
        const m = micro[j] as { indices: Uint32Array; positions: Uint32Array };
        const batch: PretrainBatch = await buildPretrainBatch({ ...common, imageSize: config.imageSize, indices: m.indices, positions: m.positions });
        mine.push(await computeGradients(model, batch, { normalizers, training: true }));
      }
      const theirs = await Promise.all(replies.map(async (r) => (await r).out ?? []));
      const results = micro.map((_, j) => (j % threads === 0 ? mine[j / threads] : theirs[(j % threads) - 1]?.[Math.floor(j / threads)]) as MicroResult);
      for (const r of results) {
        for (let i = 0; i < grads.length; i++) grads[i] = (grads[i] as number) + (r.grads[i] as number);
        accumulate(win, r);
        if (step >= tailFrom) accumulate(tail, r);
      }
      opt.update(params, grads);
      setParamsFromFlat(model, params);
      if ((step + 1) % logEvery === 0) {
        const f = (a: number, b: number): string => (b > 0 ? (a / b).toFixed(3) : '-');
        o.log(
          `pre-training step ${step + 1}/${o.steps} (${((performance.now() - t0) / 1000).toFixed(0)} s): MLM ${f(win.mlm, win.n.mlm)} (acc ${f(win.mlmCorrect, win.n.mlm)}), MIM ${f(win.mim, win.n.mim)}, ITM ${f(win.itm, win.n.itm)} (acc ${f(win.itmCorrect, win.n.itm)})`,
        );
        win.mlm = win.mim = win.itm = win.itmCorrect = win.mlmCorrect = 0;
        win.n = { mlm: 0, mim: 0, itm: 0 };
      }
    }
    const div = (a: number, b: number): number => (b > 0 ? a / b : NaN);
    return {
      model,
      seconds: (performance.now() - t0) / 1000,
      samples: o.steps * sampler.globalBatchSize,
      last: { mlm: div(tail.mlm, tail.n.mlm), mim: div(tail.mim, tail.n.mim), itm: div(tail.itm, tail.n.itm), itmAccuracy: div(tail.itmCorrect, tail.n.itm) },
    };
  } finally {
    await Promise.all(helpers.map((w) => w.terminate()));
  }
}

/** The image-describing words of phantom captions, by attribute (surface forms as the caption generator writes them). */
const IMAGE_WORDS: Readonly<Record<string, readonly string[]>> = {
  density: ['hyperdense', 'hypodense', 'hyperintense', 'hypointense', 'radiopaque', 'radiolucent'],
  size: ['medium-sized', 'small', 'large'],
  shape: ['irregular', 'round', 'oval'],
  location: ['left upper', 'right upper', 'left lower', 'right lower'],
  region: ['abdomen', 'pelvis', 'chest', 'head'],
  plane: ['sagittal', 'coronal', 'frontal', 'lateral', 'axial'],
  modality: ['radiograph', 'MRI', 'CT'],
};

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');
}

function startsWithIds(a: Int32Array, prefix: Int32Array): boolean {
  if (prefix.length > a.length) return false;
  for (let i = 0; i < prefix.length; i++) if (a[i] !== prefix[i]) return false;
  return true;
}

/** Token positions (within the assembled sequence) of one attribute's word in a caption, or undefined. */
export function wordTokenSpan(tok: TextTokenizer, caption: string, words: readonly string[], maxLength: number): [number, number] | undefined {
  for (const w of words) {
    const m = new RegExp(`(?<![\\w-])${escapeRegExp(w)}(?![\\w-])`, 'i').exec(caption);
    if (!m) continue;
    const all = tok.encodeContent(caption);
    const before = tok.encodeContent(caption.slice(0, m.index).trimEnd());
    const upto = tok.encodeContent(caption.slice(0, m.index + w.length));
    // Byte-level BPE attaches the space to the following word: the word's tokens are upto minus before.
    if (!startsWithIds(all, upto) || !startsWithIds(upto, before) || upto.length === before.length) return undefined;
    const start = tok.prefix.length + before.length;
    const end = tok.prefix.length + upto.length;
    return end <= maxLength - tok.suffix.length ? [start, end] : undefined;
  }
  return undefined;
}

/** MLM-only or MIM-only copy of a model (same parameters, other objectives off) for evaluation passes. */
async function evalCopy(model: M3AEModel, only: 'mlm' | 'mim'): Promise<M3AEModel> {
  const off = { enabled: false, weight: 1 };
  const on = { enabled: true, weight: 1 };
  const c: M3AEConfig = { ...model.config, objectives: { mlm: only === 'mlm' ? on : off, mim: only === 'mim' ? on : off, itm: off } };
  const copy = createModel(c, { zeroInit: true });
  if (copy.manifest.hash !== model.manifest.hash) throw new Error('evaluation copy has another parameter manifest');
  setParamsFromFlat(copy, await flattenParams(model));
  return copy;
}

interface PhantomEval {
  byAttribute: Record<string, { trueCorrect: number; mismatchedCorrect: number; tokens: number }>;
  mimLoss: number;
  mimBaseline: number;
  maskedPatches: number;
}

/** Loss of predicting every masked patch's own mean: the mean square of the per-patch-normalised targets. */
export function patchMeanBaseline(pixels: Float32Array, B: number, size: number, patch: number, noise: Float32Array, keep: number): { loss: number; patches: number } {
  const g = size / patch;
  const N = g * g;
  const plane = size * size;
  const dim = 3 * patch * patch;
  let total = 0;
  let patches = 0;
  for (let b = 0; b < B; b++) {
    const order = Array.from({ length: N }, (_, i) => i).sort((x, y) => (noise[b * N + x] as number) - (noise[b * N + y] as number) || x - y);
    for (const p of order.slice(keep)) {
      const gy = Math.floor(p / g);
      const gx = p % g;
      const v: number[] = [];
      for (let c = 0; c < 3; c++) for (let y = 0; y < patch; y++) for (let x = 0; x < patch; x++) v.push(pixels[b * 3 * plane + c * plane + (gy * patch + y) * size + gx * patch + x] as number);
      const mean = v.reduce((s, a) => s + a, 0) / dim;
      const varU = v.reduce((s, a) => s + (a - mean) ** 2, 0) / (dim - 1);
      total += v.reduce((s, a) => s + (a - mean) ** 2, 0) / (varU + 1e-6) / dim;
      patches++;
    }
  }
  return { loss: total / patches, patches };
}

async function evaluatePhantom(model: M3AEModel, tok: TextTokenizer, lines: PhantomManifestLine[], dir: string, seed: number): Promise<PhantomEval> {
  const c = model.config;
  const L = c.maxTextLength;
  const H = c.imageSize;
  const N = numPatches(c);
  const plane = 3 * H * H;
  const images = await Promise.all(lines.map((l) => loadImage(join(dir, l.image), { size: H })));
  const mlm = await evalCopy(model, 'mlm');
  const mim = await evalCopy(model, 'mim');
  try {
    const byAttribute: PhantomEval['byAttribute'] = {};
    for (const [attr, words] of Object.entries(IMAGE_WORDS)) {
      const inst: { i: number; ids: Int32Array; mask: Int32Array; span: [number, number] }[] = [];
      lines.forEach((l, i) => {
        const span = wordTokenSpan(tok, l.text, words, L);
        if (!span) return;
        const enc = tok.encode(l.text, L);
        inst.push({ i, ids: enc.inputIds, mask: enc.attentionMask, span });
      });
      const res = { trueCorrect: 0, mismatchedCorrect: 0, tokens: 0 };
      for (const mismatched of [false, true]) {
        for (let s = 0; s < inst.length; s += 16) {
          const part = inst.slice(s, s + 16);
          const B = part.length;
          const batch: PretrainBatch = {
            batchSize: B,
            imageSize: H,
            textLength: L,
            pixelValues: new Float32Array(B * plane),
            inputIds: new Int32Array(B * L),
            attentionMask: new Int32Array(B * L),
            mlmInputIds: new Int32Array(B * L),
            mlmLabels: new Int32Array(B * L).fill(-100),
            mimNoise: new Float32Array(B * N),
            itmPixelValues: new Float32Array(B * plane),
            itmLabels: new Int32Array(B).fill(1),
            dropoutSeeds: new Int32Array(B),
          };
          part.forEach((x, b) => {
            // The mismatched image is the next sample's (a derangement of the evaluation set).
            const img = images[mismatched ? (x.i + 1) % images.length : x.i] as Float32Array;
            batch.pixelValues.set(img, b * plane);
            batch.itmPixelValues.set(img, b * plane);
            batch.inputIds.set(x.ids, b * L);
            batch.attentionMask.set(x.mask, b * L);
            batch.mlmInputIds.set(x.ids, b * L);
            for (let t = x.span[0]; t < x.span[1]; t++) {
              batch.mlmInputIds[b * L + t] = tok.special.mask;
              batch.mlmLabels[b * L + t] = x.ids[t] as number;
            }
          });
          const r = await computeLosses(mlm, batch);
          if (mismatched) res.mismatchedCorrect += r.correct.mlm;
          else {
            res.trueCorrect += r.correct.mlm;
            res.tokens += r.counts.mlm;
          }
        }
      }
      byAttribute[attr] = res;
    }
    // MIM on the held-out images, text unmasked, the same noise for model and baseline.
    let mimSum = 0;
    let mimCount = 0;
    let baseSum = 0;
    for (let s = 0; s < lines.length; s += 16) {
      const idx = Array.from({ length: Math.min(16, lines.length - s) }, (_, k) => s + k);
      const B = idx.length;
      const batch: PretrainBatch = {
        batchSize: B,
        imageSize: H,
        textLength: L,
        pixelValues: new Float32Array(B * plane),
        inputIds: new Int32Array(B * L),
        attentionMask: new Int32Array(B * L),
        mlmInputIds: new Int32Array(B * L),
        mlmLabels: new Int32Array(B * L).fill(-100),
        mimNoise: new Float32Array(B * N),
        itmPixelValues: new Float32Array(B * plane),
        itmLabels: new Int32Array(B).fill(1),
        dropoutSeeds: new Int32Array(B),
      };
      idx.forEach((i, b) => {
        batch.pixelValues.set(images[i] as Float32Array, b * plane);
        const enc = tok.encode((lines[i] as PhantomManifestLine).text, L);
        batch.inputIds.set(enc.inputIds, b * L);
        batch.attentionMask.set(enc.attentionMask, b * L);
        batch.mlmInputIds.set(enc.inputIds, b * L);
        batch.mimNoise.set(hashUniforms(seed, 0, 1_000_000 + i, 'mim', N), b * N);
      });
      const r = await computeLosses(mim, batch);
      mimSum += r.sums.mim;
      mimCount += r.counts.mim;
      const base = patchMeanBaseline(batch.pixelValues, B, H, c.patchSize, batch.mimNoise, mimKeepCount(c));
      baseSum += base.loss * base.patches;
    }
    return { byAttribute, mimLoss: mimSum / mimCount, mimBaseline: baseSum / mimCount, maskedPatches: mimCount };
  } finally {
    mlm.dispose();
    mim.dispose();
  }
}

type Log = (line: string) => void;

async function phantomPart(s: Sizes, work: string, log: Log): Promise<{ rows: BenchRow[]; figures: Record<string, number | string | boolean>; notes: string[] }> {
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
  const dataset = await openShardDataset(join(work, 'phantom-shards'));
  const width = s['phantom-hidden'] > 0 ? { hiddenSize: s['phantom-hidden'], numHeads: Math.max(1, Math.round(s['phantom-hidden'] / 16)) } : {};
  const config = presetConfig(s['phantom-preset'], { imageSize: px, maxTextLength: 32, vocabSize: Math.max(tok.vocabSize, 8), ...width });
  try {
    const before = createModel(config, { seed: s.seed });
    const untrained = await evaluatePhantom(before, tok, evalLines, evalDir, s.seed);
    before.dispose();
    const run = await pretrainInProcess({ config, dataset, tokenizer: tok, steps: s['phantom-steps'], batch: s['phantom-batch'], micro: s.micro, learningRate: s['phantom-lr'], seed: s.seed, threads: s.threads, log });
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
  } finally {
    await dataset.close();
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

async function realPart(s: Sizes, work: string, log: Log, backend: string | undefined): Promise<{ rows: BenchRow[]; figures: Record<string, number | string | boolean>; notes: string[] }> {
  const data = sharedDataDir(workspaceRoot);
  if (!data) throw new Error('bench learning (b) needs the real MedPix and VQA-RAD data: set M3AE_SHARED_DATA or provide ../shared/data (or --size parts=a)');
  const medpix = join(data, 'medpix2');
  const vqaRad = join(data, 'vqa_rad');
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
  const dataset = await openShardDataset(shards);
  const config = presetConfig('small', { imageSize: s['pretrain-px'], maxTextLength: s['pretrain-text'], vocabSize: Math.max(tok.vocabSize, presetConfig('small').vocabSize) });
  let run: PretrainRun;
  try {
    log(`pre-training small (${s['pretrain-px']} px, text ${s['pretrain-text']}) on ${dataset.size} MedPix pairs: ${s['pretrain-steps']} steps × ${s['pretrain-batch']}`);
    run = await pretrainInProcess({ config, dataset, tokenizer: tok, steps: s['pretrain-steps'], batch: s['pretrain-batch'], micro: s.micro, learningRate: s['pretrain-lr'], seed: s.seed, threads: s.threads, backend, log });
  } finally {
    await dataset.close();
  }
  const ckptDir = join(work, 'pretrain');
  const fixed = new Map([['mim_head.decoder_pos_embed', (await run.model.param('mim_head.decoder_pos_embed').data()) as Float32Array]]);
  await saveCheckpoint(ckptDir, { step: s['pretrain-steps'], manifest: run.model.manifest, params: await flattenParams(run.model), fixedParams: fixed, config, metadata: { run_config: JSON.stringify({ data: { tokenizer: tokPath } }) } });
  run.model.dispose();

  // VQA-RAD: validation (selection) and held-out (reported) splits carved by image from the training questions.
  const carve: CarveSpec = { seed: 0, valFraction: 0.1, testFraction: 0.15 };
  const ftOptions = (init: 'pretrained' | 'random'): Omit<Parameters<typeof runFinetune>[0], 'log'> => ({
    task: 'vqa-rad',
    data: vqaRad,
    output: join(work, `ft-${init}`),
    checkpoint: ckptDir,
    init,
    tokenizer: tokPath,
    carve,
    imageSize: s['ft-px'],
    epochs: s['ft-epochs'],
    batchSize: s['ft-batch'],
    microBatch: s['ft-micro'],
    learningRate: s['ft-lr'],
    ...(s['ft-clip'] > 0 ? { maxGradNorm: s['ft-clip'] } : {}),
    seed: s.seed,
    ...(s['ft-train-limit'] > 0 ? { trainLimit: s['ft-train-limit'] } : {}),
    backend,
  });
  const evalOptions = { task: 'vqa-rad' as const, data: vqaRad, split: 'holdout' as const, batchSize: 32, ...(backend ? { backend } : {}) };
  type Done = { ft: FinetuneResult; metrics: Awaited<ReturnType<typeof runEval>>['metrics'] };
  const fineTune = async (init: 'pretrained' | 'random'): Promise<Done> => {
    const tag = (l: string): void => log(`[${init}] ${l}`);
    if (!parallel) {
      const ft = await runFinetune({ ...ftOptions(init), log: tag });
      const ev = await runEval({ ...evalOptions, checkpoint: ft.output });
      return { ft, metrics: ev.metrics };
    }
    const w = new Worker(FINETUNE_THREAD, {
      eval: true,
      workerData: { finetuneUrl: new URL('../commands/finetune.js', import.meta.url).href, evalUrl: new URL('../commands/eval.js', import.meta.url).href, options: ftOptions(init), evalOptions },
    });
    w.on('message', (m: ThreadReply<Done>) => {
      if (m.log !== undefined) tag(m.log);
    });
    try {
      const m = await nextMessage<Done>(w);
      if (!m.result) throw new Error(`[${init}] the fine-tuning thread returned no result`);
      return m.result;
    } finally {
      await w.terminate();
    }
  };
  // Both fine-tunings are independent and deterministic: with threads >= 2 they run side by side (same results).
  const parallel = threadsAvailable && s.threads >= 2;
  const done = parallel ? await Promise.all([fineTune('pretrained'), fineTune('random')]) : [await fineTune('pretrained'), await fineTune('random')];
  const results = {} as Record<'pretrained' | 'random', { ft: FinetuneResult; holdout: VqaMetrics }>;
  (['pretrained', 'random'] as const).forEach((init, k) => {
    const { ft, metrics } = done[k] as Done;
    if (metrics.kind !== 'vqa') throw new Error('expected VQA metrics');
    results[init] = { ft, holdout: metrics.vqa };
    log(`[${init}] held-out overall ${(100 * metrics.vqa.overall.accuracy).toFixed(2)}% (selected step ${ft.bestStep}, val ${(100 * ft.bestScore).toFixed(2)}%)`);
  });
  // Question-only prior, from the same training questions.
  const log2 = new SkipLog();
  const train = await readVqaTaskSplit('vqa-rad', vqaRad, 'train', { skipLog: log2, carve });
  const holdout = await readVqaTaskSplit('vqa-rad', vqaRad, 'holdout', { skipLog: log2, carve });
  const prior = new QuestionPriorBaseline(s['ft-train-limit'] > 0 ? train.slice(0, s['ft-train-limit']) : train);
  const vocab = LabelVocabulary.inOrderOfAppearance(train.map((e) => e.answer));
  const labels = holdout.map((e) => vocab.labelOf(e.answer));
  const types = holdout.map((e) => e.answerType);
  const priorM = vqaMetrics(holdout.map((e) => vocab.labelOf(prior.predict(e.question))), labels, types);
  const majorityM = vqaMetrics(holdout.map(() => vocab.labelOf(prior.majorityAnswer)), labels, types);

  const p = results.pretrained.holdout;
  const r = results.random.holdout;
  const rows: BenchRow[] = [
    vqaRow('held-out acc.: pre-trained small + fine-tuning', p, r.overall.accuracy, 'random init + same fine-tuning'),
    vqaRow('held-out acc.: random init + fine-tuning', r, priorM.overall.accuracy, 'question-only prior'),
    vqaRow('held-out acc.: question-only answer prior', priorM, majorityM.overall.accuracy, `majority answer "${prior.majorityAnswer}"`),
  ];
  const figures = {
    vqa_rad_holdout_questions: p.overall.total,
    vqa_rad_overall_pretrained_pct: 100 * p.overall.accuracy,
    vqa_rad_overall_random_init_pct: 100 * r.overall.accuracy,
    vqa_rad_overall_question_prior_pct: 100 * priorM.overall.accuracy,
    vqa_rad_overall_majority_pct: 100 * majorityM.overall.accuracy,
    vqa_rad_open_pretrained_pct: 100 * p.open.accuracy,
    vqa_rad_closed_pretrained_pct: 100 * p.closed.accuracy,
    pretrained_beats_random_init: p.overall.accuracy > r.overall.accuracy,
    pretrained_beats_question_prior: p.overall.accuracy > priorM.overall.accuracy,
    medpix_pretrain_samples: run.samples,
    medpix_pretrain_seconds: Math.round(run.seconds),
    finetune_seconds_pretrained: Math.round(results.pretrained.ft.seconds),
    finetune_seconds_random: Math.round(results.random.ft.seconds),
  };
  const st = results.pretrained.ft.settings;
  const notes = [
    `(b) small at ${s['pretrain-px']} px, text ${s['pretrain-text']}, vocabulary ${tok.vocabSize}: ${s['pretrain-steps']} steps × ${s['pretrain-batch']} = ${run.samples} MedPix samples (${(run.samples / 1576).toFixed(1)} epochs, ${run.seconds.toFixed(0)} s); last-10% losses MLM ${run.last.mlm.toFixed(3)}, MIM ${run.last.mim.toFixed(3)}, ITM ${run.last.itm.toFixed(3)} (acc ${(100 * run.last.itmAccuracy).toFixed(1)}%).`,
    `(b) fine-tuning (both inits identical): ${st.epochs} epochs × ${st.stepsPerEpoch} steps of ${st.batchSize}, ${st.imageSize} px, lr ${st.learningRate} (head ×${st.lrMultiplierHead}, fusion ×${st.lrMultiplierMultiModal}), gradient clipping ${st.maxGradNorm ?? 'none'}, ${results.pretrained.ft.trainExamples} training / ${results.pretrained.ft.valExamples} validation questions; selected on validation at steps ${results.pretrained.ft.bestStep} (pre-trained) and ${results.random.ft.bestStep} (random); the held-out split (${p.overall.total} questions, disjoint images) read once per model.`,
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
