import { CLIP_MEAN, CLIP_STD, normalizeRgb } from './images/normalize.js';
import { maskTokens } from './masking.js';
import { CounterRng, hashUniforms, sampleSeed, seededPermutation } from './rng.js';
import { MAX_STORED_TOKENS } from './shards/format.js';
import type { ShardPixels, ShardRecord } from './shards/reader.js';
import type { TextTokenizer } from './tokenizer/load.js';
import { emptyPretrainBatch, type PretrainBatch } from '@m3ae/protocol';

export type { PretrainBatch };


/** The global counts N_o a step's loss is normalised by (`computeGradients` of the model divides by them). */
export interface PretrainCounts {
  /** masked text tokens */
  mlm: number;
  /** masked image patches */
  mim: number;
  /** ITM pairs */
  itm: number;
}

/** What batch building reads from a dataset (an opened shard dataset satisfies it). */
export interface BatchDataset {
  readonly size: number;
  readonly imageSize: number;
  readonly manifest?: { tokenizer: { hash: string } | null };
  getPixels(index: number): Promise<ShardPixels>;
  getRecord(index: number): Promise<ShardRecord>;
}

export interface PretrainBatchOptions {
  dataset: BatchDataset;
  tokenizer: TextTokenizer;
  /** Dataset indices of this (micro-)batch's samples, in batch order. */
  indices: ArrayLike<number>;
  /** Each sample's position within the global batch (0 ≤ p < globalBatchSize): decides ITM positives. */
  positions: ArrayLike<number>;
  /** G: the size of the global batch these samples belong to. */
  globalBatchSize: number;
  step: number;
  seed: number;
  /** Must equal the size the shards were prepared at. */
  imageSize: number;
  maxTextLength: number;
  /** @defaultValue 0.15 */
  mlmProbability?: number;
  /** @defaultValue 0.75 */
  mimMaskRatio?: number;
  /** N = (imageSize / patchSize)²: patches per image (the length of each mimNoise row). */
  numPatches: number;
}

export type PretrainCountsOptions = Omit<PretrainBatchOptions, 'imageSize' | 'dataset'> & {
  dataset: Pick<BatchDataset, 'size' | 'getRecord' | 'manifest'>;
  imageSize?: number;
};

function validate(o: PretrainCountsOptions): { B: number; mlmProbability: number; mimMaskRatio: number } {
  const B = o.indices.length;
  if (o.positions.length !== B) throw new RangeError(`positions has ${o.positions.length} entries, expected ${B} (one per index)`);
  if (!Number.isInteger(o.globalBatchSize) || o.globalBatchSize < 1) throw new RangeError(`globalBatchSize must be a positive integer, got ${String(o.globalBatchSize)}`);
  for (let b = 0; b < B; b++) {
    const p = o.positions[b] as number;
    if (!Number.isInteger(p) || p < 0 || p >= o.globalBatchSize) throw new RangeError(`positions[${b}] must be an integer in [0, ${o.globalBatchSize}), got ${String(p)}`);
    const i = o.indices[b] as number;
    if (!Number.isInteger(i) || i < 0 || i >= o.dataset.size) throw new RangeError(`indices[${b}] must be an integer in [0, ${o.dataset.size}), got ${String(i)}`);
  }
  if (o.dataset.size < 2) throw new RangeError(`the dataset has ${o.dataset.size} sample(s); ITM negatives need at least 2`);
  const mimMaskRatio = o.mimMaskRatio ?? 0.75;
  if (!(mimMaskRatio >= 0 && mimMaskRatio < 1)) throw new RangeError(`mimMaskRatio must be in [0, 1), got ${String(mimMaskRatio)}`);
  if (!Number.isInteger(o.numPatches) || o.numPatches < 1) throw new RangeError(`numPatches must be a positive integer, got ${String(o.numPatches)}`);
  if (!Number.isInteger(o.maxTextLength) || o.maxTextLength < 1) throw new RangeError(`maxTextLength must be a positive integer, got ${String(o.maxTextLength)}`);
  return { B, mlmProbability: o.mlmProbability ?? 0.15, mimMaskRatio };
}

/** Content token ids of a record: the ids stored in the shard when they come from this very tokenizer. */
function contentIds(record: ShardRecord, o: PretrainCountsOptions): Int32Array {
  const stored = record.tokens;
  const sameVocabulary = o.dataset.manifest?.tokenizer?.hash === o.tokenizer.hash;
  if (stored && sameVocabulary && (stored.length < MAX_STORED_TOKENS || o.maxTextLength <= MAX_STORED_TOKENS)) return stored;
  return o.tokenizer.encodeContent(record.text);
}

/**
 * value → normalised float per channel: the same double-precision multiply-add as `normalizeRgb`, rounded to
 * float32 once, so a lookup gives exactly the floats `normalizeRgb` writes.
 */
const CHANNEL_LUT = [0, 1, 2].map((c) => {
  const scale = 1 / (255 * (CLIP_STD[c] as number));
  const bias = -(CLIP_MEAN[c] as number) / (CLIP_STD[c] as number);
  return Float32Array.from({ length: 256 }, (_, v) => v * scale + bias);
});

/**
 * CLIP normalisation of stored pixels into a batch. Grey pictures (most radiographs) are normalised from
 * their one channel by table lookup — identical floats to normalising the expanded RGB, without building it.
 */
function normalizePixels(p: ShardPixels, out: Float32Array, offset: number): void {
  if (p.channels === 3) {
    normalizeRgb(p.data, p.size, p.size, out, offset);
    return;
  }
  const plane = p.size * p.size;
  const d = p.data;
  for (let c = 0; c < 3; c++) {
    const lut = CHANNEL_LUT[c] as Float32Array;
    const o = offset + c * plane;
    for (let i = 0; i < plane; i++) out[o + i] = lut[d[i] as number] as number;
  }
}

/** Patches MIM masks per image: N − floor(N·(1 − ratio)) (MAE keeps the floor(N·(1−ratio)) smallest noises). */
export function maskedPatchCount(numPatches: number, mimMaskRatio: number): number {
  return numPatches - Math.floor(numPatches * (1 - mimMaskRatio));
}

/** ITM label of a global-batch position at a step, from (seed, step) only: positive iff perm[p] < floor(G/2). */
export function itmPositives(seed: number, step: number, globalBatchSize: number): Uint8Array {
  const perm = seededPermutation(globalBatchSize, seed, step, 0, 'itmPermutation');
  const half = Math.floor(globalBatchSize / 2);
  const out = new Uint8Array(globalBatchSize);
  for (let p = 0; p < globalBatchSize; p++) out[p] = (perm[p] as number) < half ? 1 : 0;
  return out;
}

/** The corpus index whose image is the ITM negative of `sampleIndex` at `step`: uniform over the others. */
export function itmNegativeIndex(seed: number, step: number, sampleIndex: number, datasetSize: number): number {
  const j = new CounterRng(seed, step, sampleIndex, 'itmNegative').nextInt(datasetSize - 1);
  return j >= sampleIndex ? j + 1 : j;
}

/**
 * Builds the model's batch for the given samples (images by `normalizeRgb`, randomness from rng.ts). Every random input is a function of
 * (seed, step, dataset index) — and ITM labels of (seed, step, position in the global batch) — so building a
 * global batch at once or as micro-batches on different workers gives byte-identical rows.
 */
export async function buildPretrainBatch(options: PretrainBatchOptions): Promise<PretrainBatch> {
  const { B, mlmProbability } = validate(options);
  const { dataset, tokenizer, seed, step, imageSize: H, maxTextLength: L, numPatches: N } = options;
  if (H !== dataset.imageSize) throw new RangeError(`imageSize is ${H} but the dataset was prepared at ${dataset.imageSize} px`);
  const plane = 3 * H * H;
  const batch = emptyPretrainBatch(B, H, L, N);
  const positives = itmPositives(seed, step, options.globalBatchSize);
  const indices = Array.from(options.indices);
  const negatives = indices.map((i, b) => (positives[options.positions[b] as number] === 1 ? -1 : itmNegativeIndex(seed, step, i, dataset.size)));
  const [records, pixels, negativePixels] = await Promise.all([
    Promise.all(indices.map((i) => dataset.getRecord(i))),
    Promise.all(indices.map((i) => dataset.getPixels(i))),
    Promise.all(negatives.map((j) => (j < 0 ? undefined : dataset.getPixels(j)))),
  ]);
  for (let b = 0; b < B; b++) {
    const index = indices[b] as number;
    normalizePixels(pixels[b] as ShardPixels, batch.pixelValues, b * plane);
    const neg = negativePixels[b];
    if (neg) {
      normalizePixels(neg, batch.itmPixelValues, b * plane);
      batch.itmLabels[b] = 0;
    } else {
      batch.itmPixelValues.set(batch.pixelValues.subarray(b * plane, (b + 1) * plane), b * plane);
      batch.itmLabels[b] = 1;
    }
    const row = { inputIds: batch.inputIds.subarray(b * L, (b + 1) * L), attentionMask: batch.attentionMask.subarray(b * L, (b + 1) * L) };
    tokenizer.assemble(contentIds(records[b] as ShardRecord, options), L, row);
    maskTokens({
      ...row,
      vocab: tokenizer,
      probability: mlmProbability,
      seed,
      step,
      sampleIndex: index,
      out: { mlmInputIds: batch.mlmInputIds.subarray(b * L, (b + 1) * L), mlmLabels: batch.mlmLabels.subarray(b * L, (b + 1) * L) },
    });
    batch.mimNoise.set(hashUniforms(seed, step, index, 'mim', N), b * N);
    batch.dropoutSeeds[b] = sampleSeed(seed, step, index, 'dropout') | 0;
  }
  return batch;
}

/**
 * The loss normalisers N_o of these samples without reading images: masked tokens (tokenise + mask, as
 * `buildPretrainBatch` does), masked patches B·(N − floor(N(1 − ratio))), ITM pairs B. The coordinator calls
 * it on the whole global batch before the step.
 */
export async function pretrainCounts(options: PretrainCountsOptions): Promise<PretrainCounts> {
  const { B, mlmProbability, mimMaskRatio } = validate(options);
  const { tokenizer, maxTextLength: L } = options;
  const records = await Promise.all(Array.from(options.indices, (i) => options.dataset.getRecord(i)));
  const row = { inputIds: new Int32Array(L), attentionMask: new Int32Array(L) };
  const out = { mlmInputIds: new Int32Array(L), mlmLabels: new Int32Array(L) };
  let mlm = 0;
  for (let b = 0; b < B; b++) {
    const r = records[b] as ShardRecord;
    tokenizer.assemble(contentIds(r, options), L, row);
    mlm += maskTokens({ ...row, vocab: tokenizer, probability: mlmProbability, seed: options.seed, step: options.step, sampleIndex: r.index, out }).count;
  }
  return { mlm, mim: B * maskedPatchCount(options.numPatches, mimMaskRatio), itm: B };
}
