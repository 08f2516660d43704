import * as tf from '@tensorflow/tfjs-core';
import { numPatches, patchDim, type M3AEConfig } from './config.js';
import { Dropout } from './dropout.js';
import { keyBiasFromMask, patchesForEmbedding, robertaPositionIds } from './inputs.js';
import type { M3AEModel } from './model.js';
import { fusion, gatherRows, mlmHead, textEncoder, visionEncoder, type Ctx } from './network.js';
import { paramsFromMap } from './ops.js';

/**
 * Masked-token fill-in with the MLM head (the pre-training MLM pass in evaluation mode: masked text, full
 * image, all fusion layers, the head on the masked positions), for one text against several images, so the
 * effect of the image on the predicted words is visible on a single example.
 */

/** Spellings of the mask placeholder in a text: RoBERTa's and BERT's. */
export const MASK_MARKERS = ['<mask>', '[MASK]'] as const;

/** What {@link encodeMaskedText} needs: structurally @m3ae/data's `TextTokenizer`. */
export interface FillTokenizer {
  readonly special: { readonly mask: number };
  encodeContent(text: string): Int32Array;
  assemble(content: ArrayLike<number>, maxLength: number): { inputIds: Int32Array; attentionMask: Int32Array };
}

export interface MaskedText {
  /** [L] with the mask token id at every placeholder. */
  inputIds: Int32Array;
  attentionMask: Int32Array;
  /** Positions in inputIds of the mask tokens, in order. */
  positions: number[];
}

/**
 * Tokenises a text with `<mask>` (or `[MASK]`) placeholders: the pieces between placeholders are encoded
 * separately and joined with the tokenizer's mask id (a space before a placeholder belongs to it, as
 * RoBERTa's `<mask>` strips left), then framed with the special tokens and padded to `maxLength`.
 */
export function encodeMaskedText(tokenizer: FillTokenizer, text: string, maxLength: number): MaskedText {
  const pattern = new RegExp(MASK_MARKERS.map((m) => m.replace(/[[\]]/g, '\\$&')).join('|'), 'g');
  const pieces = text.split(pattern);
  if (pieces.length < 2) throw new RangeError(`text ${JSON.stringify(text)}: expected at least one ${MASK_MARKERS.join(' or ')} placeholder`);
  const content: number[] = [];
  pieces.forEach((piece, i) => {
    const last = i === pieces.length - 1;
    const chunk = last ? piece : piece.replace(/\s+$/, '');
    if (chunk.length > 0) content.push(...tokenizer.encodeContent(chunk));
    if (!last) content.push(tokenizer.special.mask);
  });
  const enc = tokenizer.assemble(content, maxLength);
  const positions: number[] = [];
  enc.inputIds.forEach((id, i) => {
    if (id === tokenizer.special.mask) positions.push(i);
  });
  if (positions.length !== pieces.length - 1) {
    throw new RangeError(`text ${JSON.stringify(text)}: ${pieces.length - 1} placeholder(s) but only ${positions.length} fit in ${maxLength} tokens; shorten the text`);
  }
  return { inputIds: enc.inputIds, attentionMask: enc.attentionMask, positions };
}

/** A uniform image at CLIP's mean colour (all zeros once normalised): an image that says nothing. */
export function blankImage(config: M3AEConfig): Float32Array {
  return new Float32Array(3 * config.imageSize * config.imageSize);
}

export interface FillCandidate {
  id: number;
  probability: number;
}

export interface FillResult {
  /** Mask positions in the text, as given. */
  positions: number[];
  /** [image][position] → the top-k tokens, most probable first. */
  top: FillCandidate[][][];
  /** [image] → softmax over the vocabulary at each position, [positions × vocabSize]. */
  probabilities: Float32Array[];
}

/**
 * The MLM head's distribution at each masked position of one text, paired in turn with each image ([3,H,W],
 * CLIP-normalised). Evaluation mode: no dropout.
 */
export async function fillMasked(model: M3AEModel, text: MaskedText, images: readonly Float32Array[], options: { topK?: number } = {}): Promise<FillResult> {
  const c = model.config;
  const topK = options.topK ?? 5;
  const B = images.length;
  const L = text.inputIds.length;
  const M = text.positions.length;
  const V = c.vocabSize;
  const plane = 3 * c.imageSize * c.imageSize;
  if (B < 1) throw new RangeError('images: expected at least one image');
  if (!(Number.isInteger(topK) && topK >= 1 && topK <= V)) throw new RangeError(`topK: got ${topK}; expected an integer in [1, ${V}]`);
  if (!(L >= 1 && L <= c.maxTextLength)) throw new RangeError(`inputIds: got ${L} tokens; expected 1 to maxTextLength = ${c.maxTextLength}`);
  if (text.attentionMask.length !== L) throw new RangeError(`attentionMask: got ${text.attentionMask.length} values; expected ${L}`);
  if (M === 0) throw new RangeError('positions: expected at least one masked position');
  for (const p of text.positions) if (!(Number.isInteger(p) && p >= 0 && p < L)) throw new RangeError(`positions: got ${p}; expected an index in [0, ${L})`);
  text.inputIds.forEach((v, i) => {
    if (!(v >= 0 && v < V)) throw new RangeError(`inputIds[${i}]: got ${v}; expected a token id in [0, ${V})`);
  });
  images.forEach((img, b) => {
    if (img.length !== plane) throw new RangeError(`images[${b}]: got ${img.length} values; expected 3×${c.imageSize}×${c.imageSize} = ${plane}`);
  });

  const ids = new Int32Array(B * L);
  const attention = new Int32Array(B * L);
  const pixels = new Float32Array(B * plane);
  const rows = new Int32Array(B * M);
  for (let b = 0; b < B; b++) {
    ids.set(text.inputIds, b * L);
    attention.set(text.attentionMask, b * L);
    pixels.set(images[b] as Float32Array, b * plane);
    text.positions.forEach((p, m) => (rows[b * M + m] = b * L + p));
  }
  const notPad = new Float32Array(B * L);
  for (let i = 0; i < notPad.length; i++) notPad[i] = ids[i] === c.padTokenId ? 0 : 1;
  const N = numPatches(c);
  const patches = patchesForEmbedding(pixels, B, c.imageSize, c.patchSize);
  const [probs, topValues, topIndices] = tf.tidy(() => {
    const ctx: Ctx = { p: paramsFromMap(model.params), c, batch: B, drop: Dropout.off() };
    const keyBias = tf.tensor4d(keyBiasFromMask(attention), [B, 1, 1, L]);
    const textOut = textEncoder(ctx, {
      ids: tf.tensor1d(ids, 'int32'),
      positionIds: tf.tensor1d(robertaPositionIds(ids, B, L, c.padTokenId), 'int32'),
      notPad: tf.tensor2d(notPad, [notPad.length, 1]),
      keyBias,
      length: L,
    });
    const image = visionEncoder(ctx, tf.tensor2d(patches, [B * N, patchDim(c)]));
    const fused = fusion(ctx, textOut, L, image, N + 1, keyBias, c.fusionLayers, 'text');
    const p = tf.softmax(mlmHead(ctx, gatherRows(fused.text, tf.tensor1d(rows, 'int32'))));
    const top = tf.topk(p, topK);
    return [p, top.values, top.indices];
  });
  let all: Float32Array;
  let values: Float32Array;
  let indices: Int32Array;
  try {
    [all, values, indices] = (await Promise.all([probs.data(), topValues.data(), topIndices.data()])) as [Float32Array, Float32Array, Int32Array];
  } finally {
    probs.dispose();
    topValues.dispose();
    topIndices.dispose();
  }
  const top: FillCandidate[][][] = [];
  const probabilities: Float32Array[] = [];
  for (let b = 0; b < B; b++) {
    probabilities.push(all.slice(b * M * V, (b + 1) * M * V));
    const perImage: FillCandidate[][] = [];
    for (let m = 0; m < M; m++) {
      const o = (b * M + m) * topK;
      perImage.push(Array.from({ length: topK }, (_, k) => ({ id: indices[o + k] as number, probability: values[o + k] as number })));
    }
    top.push(perImage);
  }
  return { positions: [...text.positions], top, probabilities };
}

/** Total variation distance ½·Σ|p − q| between two distributions over the same support. */
export function totalVariation(p: ArrayLike<number>, q: ArrayLike<number>): number {
  if (p.length !== q.length) throw new RangeError(`totalVariation: distributions of ${p.length} and ${q.length} values`);
  let s = 0;
  for (let i = 0; i < p.length; i++) s += Math.abs((p[i] as number) - (q[i] as number));
  return s / 2;
}
