import * as tf from '@tensorflow/tfjs-core';
import { deviceIdle } from './backend.js';
import { trimTextPadding, validateBatch, type PretrainBatch } from './batch.js';
import { mimKeepCount, mimReadoutLayer, numPatches, OBJECTIVE_NAMES, patchDim, type M3AEConfig, type ObjectiveName } from './config.js';
import { Dropout } from './dropout.js';
import { keyBiasFromMask, mimPlan, mimTargets, patchesForEmbedding, robertaPositionIds } from './inputs.js';
import type { M3AEModel } from './model.js';
import { crossEntropySum, fusion, gatherRows, itmHead, mimDecoder, mimPredict, mlmHead, pooler, textEncoder, visionEncoder, type Ctx, type TextInputs } from './network.js';
import { flatConcat } from './kernels/device.js';
import { paramsFromMap, withWeightTransposeCache, type Params } from './ops.js';

/** Global counts N_o the summed losses are divided by (see `computeGradients`); > 0 for every enabled objective. */
export interface LossNormalizers {
  mlm: number;
  mim: number;
  itm: number;
}

export interface LossTotals {
  /** S_{o,k}: summed per-item losses (per masked token, per masked patch, per pair). */
  sums: { mlm: number; mim: number; itm: number };
  /** Local item counts: masked tokens, masked patches, pairs (0 for a disabled objective). */
  counts: { mlm: number; mim: number; itm: number };
  /** Correct predictions (argmax = label) among the counted MLM tokens and ITM pairs. */
  correct: { mlm: number; itm: number };
}

export interface MicroBatchResult extends LossTotals {
  /** ∇ Σ_o w_o · S_{o,k} / N_o, flat in manifest order (trainable parameters only). */
  grads: Float32Array;
}

export interface ComputeGradientsOptions {
  normalizers: LossNormalizers;
  /** Dropout on (driven by batch.dropoutSeeds) when true. */
  training: boolean;
  /**
   * Filled with where the call's time went (benchmarks): `dispatchMs` until every kernel is enqueued (on the
   * synchronous CPU backends this is the whole computation), `deviceMs` waiting for the device to finish after
   * that (`deviceIdle`), `readbackMs` the one transfer of gradients and losses. Costs one extra device sync.
   */
  timing?: StepTiming;
  /**
   * `longest` (default): text padded to the longest text of the micro-batch (`trimTextPadding`), less work for the
   * same result; `as-batched`: the batch's own padding, for comparisons.
   */
  textPadding?: TextPadding;
}

export type TextPadding = 'longest' | 'as-batched';

export interface StepTiming {
  dispatchMs: number;
  deviceMs: number;
  readbackMs: number;
}

/**
 * The item counts of a batch per objective (masked tokens, masked patches, pairs; 0 when disabled): for one
 * global batch these are the normalizers N_o.
 */
export function batchCounts(config: M3AEConfig, batch: PretrainBatch): LossNormalizers {
  let mlm = 0;
  for (const l of batch.mlmLabels) if (l !== -100) mlm++;
  const N = numPatches(config);
  return {
    mlm: enabled(config, 'mlm') ? mlm : 0,
    mim: enabled(config, 'mim') ? batch.batchSize * (N - mimKeepCount(config)) : 0,
    itm: enabled(config, 'itm') ? batch.batchSize : 0,
  };
}

/** The per-pass dropout stream ids (part of the determinism contract: never renumber). */
const PASS_ID: Record<ObjectiveName, number> = { mlm: 1, mim: 2, itm: 3 };

/** Everything derived from a batch in plain JS before any tensor is made. */
interface Prepared {
  B: number;
  L: number;
  counts: { mlm: number; mim: number; itm: number };
  keyBias: Float32Array;
  text: { ids: Int32Array; positions: Int32Array; notPad: Float32Array };
  mlmText: { ids: Int32Array; positions: Int32Array; notPad: Float32Array };
  mlmRows: Int32Array;
  mlmLabels: Int32Array;
  itmLabels: Int32Array;
  imagePatches?: Float32Array;
  itmPatches?: Float32Array;
  mim?: { patches: Float32Array; patchIndex: Int32Array; restoreIndex: Int32Array; maskedRows: Int32Array; targets: Float32Array };
}

function textArrays(ids: Int32Array, B: number, L: number, pad: number): Prepared['text'] {
  const notPad = new Float32Array(ids.length);
  for (let i = 0; i < ids.length; i++) notPad[i] = ids[i] === pad ? 0 : 1;
  return { ids, positions: robertaPositionIds(ids, B, L, pad), notPad };
}

function enabled(c: M3AEConfig, o: ObjectiveName): boolean {
  return c.objectives[o].enabled;
}

function prepare(c: M3AEConfig, batch: PretrainBatch, padding: TextPadding = 'longest'): Prepared {
  const b = padding === 'longest' ? trimTextPadding(batch) : batch;
  const B = b.batchSize;
  const L = b.textLength;
  const S = c.imageSize;
  const P = c.patchSize;
  const prep: Prepared = {
    B,
    L,
    counts: { mlm: 0, mim: 0, itm: 0 },
    keyBias: keyBiasFromMask(b.attentionMask),
    text: textArrays(b.inputIds, B, L, c.padTokenId),
    mlmText: textArrays(b.mlmInputIds, B, L, c.padTokenId),
    mlmRows: new Int32Array(0),
    mlmLabels: new Int32Array(0),
    itmLabels: b.itmLabels,
  };
  if (enabled(c, 'mlm')) {
    const rows: number[] = [];
    const labels: number[] = [];
    for (let i = 0; i < b.mlmLabels.length; i++) {
      const l = b.mlmLabels[i] ?? -100;
      if (l !== -100) {
        rows.push(i);
        labels.push(l);
      }
    }
    prep.mlmRows = Int32Array.from(rows);
    prep.mlmLabels = Int32Array.from(labels);
    prep.counts.mlm = rows.length;
    if (rows.length > 0) prep.imagePatches = patchesForEmbedding(b.pixelValues, B, S, P);
  }
  if (enabled(c, 'itm')) {
    prep.counts.itm = B;
    prep.itmPatches = patchesForEmbedding(b.itmPixelValues, B, S, P);
  }
  if (enabled(c, 'mim')) {
    const N = numPatches(c);
    const keep = mimKeepCount(c);
    const { keptIdx, patchIndex, restoreIndex, masked } = mimPlan(b.mimNoise, B, N, keep);
    const maskedSample: number[] = [];
    const maskedPatch: number[] = [];
    const maskedRows: number[] = [];
    for (let s = 0; s < B; s++) {
      for (let n = 0; n < N; n++) {
        if (masked[s * N + n] === 1) {
          maskedSample.push(s);
          maskedPatch.push(n);
          maskedRows.push(s * (N + 1) + 1 + n);
        }
      }
    }
    prep.counts.mim = maskedRows.length;
    prep.mim = {
      patches: patchesForEmbedding(b.pixelValues, B, S, P, { indices: keptIdx, perSample: keep }),
      patchIndex,
      restoreIndex,
      maskedRows: Int32Array.from(maskedRows),
      targets: mimTargets(b.pixelValues, S, P, { sample: Int32Array.from(maskedSample), patch: Int32Array.from(maskedPatch) }, c.normPixLoss),
    };
  }
  return prep;
}

function textTensors(t: Prepared['text'], keyBias: tf.Tensor4D, L: number): TextInputs {
  return {
    ids: tf.tensor1d(t.ids, 'int32'),
    positionIds: tf.tensor1d(t.positions, 'int32'),
    notPad: tf.tensor2d(t.notPad, [t.notPad.length, 1]),
    keyBias,
    length: L,
  };
}

interface PassResult {
  sum: tf.Scalar;
  correct?: tf.Scalar;
}

/** The three objectives, each its own forward pass as in the official `objectives.compute_*`. */
function runPass(o: ObjectiveName, p: Params, c: M3AEConfig, prep: Prepared, keyBias: tf.Tensor4D, drop: Dropout): PassResult {
  const B = prep.B;
  const L = prep.L;
  const ctx: Ctx = { p, c, batch: B, drop };
  const N = numPatches(c);
  const dim = patchDim(c);
  switch (o) {
    case 'mlm': {
      // Masked text + full image; only the final text features at masked positions reach the loss.
      const text = textEncoder(ctx, textTensors(prep.mlmText, keyBias, L));
      const image = visionEncoder(ctx, tf.tensor2d(prep.imagePatches ?? new Float32Array(0), [B * N, dim]));
      const fused = fusion(ctx, text, L, image, N + 1, keyBias, c.fusionLayers, 'text');
      const rows = gatherRows(fused.text, tf.tensor1d(prep.mlmRows, 'int32'));
      return crossEntropySum(mlmHead(ctx, rows), tf.tensor1d(prep.mlmLabels, 'int32'));
    }
    case 'mim': {
      // Full text + masked image; the decoder reads the image side after mimLayer fusion layers.
      const m = prep.mim;
      if (!m) throw new Error('mim inputs missing');
      const keep = mimKeepCount(c);
      const text = textEncoder(ctx, textTensors(prep.text, keyBias, L));
      const image = visionEncoder(ctx, tf.tensor2d(m.patches, [B * keep, dim]), tf.tensor1d(m.patchIndex, 'int32'));
      const fused = fusion(ctx, text, L, image, keep + 1, keyBias, mimReadoutLayer(c), 'image');
      const decoded = mimDecoder(ctx, fused.image, tf.tensor1d(m.restoreIndex, 'int32'));
      const pred = mimPredict(ctx, gatherRows(decoded, tf.tensor1d(m.maskedRows, 'int32')));
      const target = tf.tensor2d(m.targets, [m.maskedRows.length, dim]);
      return { sum: tf.div(tf.sum(tf.squaredDifference(pred, target)), dim) };
    }
    case 'itm': {
      const text = textEncoder(ctx, textTensors(prep.text, keyBias, L));
      const image = visionEncoder(ctx, tf.tensor2d(prep.itmPatches ?? new Float32Array(0), [B * N, dim]));
      const fused = fusion(ctx, text, L, image, N + 1, keyBias, c.fusionLayers, 'pooled');
      const joint = tf.concat([pooler(ctx, 'multi_modal_language_pooler', fused.text, 1), pooler(ctx, 'multi_modal_vision_pooler', fused.image, 1)], 1);
      return crossEntropySum(itmHead(ctx, joint), tf.tensor1d(prep.itmLabels, 'int32'));
    }
  }
}

function activeObjectives(c: M3AEConfig, prep: Prepared): ObjectiveName[] {
  return OBJECTIVE_NAMES.filter((o) => enabled(c, o) && prep.counts[o] > 0);
}

function checkNormalizers(c: M3AEConfig, n: LossNormalizers, prep: Prepared): void {
  for (const o of OBJECTIVE_NAMES) {
    if (!enabled(c, o) || prep.counts[o] === 0) continue;
    const v = n[o];
    if (!(typeof v === 'number' && Number.isFinite(v) && v > 0)) {
      throw new Error(`normalizers.${o}: got ${String(v)}; expected a positive global count (objective ${o} is enabled)`);
    }
    if (v < prep.counts[o]) throw new Error(`normalizers.${o}: got ${v}; expected at least this micro-batch's count ${prep.counts[o]}`);
  }
}

function emptyTotals(prep: Prepared): LossTotals {
  return { sums: { mlm: 0, mim: 0, itm: 0 }, counts: { ...prep.counts }, correct: { mlm: 0, itm: 0 } };
}

/**
 * Gradient of Σ_o w_o · S_{o,k} / N_o for one micro-batch: summing the results of K
 * micro-batches in any split gives the gradient of the whole batch. Dropout (when `training`) depends only on
 * each sample's dropout seed.
 *
 * Reads are asynchronous only (the webgpu backend cannot read synchronously under Node): the gradients are
 * summed over the objectives and flattened on the device in manifest order, then read back in one transfer
 * together with the loss sums and correct counts.
 */
export async function computeGradients(model: M3AEModel, batch: PretrainBatch, opts: ComputeGradientsOptions): Promise<MicroBatchResult> {
  const started = performance.now();
  const c = model.config;
  validateBatch(c, batch);
  const prep = prepare(c, batch, opts.textPadding);
  checkNormalizers(c, opts.normalizers, prep);
  const totals = emptyTotals(prep);
  const objectives = activeObjectives(c, prep);
  if (objectives.length === 0) return { ...totals, grads: new Float32Array(model.manifest.size) };

  // One backward sweep per objective: only one pass's activations are alive at a time (peak memory ~⅓, which
  // decides the largest micro-batch the wasm heap holds). Each sweep's gradients are added (float32, in the
  // objectives' fixed order, as the flat host buffer did) to the flat running sum on the device.
  let flat: tf.Tensor1D | undefined;
  const stats: tf.Tensor[] = [];
  // A parameter an objective does not reach has a zero gradient: one zero tensor per shape for the whole call
  // (about 180 fills per `tiny` step otherwise, each a kernel dispatch on a GPU).
  const zeros = new Map<string, tf.Tensor>();
  const zerosOf = (shape: number[]): tf.Tensor => {
    const key = shape.join('x');
    let z = zeros.get(key);
    if (!z) zeros.set(key, (z = tf.keep(tf.zeros(shape))));
    return z;
  };
  try {
    withWeightTransposeCache(() => {
      for (const o of objectives) {
        const next = tf.tidy(() => {
          const p = paramsFromMap(model.params);
          const keyBias = tf.tensor4d(prep.keyBias, [prep.B, 1, 1, prep.L]);
          const drop = opts.training ? new Dropout(batch.dropoutSeeds, c.dropout, PASS_ID[o]) : Dropout.off();
          const loss = (): tf.Scalar => {
            const r = runPass(o, p, c, prep, keyBias, drop);
            stats.push(tf.keep(tf.stack([r.sum, r.correct ?? tf.scalar(0)])));
            return tf.mul(r.sum, c.objectives[o].weight / opts.normalizers[o]) as tf.Scalar;
          };
          const result = tf.variableGrads(loss, model.trainable as tf.Variable[]);
          const parts: tf.Tensor[] = [];
          for (const e of model.manifest.entries) {
            if (e.offset === null) continue;
            const v = model.param(e.name);
            parts.push(result.grads[v.name] ?? zerosOf(v.shape));
          }
          const g = flatConcat(parts);
          return flat ? tf.add<tf.Tensor1D>(flat, g) : g;
        });
        flat?.dispose();
        flat = next;
      }
    });
    if (!flat) throw new Error('computeGradients: no objective ran');
    let t = performance.now();
    if (opts.timing) {
      opts.timing.dispatchMs = t - started;
      await deviceIdle();
      opts.timing.deviceMs = performance.now() - t;
      t = performance.now();
    }
    // Losses and counts ride on the gradient buffer's transfer: one read per micro-batch.
    const values = await readFlat(flat, stats);
    if (opts.timing) opts.timing.readbackMs = performance.now() - t;
    const grads = values.subarray(0, model.manifest.size);
    objectives.forEach((o, i) => {
      const base = model.manifest.size + 2 * i;
      totals.sums[o] = values[base] as number;
      if (o !== 'mim') totals.correct[o] = values[base + 1] as number;
    });
    return { ...totals, grads };
  } finally {
    flat?.dispose();
    tf.dispose(stats);
    tf.dispose([...zeros.values()]);
  }
}

/** One transfer: `head` then every tensor of `tail` flattened, as float32 (the stats are small integers or sums). */
async function readFlat(head: tf.Tensor1D, tail: readonly tf.Tensor[]): Promise<Float32Array> {
  const all = tf.tidy(() => flatConcat([head, ...tail]));
  try {
    return (await all.data()) as Float32Array;
  } finally {
    all.dispose();
  }
}

/** Forward only (evaluation): summed losses, counts and correct predictions of one batch, read in one transfer. */
export async function computeLosses(model: M3AEModel, batch: PretrainBatch, opts: { training: boolean } = { training: false }): Promise<LossTotals> {
  const c = model.config;
  validateBatch(c, batch);
  const prep = prepare(c, batch);
  const totals = emptyTotals(prep);
  const objectives = activeObjectives(c, prep);
  if (objectives.length === 0) return totals;
  const stats = tf.tidy(() =>
    tf.stack(
      objectives.map((o) => {
        const p = paramsFromMap(model.params);
        const keyBias = tf.tensor4d(prep.keyBias, [prep.B, 1, 1, prep.L]);
        const drop = opts.training ? new Dropout(batch.dropoutSeeds, c.dropout, PASS_ID[o]) : Dropout.off();
        const r = runPass(o, p, c, prep, keyBias, drop);
        return tf.stack([r.sum, r.correct ?? tf.scalar(0)]);
      }),
    ),
  );
  try {
    const values = await stats.data();
    objectives.forEach((o, i) => {
      totals.sums[o] = values[2 * i] as number;
      if (o !== 'mim') totals.correct[o] = values[2 * i + 1] as number;
    });
    return totals;
  } finally {
    stats.dispose();
  }
}
