import { normalizeRgb } from '../images/normalize.js';
import { CounterRng, sampleSeed } from '../rng.js';
import type { TextTokenizer } from '../tokenizer/load.js';
import type { ImageStore } from './images.js';
import type { RetrievalSet } from './tasks.js';
import { emptyDownstreamBatch, type DownstreamBatch } from '@m3ae/protocol';

export type { DownstreamBatch };


/**
 * Random streams of downstream batches beyond @m3ae/data's `RNG_STREAMS` (numbers above theirs, never reused):
 * which captions are a retrieval example's negatives.
 */
export const DOWNSTREAM_STREAMS = { irtrNegatives: 101 } as const;

/** What one example of a classification-like task (VQA, MELINDA) contributes to a batch. */
export interface LabeledExample {
  imagePath: string;
  text: string;
  /** −1 when the answer / class is not in the vocabulary. */
  label: number;
}

export interface ImageAugment {
  /** Random-resized-crop area range (M3AE's `clip_resizedcrop`: (0.9, 1.0)). */
  scale: readonly [number, number];
}

/** What every downstream batch is built with: its images, text, randomness and augmentation. */
interface DownstreamBatchInputs {
  images: ImageStore;
  tokenizer: TextTokenizer;
  textLength: number;
  seed: number;
  step: number;
  /** Training-time augmentation; evaluation batches use the centre crop. */
  augment?: ImageAugment;
}

export interface LabeledBatchOptions extends DownstreamBatchInputs {
  examples: readonly LabeledExample[];
  /** Dataset indices of this batch's examples, in batch order (they seed dropout and augmentation). */
  indices: ArrayLike<number>;
}

function checkIndices(indices: ArrayLike<number>, size: number, what: string): number[] {
  const out = Array.from(indices);
  out.forEach((i, b) => {
    if (!Number.isInteger(i) || i < 0 || i >= size) throw new RangeError(`${what} indices[${b}]: got ${String(i)}; expected an integer in [0, ${size})`);
  });
  return out;
}

async function fillImages(paths: readonly string[], indices: readonly number[], o: Pick<DownstreamBatchInputs, 'images' | 'seed' | 'step' | 'augment'>, out: Float32Array): Promise<void> {
  const H = o.images.size;
  const plane = 3 * H * H;
  const rgbs = await Promise.all(
    paths.map((p, b) => (o.augment ? o.images.crop(p, sampleSeed(o.seed, o.step, indices[b] as number, 'augment'), o.augment.scale) : o.images.center(p))),
  );
  rgbs.forEach((rgb, b) => normalizeRgb(rgb.data, rgb.width, rgb.height, out, b * plane));
}

/** A batch of (image, text, label) examples: VQA (text = question) and image–text classification. */
export async function buildLabeledBatch(o: LabeledBatchOptions): Promise<DownstreamBatch> {
  const idx = checkIndices(o.indices, o.examples.length, 'batch');
  const B = idx.length;
  const H = o.images.size;
  const L = o.textLength;
  const batch = emptyDownstreamBatch(B, 1, H, L);
  const ex = idx.map((i) => o.examples[i] as LabeledExample);
  await fillImages(ex.map((e) => e.imagePath), idx, o, batch.pixelValues);
  ex.forEach((e, b) => {
    const enc = o.tokenizer.encode(e.text, L);
    batch.inputIds.set(enc.inputIds, b * L);
    batch.attentionMask.set(enc.attentionMask, b * L);
    batch.labels[b] = e.label;
    batch.dropoutSeeds[b] = sampleSeed(o.seed, o.step, idx[b] as number, 'dropout') | 0;
  });
  return batch;
}

export interface RetrievalBatchOptions extends DownstreamBatchInputs {
  set: RetrievalSet;
  /** Pair indices of this batch (each pair: its image, its caption as the positive). */
  indices: ArrayLike<number>;
  /** Captions drawn per example besides the true one. @defaultValue 15 (M3AE's `draw_false_text`) */
  negatives?: number;
}

/**
 * The retrieval negatives of pair `pairIndex` at `step`: `count` captions drawn uniformly (with repetition, as the
 * official random `get_false_text`) among the captions not linked to the pair's image.
 */
export function retrievalNegatives(set: RetrievalSet, pairIndex: number, count: number, seed: number, step: number): Int32Array {
  const image = set.pairImage[pairIndex] as number;
  const own = new Set(set.imageTexts[image]);
  const eligible = set.texts.length - own.size;
  if (eligible < 1) throw new RangeError(`retrieval: image ${set.images[image]} is linked to every caption; no negative can be drawn`);
  const rng = new CounterRng(seed, step, pairIndex, DOWNSTREAM_STREAMS.irtrNegatives);
  const out = new Int32Array(count);
  for (let k = 0; k < count; k++) {
    let t: number;
    do t = rng.nextInt(set.texts.length);
    while (own.has(t));
    out[k] = t;
  }
  return out;
}

/** A retrieval training batch: each example is one image with its true caption first, then `negatives` others. */
export async function buildRetrievalBatch(o: RetrievalBatchOptions): Promise<DownstreamBatch> {
  const idx = checkIndices(o.indices, o.set.pairs.length, 'retrieval batch');
  const negatives = o.negatives ?? 15;
  if (!Number.isInteger(negatives) || negatives < 1) throw new RangeError(`negatives must be a positive integer, got ${String(negatives)}`);
  const B = idx.length;
  const K = 1 + negatives;
  const H = o.images.size;
  const L = o.textLength;
  const batch = emptyDownstreamBatch(B, K, H, L);
  await fillImages(idx.map((i) => o.set.images[o.set.pairImage[i] as number] as string), idx, o, batch.pixelValues);
  const encoded = new Map<number, { inputIds: Int32Array; attentionMask: Int32Array }>();
  const encode = (t: number): { inputIds: Int32Array; attentionMask: Int32Array } => {
    let e = encoded.get(t);
    if (!e) {
      e = o.tokenizer.encode(o.set.texts[t] as string, L);
      encoded.set(t, e);
    }
    return e;
  };
  idx.forEach((i, b) => {
    const texts = [o.set.pairText[i] as number, ...retrievalNegatives(o.set, i, negatives, o.seed, o.step)];
    const drop = new CounterRng(o.seed, o.step, i, 'dropout');
    texts.forEach((t, k) => {
      const row = b * K + k;
      const e = encode(t);
      batch.inputIds.set(e.inputIds, row * L);
      batch.attentionMask.set(e.attentionMask, row * L);
      batch.dropoutSeeds[row] = drop.nextUint32() | 0;
    });
    batch.labels[b] = 0;
  });
  return batch;
}

/** Images only (retrieval evaluation): [n,3,H,W], centre crop. */
export async function buildImageBatch(paths: readonly string[], images: ImageStore): Promise<Float32Array> {
  const out = new Float32Array(paths.length * 3 * images.size * images.size);
  await fillImages(paths, paths.map((_, i) => i), { images, seed: 0, step: 0 }, out);
  return out;
}

/** Texts only (retrieval evaluation): ids and masks [n, L]. */
export function buildTextBatch(texts: readonly string[], tokenizer: TextTokenizer, textLength: number): { inputIds: Int32Array; attentionMask: Int32Array } {
  const inputIds = new Int32Array(texts.length * textLength);
  const attentionMask = new Int32Array(texts.length * textLength);
  texts.forEach((t, i) => {
    const e = tokenizer.encode(t, textLength);
    inputIds.set(e.inputIds, i * textLength);
    attentionMask.set(e.attentionMask, i * textLength);
  });
  return { inputIds, attentionMask };
}
