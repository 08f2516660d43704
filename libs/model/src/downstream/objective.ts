import * as tf from '@tensorflow/tfjs-core';
import { numPatches, patchDim } from '../config.js';
import { Dropout } from '../dropout.js';
import { keyBiasFromMask, patchesForEmbedding, robertaPositionIds } from '../inputs.js';
import { fusion, pooler, textEncoder, visionEncoder, type Ctx, type TextInputs } from '../network.js';
import type { Params } from '../ops.js';
import type { DownstreamModel } from './downstream-model.js';
import { headForward } from './heads.js';
import { vqaLossOf } from './tasks.js';
import type { DownstreamBatch } from '@m3ae/protocol';

/*
 * The downstream objectives on one (micro-)batch, with the same exact decomposition as pre-training: a micro-batch
 * returns the gradient of its *summed* per-example loss divided by the global example count N, so the sum over
 * micro-batches is the gradient of the whole batch, on one process or many.
 *
 * - VQA (`compute_vqa`): binary cross-entropy with logits over every answer against the one-hot target of the
 *   normalised answer, summed over answers (the official mean × number of answers) and averaged over questions.
 *   An answer not in the vocabulary has an all-zero target (it can never be predicted, and counts wrong).
 *   The head's `loss` (`VqaLoss`) may instead average the BCE over answers or use softmax cross-entropy over them
 *   (an unseen answer then adds nothing to the loss).
 * - Classification (`compute_cls`): softmax cross-entropy.
 * - Retrieval (`compute_irtr`): each image with K captions (the true one first) is scored by `irtr_head`; softmax
 *   cross-entropy over the K scores with the true caption as the target.
 * Every example runs one unmasked (image, text) pass (`infer(mask_text=False, mask_image=False)`), and the head reads
 * the joint feature [text pooler, image pooler] (2·hidden).
 */

export type { DownstreamBatch };


export class DownstreamBatchError extends Error {
  override readonly name = 'DownstreamBatchError';
}

/** Dropout pass id of the downstream forward pass (pre-training uses 1–3). */
const DOWNSTREAM_PASS = 4;

export function validateDownstreamBatch(model: DownstreamModel, b: DownstreamBatch): void {
  const c = model.config;
  const fail = (field: string, got: string, expected: string): never => {
    throw new DownstreamBatchError(`batch.${field}: got ${got}; expected ${expected}`);
  };
  if (!Number.isInteger(b.batchSize) || b.batchSize < 1) fail('batchSize', String(b.batchSize), 'a positive integer');
  if (!Number.isInteger(b.textsPerExample) || b.textsPerExample < 1) fail('textsPerExample', String(b.textsPerExample), 'a positive integer');
  if (model.head.kind !== 'retrieval' && b.textsPerExample !== 1) fail('textsPerExample', String(b.textsPerExample), `1 for a ${model.head.kind} head`);
  if (b.imageSize !== c.imageSize) fail('imageSize', String(b.imageSize), `the model's imageSize ${c.imageSize}`);
  if (!Number.isInteger(b.textLength) || b.textLength < 1 || b.textLength > c.maxTextLength) fail('textLength', String(b.textLength), `an integer in [1, ${c.maxTextLength}]`);
  const rows = b.batchSize * b.textsPerExample;
  const sizes: [keyof DownstreamBatch, number][] = [
    ['pixelValues', b.batchSize * 3 * c.imageSize * c.imageSize],
    ['inputIds', rows * b.textLength],
    ['attentionMask', rows * b.textLength],
    ['labels', b.batchSize],
    ['dropoutSeeds', rows],
  ];
  for (const [field, n] of sizes) {
    const a = b[field] as ArrayLike<number>;
    if (!a || a.length !== n) fail(field, `${a ? a.length : 'nothing'} values`, String(n));
  }
  for (let i = 0; i < b.inputIds.length; i++) {
    const v = b.inputIds[i] as number;
    if (v < 0 || v >= c.vocabSize) fail(`inputIds[${i}]`, String(v), `a token id in [0, ${c.vocabSize})`);
  }
  for (let r = 0; r < rows; r++) if (b.attentionMask[r * b.textLength] !== 1) fail(`attentionMask[${r * b.textLength}]`, String(b.attentionMask[r * b.textLength]), '1 (every text starts with a real token)');
  const classes = model.head.kind === 'retrieval' ? b.textsPerExample : model.head.outputs;
  for (let i = 0; i < b.batchSize; i++) {
    const l = b.labels[i] as number;
    if (!Number.isInteger(l) || l < -1 || l >= classes) fail(`labels[${i}]`, String(l), `-1 or an index in [0, ${classes})`);
  }
}

function paramsOf(model: DownstreamModel): Params {
  return {
    get(name: string): tf.Tensor {
      const t = model.params.get(name);
      if (!t) throw new Error(`missing parameter ${JSON.stringify(name)}`);
      return t;
    },
  };
}

/** Text tensors for the text encoder (inside a tidy). */
function textInputs(ids: Int32Array, mask: Int32Array, rows: number, L: number, pad: number): TextInputs {
  const notPad = new Float32Array(ids.length);
  for (let i = 0; i < ids.length; i++) notPad[i] = ids[i] === pad ? 0 : 1;
  return {
    ids: tf.tensor1d(ids, 'int32'),
    positionIds: tf.tensor1d(robertaPositionIds(ids, rows, L, pad), 'int32'),
    notPad: tf.tensor2d(notPad, [ids.length, 1]),
    keyBias: tf.tensor4d(keyBiasFromMask(mask), [rows, 1, 1, L]),
    length: L,
  };
}

/** Repeats each image's token rows K times: [B·T, D] → [B·K·T, D] (a broadcast, whose gradient is the sum). */
function repeatPerText(image: tf.Tensor2D, B: number, K: number, T: number): tf.Tensor2D {
  if (K === 1) return image;
  const D = image.shape[1];
  return tf.reshape(tf.broadcastTo(tf.reshape(image, [B, 1, T, D]), [B, K, T, D]), [B * K * T, D]);
}

/** Joint features [B·K, 2h] of an unmasked pass; each image is encoded once and shared by its K texts. */
function jointFeatures(model: DownstreamModel, p: Params, b: DownstreamBatch, drop: Dropout): tf.Tensor2D {
  const c = model.config;
  const B = b.batchSize;
  const K = b.textsPerExample;
  const L = b.textLength;
  const N = numPatches(c);
  const rows = B * K;
  const text = textInputs(b.inputIds, b.attentionMask, rows, L, c.padTokenId);
  const ctx: Ctx = { p, c, batch: rows, drop };
  const t = textEncoder(ctx, text);
  // A text-only model sees one blank image for every example (its answer cannot depend on the image).
  const patches: tf.Tensor2D = model.head.inputs === 'text' ? tf.zeros([B * N, patchDim(c)]) : tf.tensor2d(patchesForEmbedding(b.pixelValues, B, c.imageSize, c.patchSize), [B * N, patchDim(c)]);
  const image = repeatPerText(visionEncoder({ ...ctx, batch: B }, patches), B, K, N + 1);
  const fused = fusion(ctx, t, L, image, N + 1, text.keyBias, c.fusionLayers, 'both');
  return tf.concat([pooler(ctx, 'multi_modal_language_pooler', fused.text, L), pooler(ctx, 'multi_modal_vision_pooler', fused.image, N + 1)], 1);
}

/** Task logits [B, classes] (retrieval: the K scores of each example). */
function taskLogits(model: DownstreamModel, p: Params, b: DownstreamBatch, drop: Dropout): tf.Tensor2D {
  const out = headForward(p, model.head, jointFeatures(model, p, b, drop));
  return model.head.kind === 'retrieval' ? tf.reshape(out, [b.batchSize, b.textsPerExample]) : out;
}

/** One-hot targets [B, classes] built in JavaScript (label −1 → an all-zero row). */
function oneHot(labels: Int32Array, classes: number): Float32Array {
  const t = new Float32Array(labels.length * classes);
  labels.forEach((l, i) => {
    if (l >= 0) t[i * classes + l] = 1;
  });
  return t;
}

/** Σ over examples of the task loss (see the module comment). */
function summedLoss(model: DownstreamModel, logits: tf.Tensor2D, labels: Int32Array): tf.Scalar {
  const classes = logits.shape[1];
  const target = tf.tensor2d(oneHot(labels, classes), [labels.length, classes]);
  const loss = model.head.kind === 'vqa' ? vqaLossOf(model.head) : 'softmax';
  if (loss !== 'softmax') {
    // Stable BCE with logits: max(x, 0) − x·t + log(1 + e^−|x|).
    const sum: tf.Scalar = tf.sum(tf.add(tf.sub(tf.relu(logits), tf.mul(logits, target)), tf.log1p(tf.exp(tf.neg(tf.abs(logits))))));
    return loss === 'bce-mean' ? (tf.div(sum, classes) as tf.Scalar) : sum;
  }
  return tf.neg(tf.sum(tf.mul(tf.logSoftmax(logits), target)));
}

function correctCount(logits: Float32Array, labels: Int32Array, classes: number): number {
  let correct = 0;
  labels.forEach((l, i) => {
    if (l >= 0 && argmaxRow(logits, i, classes) === l) correct++;
  });
  return correct;
}

/** Index of the largest value of row `r` (the first on ties, as torch.max). */
export function argmaxRow(values: ArrayLike<number>, r: number, cols: number): number {
  let best = 0;
  let bestV = -Infinity;
  for (let j = 0; j < cols; j++) {
    const v = values[r * cols + j] as number;
    if (v > bestV) {
      bestV = v;
      best = j;
    }
  }
  return best;
}

export interface TaskTotals {
  /** Σ per-example loss. */
  sum: number;
  /** Examples (the count the loss is normalised by). */
  count: number;
  /** Examples whose top output is the label. */
  correct: number;
}

export interface TaskGradients extends TaskTotals {
  /** ∇ sum / normalizer, flat in the downstream manifest's order. */
  grads: Float32Array;
}

export interface TaskGradientOptions {
  /** N: examples in the global batch (≥ this micro-batch's). */
  normalizer: number;
  /** Dropout (from batch.dropoutSeeds) when true. */
  training: boolean;
}

/**
 * Gradient of Σ_examples loss / N for one micro-batch; summing micro-batches gives the global batch's gradient.
 * One asynchronous read: the gradients flattened on the device in manifest order, then the loss sum and logits.
 */
export async function computeTaskGradients(model: DownstreamModel, batch: DownstreamBatch, opts: TaskGradientOptions): Promise<TaskGradients> {
  validateDownstreamBatch(model, batch);
  const N = opts.normalizer;
  if (!(Number.isFinite(N) && N >= batch.batchSize)) {
    throw new DownstreamBatchError(`normalizer: got ${String(N)}; expected the global example count (at least this batch's ${batch.batchSize})`);
  }
  // Filled inside the differentiated function (kept past its tidy), read and freed below.
  const kept: { sum?: tf.Scalar; logits?: tf.Tensor2D } = {};
  let all: tf.Tensor1D | undefined;
  try {
    all = tf.tidy(() => {
      const p = paramsOf(model);
      const drop = opts.training ? new Dropout(batch.dropoutSeeds, model.config.dropout, DOWNSTREAM_PASS) : Dropout.off();
      const loss = (): tf.Scalar => {
        const logits = taskLogits(model, p, batch, drop);
        const sum = summedLoss(model, logits, batch.labels);
        kept.sum = tf.keep(sum);
        kept.logits = tf.keep(logits);
        return tf.div(sum, N);
      };
      const result = tf.variableGrads(loss, model.trainable as tf.Variable[]);
      if (!kept.sum || !kept.logits) throw new Error('computeTaskGradients: the loss was not evaluated');
      const parts: tf.Tensor[] = [];
      for (const e of model.manifest.entries) {
        if (e.offset === null) continue;
        const v = model.param(e.name);
        parts.push(tf.reshape(result.grads[v.name] ?? tf.zerosLike(v), [-1]));
      }
      parts.push(tf.reshape(kept.sum, [1]), tf.reshape(kept.logits, [-1]));
      return tf.concat(parts) as tf.Tensor1D;
    });
    const values = (await all.data()) as Float32Array;
    const size = model.manifest.size;
    const classes = kept.logits?.shape[1] ?? 0;
    const logits = values.subarray(size + 1);
    return { sum: values[size] as number, count: batch.batchSize, correct: correctCount(logits, batch.labels, classes), grads: values.subarray(0, size) };
  } finally {
    all?.dispose();
    kept.sum?.dispose();
    kept.logits?.dispose();
  }
}

export interface TaskOutputs extends TaskTotals {
  /** [B, classes] logits (retrieval: [B, K] scores), row-major. */
  logits: Float32Array;
  classes: number;
}

/** Forward only, no dropout (evaluation): the loss totals and the logits, read in one transfer. */
export async function computeTaskOutputs(model: DownstreamModel, batch: DownstreamBatch): Promise<TaskOutputs> {
  validateDownstreamBatch(model, batch);
  const [all, classes] = tf.tidy(() => {
    const logits = taskLogits(model, paramsOf(model), batch, Dropout.off());
    return [tf.concat([tf.reshape(summedLoss(model, logits, batch.labels), [1]), tf.reshape(logits, [-1])]), logits.shape[1]] as const;
  });
  try {
    const values = (await all.data()) as Float32Array;
    const logits = values.slice(1);
    return { sum: values[0] as number, count: batch.batchSize, correct: correctCount(logits, batch.labels, classes), logits, classes };
  } finally {
    all.dispose();
  }
}

export interface RetrievalScoreInput {
  /** [nImages, 3, H, W] */
  pixelValues: Float32Array;
  nImages: number;
  /** [nTexts, L] */
  inputIds: Int32Array;
  attentionMask: Int32Array;
  nTexts: number;
  textLength: number;
}

export interface RetrievalScoreOptions {
  /** Texts fused with one image at once. @defaultValue 32 */
  textChunk?: number;
  /** Images encoded at once. @defaultValue 16 */
  imageChunk?: number;
  /** Called after each image's row of scores. */
  onProgress?: (imagesDone: number) => void;
}

/**
 * The score of every (image, text) pair, [nImages × nTexts] row-major: `irtr_head` on the joint feature of an
 * unmasked pass (for a model fresh from pre-training: the ITM head's "match" logit — zero-shot retrieval, as the
 * official `compute_irtr_recall`). Each image and each text goes through its encoder once; only the fusion module
 * runs per pair.
 */
export async function retrievalScores(model: DownstreamModel, input: RetrievalScoreInput, options: RetrievalScoreOptions = {}): Promise<Float32Array> {
  if (model.head.kind !== 'retrieval') throw new Error(`retrievalScores: the model has a ${model.head.kind} head; expected a retrieval head`);
  const c = model.config;
  const { nImages, nTexts, textLength: L } = input;
  const N = numPatches(c);
  const T = N + 1;
  const D = c.hiddenSize;
  const plane = 3 * c.imageSize * c.imageSize;
  if (input.pixelValues.length !== nImages * plane) throw new DownstreamBatchError(`pixelValues: got ${input.pixelValues.length} values; expected ${nImages * plane}`);
  if (input.inputIds.length !== nTexts * L || input.attentionMask.length !== nTexts * L) {
    throw new DownstreamBatchError(`inputIds/attentionMask: got ${input.inputIds.length}/${input.attentionMask.length} values; expected ${nTexts * L}`);
  }
  const textChunk = options.textChunk ?? 32;
  const imageChunk = options.imageChunk ?? 16;
  const p = paramsOf(model);
  const drop = Dropout.off();
  const scores = new Float32Array(nImages * nTexts);
  const keep: tf.Tensor[] = [];
  try {
    const imageParts: tf.Tensor2D[] = [];
    for (let i0 = 0; i0 < nImages; i0 += imageChunk) {
      const n = Math.min(imageChunk, nImages - i0);
      const part = tf.tidy(() => {
        const px = input.pixelValues.subarray(i0 * plane, (i0 + n) * plane);
        return visionEncoder({ p, c, batch: n, drop }, tf.tensor2d(patchesForEmbedding(px, n, c.imageSize, c.patchSize), [n * N, patchDim(c)]));
      });
      keep.push(part);
      imageParts.push(part);
    }
    const textParts: { x: tf.Tensor2D; keyBias: tf.Tensor4D; t0: number; n: number }[] = [];
    for (let t0 = 0; t0 < nTexts; t0 += textChunk) {
      const n = Math.min(textChunk, nTexts - t0);
      const ids = input.inputIds.subarray(t0 * L, (t0 + n) * L);
      const mask = input.attentionMask.subarray(t0 * L, (t0 + n) * L);
      const [x, keyBias] = tf.tidy(() => {
        const ti = textInputs(ids, mask, n, L, c.padTokenId);
        return [textEncoder({ p, c, batch: n, drop }, ti), tf.clone(ti.keyBias)] as [tf.Tensor2D, tf.Tensor4D];
      });
      keep.push(x, keyBias);
      textParts.push({ x, keyBias, t0, n });
    }
    for (let i = 0; i < nImages; i++) {
      const part = imageParts[Math.floor(i / imageChunk)] as tf.Tensor2D;
      const row = i % imageChunk;
      for (const tp of textParts) {
        const out = tf.tidy(() => {
          const img = tf.slice(part, [row * T, 0], [T, D]);
          const image: tf.Tensor2D = tf.reshape(tf.broadcastTo(tf.reshape(img, [1, T, D]), [tp.n, T, D]), [tp.n * T, D]);
          const ctx: Ctx = { p, c, batch: tp.n, drop };
          const fused = fusion(ctx, tp.x, L, image, T, tp.keyBias, c.fusionLayers, 'both');
          const joint = tf.concat([pooler(ctx, 'multi_modal_language_pooler', fused.text, L), pooler(ctx, 'multi_modal_vision_pooler', fused.image, T)], 1);
          return headForward(p, model.head, joint);
        });
        try {
          scores.set((await out.data()) as Float32Array, i * nTexts + tp.t0);
        } finally {
          out.dispose();
        }
      }
      options.onProgress?.(i + 1);
    }
  } finally {
    for (const t of keep) t.dispose();
  }
  return scores;
}
