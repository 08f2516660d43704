import * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { hash32 } from '../random.js';

/**
 * Kernels the model runs where its tensors live, registered under our own kernel names so that the model never
 * asks which backend runs: a backend with the kernel registered runs it on the device; any other backend runs
 * the portable definition (tfjs's own ops, or plain JavaScript). Two kinds:
 *
 * Exact — the device gives the same bits as the portable definition:
 * - `M3aeScatterAddRows`: out[idx[i]] += updates[i] in the order of i, from zero — the gradient of a row
 *   lookup. tfjs-backend-webgpu's scatter adds floats with atomics in whatever order the GPU's threads arrive,
 *   so its last bits vary from run to run; this one walks the rows of each index in order (as the CPU and
 *   wasm scatters do), so it is reproducible and bit-equal to them. Its bookkeeping (first position and count
 *   per row) uses integer atomics, exact in any order; only rows that repeat search for their next position.
 * - `M3aeDropoutMask`: the inverted-dropout mask of `Dropout` (libs/model/src/dropout.ts) made from per-sample
 *   keys, instead of hashed element by element in JavaScript and uploaded.
 * - `M3aeDropout`: x · mask with that mask's values made in the kernel itself, forward and backward (dy · mask):
 *   the same multiplications as `Dropout.apply2d`'s composite, in one kernel each way instead of about 5 and 2.
 *
 * Fused — the same maths in fewer kernels (a GPU step is bound by the number of dispatches); rounding differs from
 * the portable composite in the last bits, reproducibly (fixed reduction orders, no atomics):
 * - `M3aeLayerNorm` / `M3aeLayerNormGrad`: LayerNorm in one kernel each way, instead of 9 and about 12
 *   (`layerNormOp` in ops.ts is the portable definition): one program forward, four backward (row statistics, dx,
 *   and dγ, dβ as column sums).
 * - `M3aeGelu` / `M3aeGeluGrad`: GELU (erf form) in one kernel each way, instead of 5 and 7 (`gelu` in ops.ts).
 * - `M3aeQuickGelu` / `M3aeQuickGeluGrad`: CLIP's QuickGELU x·σ(1.702x) in one kernel each way, instead of 3 and
 *   about 8 (`quickGelu` in ops.ts; σ written as tfjs-backend-webgpu writes it).
 * - `M3aeAttentionProbs` / `M3aeAttentionProbsGrad`: attention probabilities — key bias, softmax over the keys,
 *   dropout mask — in one kernel each way, instead of 3 and about 6 (`attend` in ops.ts).
 *
 * Regrouped — the backend's own programs, bit for bit, called from one kernel instead of several (each tfjs kernel
 * is a JavaScript dispatch: tape, bookkeeping, a tensor; Reshape and Identity cost that too though they move no data):
 * - `M3aeDense` / `M3aeDenseGrad`: x·W + b as the backend's fused product on the 2-D operands (tfjs's
 *   `fused.matMul` wraps the same kernel in three Reshapes); dx = dy·Wᵀ, dW = xᵀ·dy and db = Σ_rows dy in one
 *   kernel instead of three (`dense` in ops.ts). db is one column-sum program of ours, in a fixed order (tfjs's Sum
 *   over rows transposes first: two programs), so its last bits differ from tfjs's Sum; the products are the
 *   backend's, bit for bit.
 * - `M3aeProjections1/2/3` / `M3aeProjectionsInputGrad`: the Linears of one input (an attention's queries, keys and
 *   values, an FFN's up-projection), forward the products of `M3aeDense`; backward, dx = Σᵢ dyᵢ·Wᵢᵀ as a chain of the backend's fused
 *   products, each adding the sum so far as its bias (last projection first, as the tape adds them: the same bits
 *   as separate `M3aeDense` gradients summed by the tape, without its Add programs); dWᵢ as `M3aeDenseGrad`'s, the dbᵢ
 *   in one column-sum program (`M3aeBiasGrads`, each summed as alone; split by buffer copies) where none is scaled.
 *   With `residual`, x itself is returned too, for a residual connection: its gradient starts the chain.
 * - `M3aeLayerNormResidual`: `M3aeLayerNorm` returning x too, for a residual connection (pre-LN blocks): x's gradient
 *   is `M3aeLayerNormGrad`'s dx program adding the residual's, without the tape's Add.
 * - `M3aeAttention` / `M3aeAttentionGrad`: multi-head attention from the [B·T, D] queries, keys and values to the
 *   [B·T, D] context — heads split, scores, `M3aeAttentionProbs`, weighted sum, heads merged — in one kernel each
 *   way instead of 7 and 9: three programs forward and five backward, the products reading and writing the heads in
 *   place (`headsProductProgram`, tiled and summed in order as the backend's packed product: on lavapipe the same
 *   bits as the split kernels, without their 8 transposes); the forward kernel also returns the scores and the
 *   probabilities for the gradient; the dropout mask on the probabilities is made in the row kernels from the
 *   per-sample keys (M3aeDropoutMask's values: no mask tensor, no mask program) (`multiHeadAttention` in ops.ts).
 * - `M3aeResidualAdd`: a + b of one shape (residual connections) by the backend's Add, its gradient dy to both
 *   (one copy): tfjs's Add saves both inputs (two Identity kernels) and reshapes dy twice for its gradient.
 * - `M3aeFlatConcat`: tensors flattened and concatenated (the step's gradients in manifest order) in one kernel
 *   instead of a Reshape each and the Concat, by buffer copies (commands, not programs); `M3aeFlatSplit` the inverse
 *   (the parameters of a new version: one upload of many, cut by copies).
 * - `M3aeHeads`: reshape → transpose → reshape in one kernel (the attention heads split and merged: `splitHeads`,
 *   `mergeHeads` in ops.ts), its gradient the same kernel inverted: 2 kernels each way and a saved copy become 1.
 */
export const SCATTER_ADD_ROWS = 'M3aeScatterAddRows';
export const DROPOUT_MASK = 'M3aeDropoutMask';
export const LAYER_NORM = 'M3aeLayerNorm';
export const LAYER_NORM_GRAD = 'M3aeLayerNormGrad';
export const LAYER_NORM_RESIDUAL = 'M3aeLayerNormResidual';
export const GELU = 'M3aeGelu';
export const GELU_GRAD = 'M3aeGeluGrad';
export const QUICK_GELU = 'M3aeQuickGelu';
export const QUICK_GELU_GRAD = 'M3aeQuickGeluGrad';
export const ATTENTION_PROBS = 'M3aeAttentionProbs';
export const ATTENTION_PROBS_GRAD = 'M3aeAttentionProbsGrad';
export const DENSE = 'M3aeDense';
export const DENSE_GRAD = 'M3aeDenseGrad';
export const HEADS = 'M3aeHeads';
export const DROPOUT = 'M3aeDropout';
export const FLAT_CONCAT = 'M3aeFlatConcat';
export const FLAT_SPLIT = 'M3aeFlatSplit';
export const RESIDUAL_ADD = 'M3aeResidualAdd';
export const ATTENTION = 'M3aeAttention';
export const ATTENTION_GRAD = 'M3aeAttentionGrad';
const PROJECTIONS = 'M3aeProjections';
export const PROJECTIONS_INPUT_GRAD = 'M3aeProjectionsInputGrad';
export const BIAS_GRADS = 'M3aeBiasGrads';

export function deviceKernel(name: string): boolean {
  return tf.getKernel(name, tf.getBackend()) !== undefined;
}

/** out [rows, D] with out[idx[i]] = Σ updates[i] over i in order (zero rows elsewhere); idx int32 [N], updates [N, D]. */
export function scatterAddRows(indices: tf.Tensor1D, updates: tf.Tensor2D, rows: number): tf.Tensor2D {
  if (deviceKernel(SCATTER_ADD_ROWS)) {
    return tf.engine().runKernel(SCATTER_ADD_ROWS, { indices, updates }, { rows }) as tf.Tensor2D;
  }
  return tf.scatterND(tf.reshape(indices, [-1, 1]), updates, [rows, updates.shape[1]]);
}

/** The multiplier of element i of a sample whose dropout key is `key`: 0 (dropped) or `keep`. */
export function dropoutValue(key: number, i: number, threshold: number, keep: number): number {
  // Compare 24-bit uniforms against an integer threshold: u < rate drops.
  return hash32(key ^ Math.imul(i, 0x9e3779b9)) >>> 8 < threshold ? 0 : keep;
}

/**
 * A sample's mask of shape `shape` (rank ≤ 3) seen as the leading corner of `canonical` (same rank, no smaller):
 * element (i0, i1, i2) takes the value of element index (i0·C1 + i1)·C2 + i2 of the canonical shape, so a mask
 * does not change when a sequence is cut shorter (text padded to the longest caption of a micro-batch).
 */
export interface MaskShape {
  shape: readonly number[];
  canonical: readonly number[];
}

/** [a0, a1, a2] and [c1, c2] of a mask shape, ranks below 3 padded with leading 1s; the error names the shapes. */
function rank3(m: MaskShape): { a: [number, number, number]; c1: number; c2: number } {
  const { shape, canonical } = m;
  if (shape.length > 3 || shape.length !== canonical.length || shape.some((d, i) => d > (canonical[i] ?? 0))) {
    throw new Error(`dropout mask: shape [${shape.join(', ')}] within canonical [${canonical.join(', ')}]; expected the same rank ≤ 3 and no dimension larger than the canonical one`);
  }
  const pad = (x: readonly number[]): number[] => [...Array<number>(3 - x.length).fill(1), ...x];
  const [a0, a1, a2] = pad(shape) as [number, number, number];
  const [, c1, c2] = pad(canonical) as [number, number, number];
  return { a: [a0, a1, a2], c1, c2 };
}

/**
 * A dropout site's mask not yet made (`Dropout.lazyMask`): per-sample keys, the shape [B, ...shape] it has and the
 * canonical shape it is indexed in, the threshold and the kept value. `keyedMask` makes it; the device's attention
 * kernels make its values where they use them.
 */
export interface MaskKeys {
  keys: Int32Array;
  shape: number[];
  canonical: number[];
  threshold: number;
  keep: number;
  /** The same keys where the device's kernels read them (`Dropout` on a backend with them). */
  device?: DeviceKeys;
}

/**
 * A dropout site's per-sample keys on the device: a table of many sites' keys (one upload for a forward pass, not one
 * per site and direction) and where this site's B keys start in it.
 */
export interface DeviceKeys {
  table: tf.Tensor1D;
  offset: number;
}

/** The mask tensor [B, ...shape] of `k`, as `Dropout.mask` returns it. */
export function keyedMask(k: MaskKeys): tf.Tensor {
  return tf.tidy(() => tf.reshape(dropoutMask(k.keys, { shape: k.shape, canonical: k.canonical }, k.threshold, k.keep), [k.keys.length, ...k.shape]));
}

/**
 * A float32 mask [keys.length, size of `m.shape`] of values 0 or `keep` (`dropoutValue` of every sample's key at the
 * canonical index of every element), made on the device when the backend has the kernel.
 */
export function dropoutMask(keys: Int32Array, m: MaskShape, threshold: number, keep: number): tf.Tensor2D {
  const { a, c1, c2 } = rank3(m);
  const per = a[0] * a[1] * a[2];
  if (deviceKernel(DROPOUT_MASK)) {
    return tf.tidy(() => tf.engine().runKernel(DROPOUT_MASK, { keys: tf.tensor1d(keys, 'int32') }, { per, a1: a[1], a2: a[2], c1, c2, threshold, keep }) as tf.Tensor2D);
  }
  const values = new Float32Array(keys.length * per);
  const keepF = Math.fround(keep);
  for (let b = 0; b < keys.length; b++) {
    const key = keys[b] ?? 0;
    let o = b * per;
    for (let i0 = 0; i0 < a[0]; i0++) {
      for (let i1 = 0; i1 < a[1]; i1++) {
        const row = (i0 * c1 + i1) * c2;
        for (let i2 = 0; i2 < a[2]; i2++) values[o++] = dropoutValue(key, row + i2, threshold, keepF);
      }
    }
  }
  return tf.tensor2d(values, [keys.length, per], 'float32');
}

/**
 * Saves `tensors` and `param` for a customGrad's gradient, except a parameter that is a model variable: that one is
 * read where it is (each save is an Identity kernel; a variable outlives the backward pass, and nothing assigns it
 * between a forward pass and its gradient). Returns what turns the saved list back into [...tensors, param].
 */
function saveUnlessVariable(save: tf.GradSaveFunc, tensors: tf.Tensor[], param: tf.Tensor): (saved: tf.Tensor[]) => tf.Tensor[] {
  if (param instanceof tf.Variable) {
    save(tensors);
    return (saved) => [...saved, param];
  }
  save([...tensors, param]);
  return (saved) => saved;
}

/**
 * LayerNorm over the last axis through the device's fused kernels (call only where `deviceKernel(LAYER_NORM)`):
 * y = (x − μ)·r·γ + β with r = 1/√(var + eps); the gradient recomputes μ and r from x, as the forward did.
 */
export function fusedLayerNorm(x: tf.Tensor2D, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor2D;
/**
 * With `residual`: [y, x], x again for a residual connection around the LayerNorm's consumer (one tensor, no copy);
 * the gradient of x is then the LayerNorm's plus that of the residual in one program (`M3aeLayerNormResidual`).
 */
export function fusedLayerNorm(x: tf.Tensor2D, gamma: tf.Tensor, beta: tf.Tensor, eps: number, residual: true): [tf.Tensor2D, tf.Tensor2D];
export function fusedLayerNorm(x: tf.Tensor2D, gamma: tf.Tensor, beta: tf.Tensor, eps: number, residual = false): tf.Tensor2D | [tf.Tensor2D, tf.Tensor2D] {
  if (residual) return tf.engine().runKernel(LAYER_NORM_RESIDUAL, { x, gamma, beta }, { eps }) as [tf.Tensor2D, tf.Tensor2D];
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xi, gi, bi] = args as [tf.Tensor2D, tf.Tensor1D, tf.Tensor1D];
    const keep = saveUnlessVariable(args[3] as tf.GradSaveFunc, [xi], gi);
    return {
      value: tf.engine().runKernel(LAYER_NORM, { x: xi, gamma: gi, beta: bi }, { eps }) as tf.Tensor2D,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, gs] = keep(saved) as [tf.Tensor2D, tf.Tensor1D];
        return tf.engine().runKernel(LAYER_NORM_GRAD, { dy, x: xs, gamma: gs }, { eps }) as tf.Tensor[];
      },
    };
  });
  return op(x, gamma, beta) as tf.Tensor2D;
}

/**
 * An activation through the device's fused kernels, one each way (call only where `deviceKernel(forward)`): GELU
 * (`GELU`, `GELU_GRAD`: x·Φ(x), dy·(Φ(x) + x·φ(x))) or QuickGELU (`QUICK_GELU`, `QUICK_GELU_GRAD`: x·σ(1.702x)).
 */
export function fusedActivation(x: tf.Tensor2D, forward: typeof GELU | typeof QUICK_GELU): tf.Tensor2D {
  const backward = forward === GELU ? GELU_GRAD : QUICK_GELU_GRAD;
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const xi = args[0] as tf.Tensor2D;
    (args[1] as tf.GradSaveFunc)([xi]);
    return {
      value: tf.engine().runKernel(forward, { x: xi }, {}) as tf.Tensor2D,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.engine().runKernel(backward, { dy, x: saved[0] as tf.Tensor }, {}) as tf.Tensor,
    };
  });
  return op(x) as tf.Tensor2D;
}

/**
 * softmax(scores + keyBias) · mask over the last axis through the device's fused kernels (call only where
 * `deviceKernel(ATTENTION_PROBS)`): scores [B, h, Tq, Tk], keyBias [B, 1, 1, Tk], mask [B, h, Tq, Tk]. The
 * gradient recomputes the probabilities from the scores.
 */
export function fusedAttentionProbs(scores: tf.Tensor4D, keyBias?: tf.Tensor, mask?: tf.Tensor): tf.Tensor4D {
  const attrs = { hasBias: keyBias !== undefined, hasMask: mask !== undefined };
  const named = ([sc, ...rest]: tf.Tensor[]): tf.NamedTensorMap => {
    const m: tf.NamedTensorMap = { scores: sc as tf.Tensor };
    if (keyBias) m['bias'] = rest.shift() as tf.Tensor;
    if (mask) m['mask'] = rest.shift() as tf.Tensor;
    return m;
  };
  // The bias and the mask are data, not inputs: they go through save() only to outlive the forward pass's tidy.
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const all = [args[0] as tf.Tensor4D, ...(keyBias ? [keyBias] : []), ...(mask ? [mask] : [])];
    (args[1] as tf.GradSaveFunc)(all);
    return {
      value: tf.engine().runKernel(ATTENTION_PROBS, named(all), attrs) as tf.Tensor4D,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.engine().runKernel(ATTENTION_PROBS_GRAD, { ...named(saved), dy }, attrs) as tf.Tensor,
    };
  });
  return op(scores) as tf.Tensor4D;
}

/**
 * x·W (+ b) for x [M, K], W [K, N] through the device's regrouped kernels (call only where `deviceKernel(DENSE)`):
 * the same products and sum as `dense` in ops.ts on that backend, in fewer kernels. `inputGrad` false: dx is zeros
 * (inputs that are data). `scale`: x·(s·W) + s·b as `linearScaled` in ops.ts (the scaled weights made inside the
 * kernel, and again for dx; dW and db scaled there too), instead of two multiplications each way outside it.
 */
export function fusedDense(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor | undefined, inputGrad: boolean, scale?: number): tf.Tensor2D {
  const hasBias = b !== undefined;
  const scaled: tf.NamedAttrMap = scale === undefined ? {} : { scale };
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xi, wi] = args as [tf.Tensor2D, tf.Tensor2D];
    const keep = saveUnlessVariable(args[args.length - 1] as tf.GradSaveFunc, [xi], wi);
    const inputs: tf.NamedTensorMap = { x: xi, w: wi };
    if (hasBias) inputs['bias'] = args[2] as tf.Tensor;
    return {
      value: tf.engine().runKernel(DENSE, inputs, scaled) as tf.Tensor2D,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, ws] = keep(saved) as [tf.Tensor2D, tf.Tensor2D];
        const out = tf.engine().runKernel(DENSE_GRAD, { dy, x: xs, w: ws }, { inputGrad, hasBias, ...scaled }) as tf.Tensor[];
        return inputGrad ? out : [tf.zerosLike(xs), ...out];
      },
    };
  });
  return (hasBias ? op(x, w, b) : op(x, w)) as tf.Tensor2D;
}

/** One projection of `fusedProjections`: weight [K, N], bias [N], and the scale of `fusedDense` (none: 1). */
export interface Projection {
  w: tf.Tensor2D;
  b: tf.Tensor;
  scale?: number;
}

/**
 * The gradient of `M3aeLayerNormResidual`: dx = the LayerNorm's dx + the residual's dy, in the dx program. Computed
 * when the tape asks (as customGrad does: what the tape does not take is released with its scope).
 */
const layerNormResidualGradient: tf.GradConfig = {
  kernelName: LAYER_NORM_RESIDUAL,
  inputsToSave: ['x', 'gamma'],
  gradFunc: (dy, saved, attrs) => {
    const [dyOut, dyResidual] = dy as [tf.Tensor, tf.Tensor];
    const [x, gamma] = saved as [tf.Tensor, tf.Tensor];
    const [dx, dGamma, dBeta] = tf.engine().runKernel(LAYER_NORM_GRAD, { dy: dyOut, x, gamma, addend: dyResidual }, attrs) as [tf.Tensor, tf.Tensor, tf.Tensor];
    return { x: () => dx, gamma: () => dGamma, beta: () => dBeta };
  },
};

/** The kernel of `fusedProjections` for n projections (inputs x, w0, b0, …, w(n−1), b(n−1)). */
export function projectionsKernel(n: number): string {
  return `${PROJECTIONS}${n}`;
}

/** How many projections of one input the model makes: one (an FFN's, cross-attention's queries), keys and values, or all three. */
const PROJECTION_COUNTS = [1, 2, 3] as const;

/**
 * x·Wᵢ + bᵢ for each projection (call only where `deviceKernel(projectionsKernel(3))`): the values of `fusedDense`
 * for each, with one gradient for x (`M3aeProjectionsInputGrad`: the products chained, no Add programs of the tape).
 * With `residual`, x itself follows as the last output, for a residual connection: its gradient joins the chain.
 */
export function fusedProjections(x: tf.Tensor2D, projections: readonly Projection[], residual = false): tf.Tensor2D[] {
  const inputs: tf.NamedTensorMap = { x };
  projections.forEach((p, i) => Object.assign(inputs, { [`w${i}`]: p.w, [`b${i}`]: p.b }));
  const scales = projections.map((p) => p.scale ?? 1);
  return tf.engine().runKernel(projectionsKernel(projections.length), inputs, { scales, residual }) as tf.Tensor2D[];
}

/**
 * The gradient of `M3aeProjections` of n projections, computed when the tape asks (as customGrad does). It saves x
 * and the weights (a registered gradient has no closure to read variables from: one saved copy more than n
 * `fusedDense`s, which read theirs where they are).
 */
function projectionsGradient(n: number): tf.GradConfig {
  const weights = Array.from({ length: n }, (_, i) => `w${i}`);
  return {
    kernelName: projectionsKernel(n),
    inputsToSave: ['x', ...weights],
    gradFunc: (dy, saved, attrs) => {
      const dys = Array.isArray(dy) ? dy : [dy];
      const { scales, residual } = attrs as unknown as { scales: number[]; residual: boolean };
      const [x, ...ws] = saved as [tf.Tensor2D, ...tf.Tensor2D[]];
      // dx: the products chained (the residual's dy, when x is also returned, first in the chain).
      const dx = tf.engine().runKernel(PROJECTIONS_INPUT_GRAD, [...ws.flatMap((w, i) => [dys[i] as tf.Tensor, w]), ...(residual ? [dys[n] as tf.Tensor] : [])] as unknown as tf.NamedTensorMap, { scales, residual }) as tf.Tensor;
      const grads: Record<string, () => tf.Tensor> = { x: () => dx };
      // The biases' gradients in one program where none is scaled (the operands share x's rows), else with their dW.
      const together = n > 1 && scales.every((scale) => scale === 1);
      const dbs = together ? (tf.engine().runKernel(BIAS_GRADS, dys.slice(0, n) as unknown as tf.NamedTensorMap, {}) as tf.Tensor[]) : undefined;
      ws.forEach((w, i) => {
        const scale = scales[i] as number;
        const [dW, db] = tf.engine().runKernel(DENSE_GRAD, { dy: dys[i] as tf.Tensor, x, w }, { inputGrad: false, hasBias: !together, ...(scale === 1 ? {} : { scale }) }) as [tf.Tensor, tf.Tensor?];
        grads[`w${i}`] = () => dW;
        grads[`b${i}`] = () => (dbs?.[i] ?? db) as tf.Tensor;
      });
      return grads;
    },
  };
}

/**
 * x · mask for x [B·rows, cols] (per-sample blocks of `per` = rows·cols elements), the mask being `dropoutMask`'s of
 * shape [rows, cols] for the B keys of `keys`, made inside the device's kernel each way (call only where
 * `deviceKernel(DROPOUT)`). With `residual` (x's shape): x · mask + residual in the same program (a residual connection
 * after dropout, as BERT's output layers), the residual's gradient dy itself.
 */
export function fusedDropout(x: tf.Tensor2D, keys: DeviceKeys, batch: number, threshold: number, keep: number, residual?: tf.Tensor2D): tf.Tensor2D {
  if (residual && residual.shape.join() !== x.shape.join()) throw new Error(`dropout and residual: shapes [${x.shape.join(', ')}] and [${residual.shape.join(', ')}] differ`);
  const attrs = { per: x.size / batch, threshold, keep, keyOffset: keys.offset };
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    // The keys' table outlives the forward pass's tidy through save() (a data input has no gradient).
    (args[args.length - 1] as tf.GradSaveFunc)([keys.table]);
    return {
      value: tf.engine().runKernel(DROPOUT, { x: args[0] as tf.Tensor, keys: keys.table, ...(residual ? { addend: args[1] as tf.Tensor } : {}) }, attrs) as tf.Tensor2D,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const dx = tf.engine().runKernel(DROPOUT, { x: dy, keys: saved[0] as tf.Tensor }, attrs) as tf.Tensor;
        // Two tensors: the gradients of two inputs are accumulated (and disposed) separately.
        return residual ? [dx, tf.clone(dy)] : dx;
      },
    };
  });
  return (residual ? op(x, residual) : op(x)) as tf.Tensor2D;
}

/**
 * `flat` [Σ sizes] cut into consecutive 1-D tensors of `sizes` elements (the inverse of `flatConcat`): by buffer copies
 * where the backend has it (`FLAT_SPLIT`: commands, not programs), else tf.split.
 */
export function flatSplit(flat: tf.Tensor1D, sizes: readonly number[]): tf.Tensor1D[] {
  const total = sizes.reduce((a, n) => a + n, 0);
  if (total !== flat.size) throw new Error(`flatSplit: sizes add up to ${total}; expected the ${flat.size} values of the flat tensor`);
  if (deviceKernel(FLAT_SPLIT)) return tf.engine().runKernel(FLAT_SPLIT, { x: flat }, { sizes: [...sizes] }) as tf.Tensor1D[];
  return tf.split(flat, [...sizes]) as tf.Tensor1D[];
}

/**
 * Every tensor flattened, concatenated in order: [Σ sizes]. One kernel where the backend has it (`FLAT_CONCAT`), else a
 * Reshape each and a Concat. No gradient (it collects gradients).
 */
export function flatConcat(tensors: readonly tf.Tensor[]): tf.Tensor1D {
  if (deviceKernel(FLAT_CONCAT)) return tf.engine().runKernel(FLAT_CONCAT, [...tensors] as unknown as tf.NamedTensorMap, {}) as tf.Tensor1D;
  return tf.concat(tensors.map((t) => tf.reshape(t, [-1]))) as tf.Tensor1D;
}

export interface HeadsShape {
  batch: number;
  /** Query and key tokens. */
  tq: number;
  tk: number;
  heads: number;
  /** What the scores are multiplied by before the softmax (a power of two, see `attentionProjections` in ops.ts); 1: none. */
  queryScale?: number;
}

/**
 * Multi-head attention through the device's kernels (call only where `deviceKernel(ATTENTION)`): q [B·Tq, D] (already
 * scaled, or scaled by the kernel: `dims.queryScale`), k and v [B·Tk, D], keyBias [B,1,1,Tk], probsMask [B,h,Tq,Tk] →
 * context [B·Tq, D]: the maths of `splitHeads`, `attend` and `mergeHeads`, with the heads read and written in place
 * (`headsProductProgram`).
 */
export function fusedAttention(q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D, dims: HeadsShape, keyBias?: tf.Tensor, mask?: MaskKeys): tf.Tensor2D {
  const attrs: tf.NamedAttrMap = { ...dims, queryScale: dims.queryScale ?? 1, hasBias: keyBias !== undefined, hasMask: mask !== undefined };
  if (mask) {
    // The mask's values are made in the kernels from the keys (as M3aeDropoutMask would make them): no mask tensor.
    const { a, c1, c2 } = rank3({ shape: mask.shape, canonical: mask.canonical });
    if (a.join() !== [dims.heads, dims.tq, dims.tk].join() || mask.keys.length !== dims.batch) {
      throw new Error(`attention: a dropout mask of [${mask.keys.length}, ${mask.shape.join(', ')}]; expected [${dims.batch}, ${dims.heads}, ${dims.tq}, ${dims.tk}]`);
    }
    if (!mask.device) throw new Error('attention: a dropout mask without its keys on the device (Dropout.lazyMask on this backend gives them)');
    Object.assign(attrs, { c1, c2, threshold: mask.threshold, keep: mask.keep, keyOffset: mask.device.offset });
  }
  const table = mask?.device?.table;
  const named = ([qi, ki, vi, ...rest]: tf.Tensor[]): tf.NamedTensorMap => {
    const m: tf.NamedTensorMap = { q: qi as tf.Tensor, k: ki as tf.Tensor, v: vi as tf.Tensor };
    if (keyBias) m['bias'] = rest.shift() as tf.Tensor;
    if (table) m['keys'] = table;
    return m;
  };
  // The forward kernel also returns the scores and the probabilities, which the gradient uses with q, k and v (saved
  // instead of recomputed). The bias and the keys' table are data, not inputs: they go through save() only to outlive
  // the forward pass's tidy.
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const qkv = [args[0], args[1], args[2]] as tf.Tensor[];
    const inputs = named([...qkv, ...(keyBias ? [keyBias] : [])]);
    const [context, scores, probs] = tf.engine().runKernel(ATTENTION, inputs, attrs) as tf.Tensor[];
    (args[3] as tf.GradSaveFunc)([...qkv, scores as tf.Tensor, probs as tf.Tensor, ...(keyBias ? [keyBias] : []), ...(table ? [table] : [])]);
    return {
      value: context as tf.Tensor2D,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [qs, ks, vs, scoresSaved, probsSaved, ...rest] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, ...tf.Tensor[]];
          const g: tf.NamedTensorMap = { dy, q: qs, k: ks, v: vs, scores: scoresSaved, probs: probsSaved };
          if (keyBias) g['bias'] = rest.shift() as tf.Tensor;
          if (table) g['keys'] = rest.shift() as tf.Tensor;
          return tf.engine().runKernel(ATTENTION_GRAD, g, attrs) as tf.Tensor[];
        }),
    };
  });
  return op(q, k, v) as tf.Tensor2D;
}

/** a + b for a and b of one shape through the device's kernel (call only where `deviceKernel(RESIDUAL_ADD)`). */
export function fusedResidualAdd<T extends tf.Tensor>(a: T, b: T): T {
  if (a.shape.join() !== b.shape.join()) throw new Error(`residual add: shapes [${a.shape.join(', ')}] and [${b.shape.join(', ')}] differ`);
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
    value: tf.engine().runKernel(RESIDUAL_ADD, { a: args[0] as tf.Tensor, b: args[1] as tf.Tensor }, {}) as tf.Tensor,
    // Two tensors: the gradients of two inputs are accumulated (and disposed) separately.
    gradFunc: (dy: tf.Tensor) => [dy, tf.clone(dy)],
  }));
  return op(a, b) as T;
}

/** Inverse of a permutation. */
function inversePerm(perm: readonly number[]): number[] {
  const inv = new Array<number>(perm.length);
  perm.forEach((p, i) => (inv[p] = i));
  return inv;
}

/**
 * reshape(transpose(reshape(x, shape), perm), outShape) through the device's one kernel (call only where
 * `deviceKernel(HEADS)`); the gradient is the same kernel inverted.
 */
export function fusedReshapeTranspose(x: tf.Tensor, shape: number[], perm: number[], outShape: number[]): tf.Tensor {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const xi = args[0] as tf.Tensor;
    return {
      value: tf.engine().runKernel(HEADS, { x: xi }, { shape, perm, outShape }) as tf.Tensor,
      gradFunc: (dy: tf.Tensor) =>
        tf.engine().runKernel(HEADS, { x: dy }, { shape: perm.map((p) => shape[p] as number), perm: inversePerm(perm), outShape: [...xi.shape] }) as tf.Tensor,
    };
  });
  return op(x);
}

// ---- WebGPU definitions (tfjs-backend-webgpu's program interface; registered once, used only on that backend) ----

const WORKGROUP = 64;

/** A workgroup count as a dispatch grid: 2-D past WebGPU's 65,535 workgroups per dimension. */
function grid(groups: number): [number, number, number] {
  const x = Math.min(Math.max(groups, 1), 65535);
  return [x, Math.ceil(Math.max(groups, 1) / x), 1];
}

/**
 * One invocation per output element (guarded by the output size), or, with `threads`, that many invocations that
 * guard themselves (the body's own uniform) — for `atomic` programs, which update an output made beforehand.
 */
function flatProgram(outputShape: number[], shaderKey: string, variableNames: string[], uniforms: string, body: string, opts: { threads?: number; atomic?: boolean } = {}): WebGPUProgram {
  const size = opts.threads ?? outputShape.reduce((a, b) => a * b, 1);
  return {
    outputShape,
    shaderKey,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    dispatch: grid(Math.ceil(size / WORKGROUP)),
    variableNames,
    workgroupSize: [WORKGROUP, 1, 1],
    uniforms,
    size: opts.threads === undefined,
    atomic: opts.atomic === true,
    getUserCode: () => `
      fn main(index : i32) {
        ${opts.threads === undefined ? 'if (index >= uniforms.size) { return; }' : ''}
        ${body}
      }`,
  };
}

/** Rows handled by one workgroup each (2-D grid past WebGPU's 65,535 per dimension); `row` clamped, `live` false beyond. */
const ROW = 64;
function rowProgram(rows: number, outputShape: number[], shaderKey: string, variableNames: string[], uniforms: string, body: string, helpers = ''): WebGPUProgram {
  // Over the workgroup in a fixed tree (every invocation must call it: it holds barriers).
  const reduce = (name: string, combine: string): string => `
      fn ${name}(v : f32, lid : u32) -> f32 {
        red[lid] = v;
        workgroupBarrier();
        for (var s = ${ROW / 2}u; s > 0u; s = s >> 1u) {
          if (lid < s) { let a = red[lid]; let b = red[lid + s]; red[lid] = ${combine}; }
          workgroupBarrier();
        }
        let total = red[0];
        workgroupBarrier();
        return total;
      }`;
  return {
    outputShape,
    shaderKey,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    dispatch: grid(rows),
    variableNames,
    workgroupSize: [ROW, 1, 1],
    uniforms,
    getUserCode: () => `
      var<workgroup> red : array<f32, ${ROW}>;
      ${reduce('rowSum', 'a + b')}
      ${reduce('rowMax', 'max(a, b)')}
      ${helpers}
      fn main(index : i32) {
        let lid = localId.x;
        let rowId = i32(workgroupId.y * numWorkgroups.x + workgroupId.x);
        let live = rowId < uniforms.rows;
        let row = min(rowId, uniforms.rows - 1);
        let base = row * uniforms.d;
        ${body}
      }`,
  };
}

/** WGSL: μ ("mean") and r ("rstd") of the row at "base" of "x", as every LayerNorm kernel computes them. */
const ROW_STATS = `
        var s = 0.0;
        for (var c = i32(lid); c < uniforms.d; c = c + ${ROW}) { s = s + x[base + c]; }
        let mean = rowSum(s, lid) / f32(uniforms.d);
        var q = 0.0;
        for (var c = i32(lid); c < uniforms.d; c = c + ${ROW}) { let t = x[base + c] - mean; q = q + t * t; }
        let rstd = inverseSqrt(rowSum(q, lid) / f32(uniforms.d) + uniforms.eps);`;

/** Columns per workgroup of `columnSumProgram`, and the row lanes that share each column. */
const COLUMNS = 16;
const LANES = 16;

/**
 * out[c] = scale · Σ_r value(r, c) over the rows of a [rows, d] operand (a bias or LayerNorm parameter gradient), in
 * one program: a workgroup per 16 columns, 16 lanes per column summing rows lane, lane + 16, … in order, the lanes
 * combined in a fixed tree — the same bits every time (no atomics), and rows read 16 columns at a time. `value` is a
 * WGSL expression of `r`, `c` and `i` = r·d + c. With `groups` > 1 the output is [groups · d]: group g's sums at
 * [g·d, (g+1)·d), `value` also seeing `g` (several sums of one operand in one program, each in the order above).
 */
function columnSumProgram(d: number, shaderKey: string, variableNames: string[], value: string, groups = 1, helpers = ''): WebGPUProgram {
  return {
    outputShape: [groups * d],
    shaderKey: `${shaderKey}_${groups}`,
    dispatchLayout: { x: [0] },
    dispatch: grid(Math.ceil((groups * d) / COLUMNS)),
    variableNames,
    workgroupSize: [COLUMNS * LANES, 1, 1],
    uniforms: 'rows : i32, d : i32, scale : f32,',
    getUserCode: () => `
      var<workgroup> part : array<f32, ${COLUMNS * LANES}>;
      ${helpers}
      fn main(index : i32) {
        let lid = i32(localId.x);
        let col = i32(workgroupId.y * numWorkgroups.x + workgroupId.x) * ${COLUMNS} + lid % ${COLUMNS};
        let g = col / uniforms.d;
        let c = col - g * uniforms.d;
        let lane = lid / ${COLUMNS};
        var sum = 0.0;
        if (col < ${groups} * uniforms.d) {
          for (var r = lane; r < uniforms.rows; r = r + ${LANES}) { let i = r * uniforms.d + c; sum = sum + ${value}; }
        }
        part[lid] = sum;
        workgroupBarrier();
        for (var k = ${LANES / 2}; k > 0; k = k >> 1u) {
          if (lane < k) { part[lid] = part[lid] + part[lid + k * ${COLUMNS}]; }
          workgroupBarrier();
        }
        if (lane == 0 && col < ${groups} * uniforms.d) { result[col] = part[lid] * uniforms.scale; }
      }`,
  };
}

/** Σ_rows dy: the plain column sum (a bias gradient, LayerNorm's dβ). */
function rowSumProgram(d: number): WebGPUProgram {
  return columnSumProgram(d, 'm3ae_col_sum', ['dy'], 'dy[i]');
}

/** Σ_rows dyᵢ for n operands of one shape (the biases' gradients of `M3aeProjections`): a group each, in one program. */
function rowSumsProgram(n: number, d: number): WebGPUProgram {
  const names = Array.from({ length: n }, (_, i) => `dy${i}`);
  const pick = names.slice(0, -1).map((v, i) => `if (g == ${i}) { return ${v}[i]; }`).join(' ');
  return columnSumProgram(d, 'm3ae_col_sums', names, 'dyOf(g, i)', n, `fn dyOf(g : i32, i : i32) -> f32 { ${pick} return ${names[n - 1] as string}[i]; }`);
}

function columnSumUniforms(rows: number, d: number, scale = 1): Uniforms {
  return [{ type: 'int32', data: [rows] }, { type: 'int32', data: [d] }, { type: 'float32', data: [scale] }];
}

/** `headsProductProgram`'s tiles: 32 × 32 outputs per workgroup of 8 × 8 invocations (4 × 4 each), inner steps of 32. */
const TILE = 32;
const THREADS = 8;
const PER = TILE / THREADS;

/**
 * The three products of attention, with the heads read and written in place in the [B·T, D] activations (head hh of
 * token row r at columns hh·dh … hh·dh + dh − 1) instead of split and merged by transposes; bh = b·h + hh:
 * - `scores`: out[bh, i, j] = Σ_t x[b·tq + i, hh·dh + t] · y[b·tk + j, hh·dh + t] → [B, h, tq, tk] (q·kᵀ; dy·vᵀ);
 * - `context`: out[b·tq + i, hh·dh + j] = Σ_t p[bh, i, t] · y[b·tk + t, hh·dh + j] → [B·tq, D] (probs·v; dScores·k);
 * - `transposed`: out[b·tk + i, hh·dh + j] = Σ_t p[bh, t, i] · y[b·tq + t, hh·dh + j] → [B·tk, D] (probsᵀ·dy;
 *   dScoresᵀ·q).
 * Tiled as tfjs-backend-webgpu's packed product (32 × 32 outputs per workgroup, 4 × 4 per invocation, the inner
 * dimension in steps of 32 through workgroup memory), each operand loaded along its contiguous dimension; every
 * element sums t in order from zero (the same bits every run, no atomics).
 */
type HeadsProduct = 'scores' | 'context' | 'transposed';
function headsProductProgram(kind: HeadsProduct, outputShape: number[], batchHeads: number, m: number, n: number): WebGPUProgram {
  // a(i, t) and b(t, j) as WGSL expressions, the contiguous dimension of each, and where out(i, j) goes.
  const d = 'uniforms.h * uniforms.dh';
  const head = 'hh * uniforms.dh';
  const spec: Record<HeadsProduct, { a: string; aAlong: 'i' | 't'; b: string; bAlong: 't' | 'j'; out: string }> = {
    scores: {
      a: `x[(bb * uniforms.tq + i) * ${d} + ${head} + t]`,
      aAlong: 't',
      b: `y[(bb * uniforms.tk + j) * ${d} + ${head} + t]`,
      bAlong: 't',
      out: '(bh * uniforms.tq + i) * uniforms.tk + j',
    },
    context: {
      a: 'x[(bh * uniforms.tq + i) * uniforms.tk + t]',
      aAlong: 't',
      b: `y[(bb * uniforms.tk + t) * ${d} + ${head} + j]`,
      bAlong: 'j',
      out: `(bb * uniforms.tq + i) * ${d} + ${head} + j`,
    },
    transposed: {
      a: 'x[(bh * uniforms.tq + t) * uniforms.tk + i]',
      aAlong: 'i',
      b: `y[(bb * uniforms.tq + t) * ${d} + ${head} + j]`,
      bAlong: 'j',
      out: `(bb * uniforms.tk + i) * ${d} + ${head} + j`,
    },
  };
  const k = spec[kind];
  // Element e of a tile, loaded by invocation l in round r (e = r·64 + l): consecutive invocations read consecutive
  // addresses of the operand's contiguous dimension.
  const aAt = k.aAlong === 't' ? ['e / TILE', 'e % TILE'] : ['e % TILE', 'e / TILE'];
  const bAt = k.bAlong === 'j' ? ['e / TILE', 'e % TILE'] : ['e % TILE', 'e / TILE'];
  const threads = THREADS * THREADS;
  return {
    outputShape,
    shaderKey: `m3ae_heads_product_${kind}`,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    dispatch: [Math.ceil(n / TILE), Math.ceil(m / TILE), batchHeads],
    variableNames: ['x', 'y'],
    workgroupSize: [THREADS, THREADS, 1],
    uniforms: 'm : i32, n : i32, inner : i32, h : i32, dh : i32, tq : i32, tk : i32,',
    getUserCode: () => `
      const TILE = ${TILE};
      var<workgroup> tileA : array<array<f32, ${TILE}>, ${TILE}>;
      var<workgroup> tileB : array<array<f32, ${TILE}>, ${TILE}>;
      fn loadA(bh : i32, bb : i32, hh : i32, i : i32, t : i32) -> f32 {
        if (i >= uniforms.m || t >= uniforms.inner) { return 0.0; }
        return ${k.a};
      }
      fn loadB(bh : i32, bb : i32, hh : i32, t : i32, j : i32) -> f32 {
        if (t >= uniforms.inner || j >= uniforms.n) { return 0.0; }
        return ${k.b};
      }
      fn main(index : i32) {
        let lx = i32(localId.x);
        let ly = i32(localId.y);
        let l = ly * ${THREADS} + lx;
        let bh = i32(workgroupId.z);
        let bb = bh / uniforms.h;
        let hh = bh - bb * uniforms.h;
        let i0 = i32(workgroupId.y) * TILE;
        let j0 = i32(workgroupId.x) * TILE;
        var acc : array<array<f32, ${PER}>, ${PER}>;
        for (var t0 = 0; t0 < uniforms.inner; t0 = t0 + TILE) {
          for (var r = 0; r < ${(TILE * TILE) / threads}; r = r + 1) {
            let e = r * ${threads} + l;
            let ai = ${aAt[0]};
            let at = ${aAt[1]};
            tileA[ai][at] = loadA(bh, bb, hh, i0 + ai, t0 + at);
            let bt = ${bAt[0]};
            let bj = ${bAt[1]};
            tileB[bt][bj] = loadB(bh, bb, hh, t0 + bt, j0 + bj);
          }
          workgroupBarrier();
          for (var t = 0; t < TILE; t = t + 1) {
            var b : array<f32, ${PER}>;
            for (var c = 0; c < ${PER}; c = c + 1) { b[c] = tileB[t][lx * ${PER} + c]; }
            for (var r = 0; r < ${PER}; r = r + 1) {
              let a = tileA[ly * ${PER} + r][t];
              for (var c = 0; c < ${PER}; c = c + 1) { acc[r][c] = acc[r][c] + a * b[c]; }
            }
          }
          workgroupBarrier();
        }
        for (var r = 0; r < ${PER}; r = r + 1) {
          for (var c = 0; c < ${PER}; c = c + 1) {
            let i = i0 + ly * ${PER} + r;
            let j = j0 + lx * ${PER} + c;
            if (i < uniforms.m && j < uniforms.n) { result[${k.out}] = acc[r][c]; }
          }
        }
      }`,
  };
}

/** WGSL: Φ(a) = ½(1 + erf(a/√2)) as "cdf", erf by Abramowitz–Stegun 7.1.26 (tfjs's own erf, constants and all). */
const NORMAL_CDF = `
        let z = a * ${Math.SQRT1_2};
        let za = abs(z);
        let t = 1.0 / (1.0 + ${tf.backend_util.ERF_P} * za);
        let erf = sign(z) * (1.0 - (((((${tf.backend_util.ERF_A5} * t + ${tf.backend_util.ERF_A4}) * t) + ${tf.backend_util.ERF_A3}) * t + ${tf.backend_util.ERF_A2}) * t + ${tf.backend_util.ERF_A1}) * t * exp(-za * za));
        let cdf = 0.5 * erf + 0.5;`;

/**
 * WGSL: `dropoutValue(key, i, threshold, keep)` as "m" (u32 arithmetic wraps as Math.imul does), the key sample b's:
 * `keys[b]`, or `keys[uniforms.keyOffset + b]` in a table of sites (`DeviceKeys`).
 */
const TABLE_KEY = 'keys[uniforms.keyOffset + b]';
const dropoutValueWgsl = (key = 'keys[b]'): string => `
          var x = bitcast<u32>(${key}) ^ (u32(i) * 0x9e3779b9u);
          x = x ^ (x >> 16u);
          x = x * 0x7feb352du;
          x = x ^ (x >> 15u);
          x = x * 0x846ca68bu;
          x = x ^ (x >> 16u);
          let m = select(uniforms.keep, 0.0, (x >> 8u) < u32(uniforms.threshold));`;

type Uniforms = Parameters<WebGPUBackend['runWebGPUProgram']>[3];

/** What a buffer copy needs of tfjs-backend-webgpu's backend: its tensor storage and command encoder. */
interface CopyingBackend {
  makeTensorInfo(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  uploadToGPU(dataId: tf.DataId): void;
  tensorMap: { get(dataId: tf.DataId): { resource: unknown } };
  commandQueueOwnedIds: WeakSet<tf.DataId>;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  commandEncoder: { copyBufferToBuffer(source: unknown, sourceOffset: number, target: unknown, targetOffset: number, size: number): void };
}
/**
 * Records float32 buffer copies (offsets and sizes in elements) on the backend's command encoder, for kernels that
 * place or split data without a program: `targets` get their buffers first. Every buffer copied from or to is owned
 * by the queue until it is submitted (a tensor disposed before that keeps its buffer till then).
 */
function copier(backend: object, targets: tf.TensorInfo[]): (from: tf.TensorInfo, fromOffset: number, to: tf.TensorInfo, toOffset: number, n: number) => void {
  const b = backend as unknown as CopyingBackend;
  for (const t of targets) {
    b.uploadToGPU(t.dataId);
    b.commandQueueOwnedIds.add(t.dataId);
  }
  // Copies are recorded outside a compute pass (an upload of a source records its own copy the same way).
  b.ensureCommandEncoderReady();
  b.endComputePassEncoder();
  return (from, fromOffset, to, toOffset, n) => {
    b.uploadToGPU(from.dataId);
    b.commandQueueOwnedIds.add(from.dataId);
    b.commandEncoder.copyBufferToBuffer(b.tensorMap.get(from.dataId).resource, 4 * fromOffset, b.tensorMap.get(to.dataId).resource, 4 * toOffset, 4 * n);
  };
}

/** `x` (float32, flat) cut into consecutive 1-D tensors of `sizes` elements by buffer copies. */
function splitByCopies(backend: object, x: tf.TensorInfo, sizes: number[]): tf.TensorInfo[] {
  const b = backend as unknown as CopyingBackend;
  const outs = sizes.map((n) => b.makeTensorInfo([n], 'float32'));
  const copy = copier(backend, outs);
  let offset = 0;
  outs.forEach((o, i) => {
    const n = sizes[i] as number;
    if (n > 0) copy(x, offset, o, 0, n);
    offset += n;
  });
  return outs;
}

type Run = (program: WebGPUProgram, inputs: tf.TensorInfo[], dtype: tf.DataType, uniforms: Uniforms, output?: tf.TensorInfo) => tf.TensorInfo;

function runner(backend: object): Run {
  const b = backend as WebGPUBackend;
  return (program, inputs, dtype, uniforms, output) => b.runWebGPUProgram(program, inputs, dtype, uniforms, output);
}

function lnUniforms(rows: number, d: number, eps: number): Uniforms {
  return [{ type: 'int32', data: [rows] }, { type: 'int32', data: [d] }, { type: 'float32', data: [eps] }];
}

/** A kernel of the backend's own, called from inside one of ours (no tfjs dispatch of its own). */
function backendKernel(name: string, backend: object, inputs: Record<string, tf.TensorInfo | undefined>, attrs: Record<string, unknown>): tf.TensorInfo {
  const k = tf.getKernel(name, 'webgpu');
  if (!k) throw new Error(`the webgpu backend has no ${name} kernel`);
  return k.kernelFunc({ inputs: inputs as tf.NamedTensorInfoMap, backend: backend as tf.KernelBackend, attrs: attrs as tf.NamedAttrMap }) as tf.TensorInfo;
}

// A type, not an interface: kernel inputs (a map with an index signature) convert to it.
type LayerNormInputs = { x: tf.TensorInfo; gamma: tf.TensorInfo; beta: tf.TensorInfo };

/** y = (x − μ)·r·γ + β, one row program. */
function layerNormForward(backend: object, { x, gamma, beta }: LayerNormInputs, eps: number): tf.TensorInfo {
  const [rows, d] = x.shape as [number, number];
  return runner(backend)(
    rowProgram(rows, [rows, d], 'm3ae_ln', ['x', 'gamma', 'beta'], 'rows : i32, d : i32, eps : f32,', `${ROW_STATS}
      if (live) {
        for (var c = i32(lid); c < uniforms.d; c = c + ${ROW}) {
          result[base + c] = (x[base + c] - mean) * rstd * gamma[c] + beta[c];
        }
      }`),
    [x, gamma, beta],
    'float32',
    lnUniforms(rows, d, eps),
  );
}

/** x itself as another output of a kernel (one more reference to its data, as the backend's Reshape makes one). */
function passThrough(backend: object, x: tf.TensorInfo): tf.TensorInfo {
  (backend as WebGPUBackend).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

/** x·(s·W) + s·b (no bias: x·(s·W); no scale: s = 1) by the backend's fused product, as `M3aeDense` runs it. */
function denseProduct(backend: object, x: tf.TensorInfo, w: tf.TensorInfo, bias: tf.TensorInfo | undefined, scale: number | undefined): tf.TensorInfo {
  const scaling = scaler(backend, scale);
  const [ws, bs] = [scaling.apply(w), bias && scaling.apply(bias)];
  // The attributes tfjs's fused.matMul passes; on 2-D operands the backend runs the same program it runs on
  // that op's [1, M, K] and [1, K, N] reshapes, and returns [M, N].
  const out = bs
    ? backendKernel(tf._FusedMatMul, backend, { a: x, b: ws, bias: bs }, { transposeA: false, transposeB: false, activation: 'linear', leakyreluAlpha: 0.2 })
    : backendKernel(tf.BatchMatMul, backend, { a: x, b: ws }, { transposeA: false, transposeB: false });
  scaling.dispose();
  return out;
}

/**
 * Multiplication by a scalar with the backend's own Multiply (what `tf.mul(t, s)` runs); `apply(t)` leaves t alone
 * without a scale, `apply(t, true)` also frees t. `dispose` frees the scalar and the products of apply(t, false).
 */
function scaler(backend: object, scale: number | undefined): { apply(t: tf.TensorInfo, consume?: boolean): tf.TensorInfo; dispose(): void } {
  if (scale === undefined) return { apply: (t) => t, dispose: () => undefined };
  const b = backend as WebGPUBackend;
  const s = b.makeTensorInfo([], 'float32', Float32Array.of(scale));
  const made: tf.TensorInfo[] = [s];
  return {
    apply(t, consume = false) {
      const r = backendKernel(tf.Multiply, backend, { a: t, b: s }, {});
      if (consume) b.disposeData(t.dataId);
      else made.push(r);
      return r;
    },
    dispose: () => made.forEach((t) => b.disposeData(t.dataId)),
  };
}

let registered = false;

/** Registers the device kernels for the `webgpu` backend (idempotent). Called by the backend chooser. */
export function registerWebGpuKernels(): void {
  if (registered) return;
  registered = true;
  tf.registerKernel({
    kernelName: SCATTER_ADD_ROWS,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { indices, updates } = inputs as { indices: tf.TensorInfo; updates: tf.TensorInfo };
      const rows = (attrs as { rows: number }).rows;
      const [n, d] = updates.shape as [number, number];
      const run = runner(backend);
      const dims: Uniforms = [{ type: 'int32', data: [n] }, { type: 'int32', data: [rows] }];
      // info [2·rows]: the first position of each row (n when none), then how many positions each row has. Integer
      // atomics (min, add) give the same result in any order.
      const info = run(flatProgram([2 * rows], 'm3ae_rows_info_init', [], 'n : i32, rows : i32,', 'result[index] = select(0, uniforms.n, index < uniforms.rows);'), [], 'int32', dims);
      run(
        flatProgram([2 * rows], 'm3ae_rows_info', ['indices'], 'n : i32, rows : i32,', `
          if (index >= uniforms.n) { return; }
          let v = indices[index];
          atomicMin(&result[v], index);
          atomicAdd(&result[uniforms.rows + v], 1);`, { threads: n, atomic: true }),
        [indices],
        'int32',
        dims,
        info,
      );
      // next[i]: the next position j > i with the same index, or -1 (a search only for rows that repeat).
      const next = run(
        flatProgram([n], 'm3ae_rows_next', ['indices', 'info'], 'n : i32, rows : i32,', `
          let v = indices[index];
          var found = -1;
          if (info[uniforms.rows + v] > 1) {
            for (var j = index + 1; j < uniforms.n; j = j + 1) {
              if (indices[j] == v) { found = j; break; }
            }
          }
          result[index] = found;`),
        [indices, info],
        'int32',
        dims,
      );
      // out[r, c]: the rows of r's positions summed in position order, starting from zero.
      const out = run(
        flatProgram([rows, d], 'm3ae_rows_sum', ['updates', 'info', 'nextPos'], 'n : i32, d : i32,', `
          let r = index / uniforms.d;
          let c = index - r * uniforms.d;
          var sum = 0.0;
          var j = info[r];
          loop {
            if (j < 0 || j >= uniforms.n) { break; }
            sum = sum + updates[j * uniforms.d + c];
            j = nextPos[j];
          }
          result[index] = sum;`),
        [updates, info, next],
        'float32',
        [{ type: 'int32', data: [n] }, { type: 'int32', data: [d] }],
      );
      const b = backend as WebGPUBackend;
      b.disposeData(next.dataId);
      b.disposeData(info.dataId);
      return out;
    },
  });
  tf.registerKernel({
    kernelName: LAYER_NORM,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => layerNormForward(backend, inputs as LayerNormInputs, (attrs as { eps: number }).eps),
  });
  tf.registerKernel({
    kernelName: LAYER_NORM_RESIDUAL,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => [layerNormForward(backend, inputs as LayerNormInputs, (attrs as { eps: number }).eps), passThrough(backend, (inputs as LayerNormInputs).x)],
  });
  tf.registerGradient(layerNormResidualGradient);
  tf.registerKernel({
    kernelName: LAYER_NORM_GRAD,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { dy, x, gamma, addend } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo; gamma: tf.TensorInfo; addend?: tf.TensorInfo };
      const [rows, d] = x.shape as [number, number];
      const eps = (attrs as { eps: number }).eps;
      const run = runner(backend);
      const b = backend as WebGPUBackend;
      // μ and r of every row, as the forward computed them.
      const stats = run(
        rowProgram(rows, [rows, 2], 'm3ae_ln_stats', ['x'], 'rows : i32, d : i32, eps : f32,', `${ROW_STATS}
          if (live && lid == 0u) { result[2 * row] = mean; result[2 * row + 1] = rstd; }`),
        [x],
        'float32',
        lnUniforms(rows, d, eps),
      );
      // dx = r·(g − mean(g) − x̂·mean(g·x̂)), g = dy·γ; plus the addend (a residual's gradient), where given.
      const dx = run(
        rowProgram(rows, [rows, d], addend ? 'm3ae_ln_dx_add' : 'm3ae_ln_dx', ['dy', 'x', 'stats', 'gamma', ...(addend ? ['addend'] : [])], 'rows : i32, d : i32, eps : f32,', `
          let mean = stats[2 * row];
          let rstd = stats[2 * row + 1];
          var a = 0.0;
          var m = 0.0;
          for (var c = i32(lid); c < uniforms.d; c = c + ${ROW}) {
            let g = dy[base + c] * gamma[c];
            a = a + g;
            m = m + g * (x[base + c] - mean) * rstd;
          }
          let ga = rowSum(a, lid) / f32(uniforms.d);
          let gm = rowSum(m, lid) / f32(uniforms.d);
          if (live) {
            for (var c = i32(lid); c < uniforms.d; c = c + ${ROW}) {
              let g = dy[base + c] * gamma[c];
              let v = (g - ga - (x[base + c] - mean) * rstd * gm) * rstd;
              result[base + c] = ${addend ? 'v + addend[base + c]' : 'v'};
            }
          }`),
        [dy, x, stats, gamma, ...(addend ? [addend] : [])],
        'float32',
        lnUniforms(rows, d, eps),
      );
      // dγ = Σ_rows dy·x̂ and dβ = Σ_rows dy: two column sums of one program (group 0: dγ, 1: dβ), each summed as the
      // plain column sum sums it, then copied apart (buffer copies: commands, not programs).
      const both = run(
        columnSumProgram(d, 'm3ae_ln_dgamma_dbeta', ['dy', 'x', 'stats'], 'select(dy[i], dy[i] * (x[i] - stats[2 * r]) * stats[2 * r + 1], g == 0)', 2),
        [dy, x, stats],
        'float32',
        columnSumUniforms(rows, d),
      );
      const [dGamma, dBeta] = splitByCopies(backend, both, [d, d]);
      b.disposeData(both.dataId);
      b.disposeData(stats.dataId);
      return [dx, dGamma, dBeta];
    },
  });
  tf.registerKernel({
    kernelName: DENSE,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x, w, bias } = inputs as { x: tf.TensorInfo; w: tf.TensorInfo; bias?: tf.TensorInfo };
      return denseProduct(backend, x, w, bias, (attrs as { scale?: number }).scale);
    },
  });
  for (const n of PROJECTION_COUNTS) {
    tf.registerKernel({
      kernelName: projectionsKernel(n),
      backendName: 'webgpu',
      kernelFunc: ({ inputs, backend, attrs }) => {
        const named = inputs as Record<string, tf.TensorInfo>;
        const x = named['x'] as tf.TensorInfo;
        const { scales, residual } = attrs as unknown as { scales: number[]; residual: boolean };
        const ys = scales.map((s, i) => denseProduct(backend, x, named[`w${i}`] as tf.TensorInfo, named[`b${i}`], s === 1 ? undefined : s));
        return residual ? [...ys, passThrough(backend, x)] : ys;
      },
    });
    tf.registerGradient(projectionsGradient(n));
  }
  tf.registerKernel({
    kernelName: BIAS_GRADS,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend }) => {
      const dys = inputs as unknown as tf.TensorInfo[];
      const [rows, d] = (dys[0] as tf.TensorInfo).shape as [number, number];
      if (dys.some((t) => t.shape.join() !== `${rows},${d}`)) throw new Error(`bias gradients: operands of shapes ${dys.map((t) => `[${t.shape.join(', ')}]`).join(', ')}; expected one shape`);
      // Each group summed as the plain column sum sums it, then copied apart (buffer copies: commands, not programs).
      const all = runner(backend)(rowSumsProgram(dys.length, d), dys, 'float32', columnSumUniforms(rows, d));
      const out = splitByCopies(backend, all, dys.map(() => d));
      (backend as WebGPUBackend).disposeData(all.dataId);
      return out;
    },
  });
  tf.registerKernel({
    kernelName: PROJECTIONS_INPUT_GRAD,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const pairs = inputs as unknown as tf.TensorInfo[];
      const { scales, residual } = attrs as unknown as { scales: number[]; residual: boolean };
      // dx = dy₀·W₀ᵀ + (dy₁·W₁ᵀ + (… + (dyₙ·Wₙᵀ + dr))): last projection first (after the residual's dy dr, when x
      // was returned for one), each product adding the sum so far as the fused product's bias (the same rounding as an
      // Add after it), as the tape would sum separate gradients.
      const start = residual ? pairs[2 * scales.length] : undefined;
      let sum = start;
      for (let i = scales.length - 1; i >= 0; i--) {
        const scale = scales[i] as number;
        const scaling = scaler(backend, scale === 1 ? undefined : scale);
        const [dy, w] = [pairs[2 * i] as tf.TensorInfo, scaling.apply(pairs[2 * i + 1] as tf.TensorInfo)];
        const next = sum
          ? backendKernel(tf._FusedMatMul, backend, { a: dy, b: w, bias: sum }, { transposeA: false, transposeB: true, activation: 'linear', leakyreluAlpha: 0.2 })
          : backendKernel(tf.BatchMatMul, backend, { a: dy, b: w }, { transposeA: false, transposeB: true });
        if (sum && sum !== start) (backend as WebGPUBackend).disposeData(sum.dataId);
        scaling.dispose();
        sum = next;
      }
      if (!sum) throw new Error('projections: no projection');
      return sum;
    },
  });
  tf.registerKernel({
    kernelName: DENSE_GRAD,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { dy, x, w } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo; w: tf.TensorInfo };
      const { inputGrad, hasBias, scale } = attrs as { inputGrad: boolean; hasBias: boolean; scale?: number };
      const scaling = scaler(backend, scale);
      // With a scale: dx = dy·(s·W)ᵀ, dW = s·(xᵀ·dy), db = s·Σ_rows dy, as tfjs's Multiply gradient gives them.
      const out: tf.TensorInfo[] = [];
      if (inputGrad) out.push(backendKernel(tf.BatchMatMul, backend, { a: dy, b: scaling.apply(w) }, { transposeA: false, transposeB: true }));
      out.push(scaling.apply(backendKernel(tf.BatchMatMul, backend, { a: x, b: dy }, { transposeA: true, transposeB: false }), true));
      if (hasBias) {
        const [rows, d] = dy.shape as [number, number];
        out.push(runner(backend)(rowSumProgram(d), [dy], 'float32', columnSumUniforms(rows, d, scale)));
      }
      scaling.dispose();
      return out;
    },
  });
  tf.registerKernel({
    kernelName: RESIDUAL_ADD,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend }) => backendKernel(tf.Add, backend, inputs as Record<string, tf.TensorInfo>, {}),
  });
  tf.registerKernel({
    kernelName: FLAT_CONCAT,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend }) => {
      // The inputs come as an array, as tf.concat's do. Each is one buffer copy into its place in the output: a
      // command, not a program (tfjs's Concat takes at most 7 inputs a program and concatenates the results again:
      // about 107 programs, each value copied 3–4 times, for a `tiny` step's 615 gradients).
      const list = inputs as unknown as tf.TensorInfo[];
      const bad = list.find((t) => t.dtype !== 'float32');
      if (bad) throw new Error(`flatConcat: a ${bad.dtype} tensor of shape [${bad.shape.join(', ')}]; expected float32`);
      const sizes = list.map((t) => tf.util.sizeFromShape(t.shape));
      const out = (backend as unknown as CopyingBackend).makeTensorInfo([sizes.reduce((a, n) => a + n, 0)], 'float32');
      const copy = copier(backend, [out]);
      let offset = 0;
      list.forEach((t, i) => {
        const n = sizes[i] as number;
        if (n > 0) copy(t, 0, out, offset, n);
        offset += n;
      });
      return out;
    },
  });
  tf.registerKernel({
    kernelName: FLAT_SPLIT,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x } = inputs as { x: tf.TensorInfo };
      if (x.dtype !== 'float32') throw new Error(`flatSplit: a ${x.dtype} tensor; expected float32`);
      return splitByCopies(backend, x, (attrs as { sizes: number[] }).sizes);
    },
  });
  const heads = (backend: object, x: tf.TensorInfo, shape: number[], perm: number[], outShape: number[]): tf.TensorInfo => {
    const b = backend as WebGPUBackend;
    // Reshapes share the data (a reference each, given back by disposeData); the transpose is the backend's.
    const shaped = backendKernel(tf.Reshape, backend, { x }, { shape });
    const moved = backendKernel(tf.Transpose, backend, { x: shaped }, { perm });
    b.disposeData(shaped.dataId);
    const out = backendKernel(tf.Reshape, backend, { x: moved }, { shape: outShape });
    b.disposeData(moved.dataId);
    return out;
  };
  tf.registerKernel({
    kernelName: HEADS,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { shape, perm, outShape } = attrs as { shape: number[]; perm: number[]; outShape: number[] };
      return heads(backend, (inputs as { x: tf.TensorInfo }).x, shape, perm, outShape);
    },
  });
  /** An element-wise activation kernel (forward: x; gradient: dy, x), its shader `body` setting result[index]. */
  const activation = (kernelName: string, shaderKey: string, variableNames: ['x'] | ['dy', 'x'], body: string): void => {
    tf.registerKernel({
      kernelName,
      backendName: 'webgpu',
      kernelFunc: ({ inputs, backend }) => {
        const named = inputs as Record<string, tf.TensorInfo>;
        const x = named['x'] as tf.TensorInfo;
        return runner(backend)(flatProgram([...x.shape], shaderKey, [...variableNames], '', body), variableNames.map((n) => named[n] as tf.TensorInfo), 'float32', []);
      },
    });
  };
  activation(GELU, 'm3ae_gelu', ['x'], `let a = x[index];${NORMAL_CDF}
          result[index] = a * cdf;`);
  activation(GELU_GRAD, 'm3ae_gelu_grad', ['dy', 'x'], `let a = x[index];${NORMAL_CDF}
          result[index] = dy[index] * (cdf + a * exp(-0.5 * a * a) * ${1 / Math.sqrt(2 * Math.PI)});`);
  // σ(1.702·a) as "s", as tfjs-backend-webgpu's Sigmoid computes it from tf.mul(x, 1.702).
  const quickSigmoid = 'let a = x[index]; let s = 1.0 / (1.0 + exp(-1.0 * (a * 1.702)));';
  activation(QUICK_GELU, 'm3ae_quick_gelu', ['x'], `${quickSigmoid}
          result[index] = a * s;`);
  // d(a·s) = dy·s + dy·a·s·(1 − s)·1.702.
  activation(QUICK_GELU_GRAD, 'm3ae_quick_gelu_grad', ['dy', 'x'], `${quickSigmoid}
          let g = dy[index];
          result[index] = g * s + g * a * (s * (1.0 - s)) * 1.702;`);
  /**
   * mask: none, a mask tensor, or `keyed`: made from per-sample keys at the canonical index (head·c1 + query)·c2 + key,
   * as M3aeDropoutMask makes it.
   */
  const probsProgram = (shape: number[], grad: boolean, hasBias: boolean, mask: 'none' | 'tensor' | 'keyed', scaled: boolean): WebGPUProgram => {
    const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
    // Scaled: the scores times the query scale, a power of two (exact), and the gradient as well.
    const score = scaled ? 'scores[base + c] * uniforms.scale' : 'scores[base + c]';
    const v = hasBias ? `${score} + bias[sample * uniforms.d + c]` : score;
    const m = (e: string): string => (mask === 'tensor' ? `${e} * mask[base + c]` : mask === 'keyed' ? `${e} * dropMask(sample, mrow + c)` : e);
    const names = [...(grad ? ['dy'] : []), 'scores', ...(hasBias ? ['bias'] : []), ...(mask === 'tensor' ? ['mask'] : mask === 'keyed' ? ['keys'] : [])];
    const keyed = mask === 'keyed';
    const tail = grad
      ? `var dot = 0.0;
          for (var c = i32(lid); c < uniforms.d; c = c + ${ROW}) { dot = dot + exp(${v} - mx) / total * ${m('dy[base + c]')}; }
          let pg = rowSum(dot, lid);
          if (live) {
            for (var c = i32(lid); c < uniforms.d; c = c + ${ROW}) { let p = exp(${v} - mx) / total; result[base + c] = ${scaled ? 'uniforms.scale * ' : ''}(p * (${m('dy[base + c]')} - pg)); }
          }`
      : `if (live) {
            for (var c = i32(lid); c < uniforms.d; c = c + ${ROW}) { result[base + c] = ${m(`exp(${v} - mx) / total`)}; }
          }`;
    return rowProgram(
      rows,
      shape,
      `m3ae_attn_probs_${grad}_${hasBias}_${mask}_${scaled}`,
      names,
      `rows : i32, d : i32, perSample : i32,${keyed ? ' tq : i32, c1 : i32, c2 : i32, threshold : i32, keep : f32, keyOffset : i32,' : ''}${scaled ? ' scale : f32,' : ''}`,
      `
          let sample = row / uniforms.perSample;
          ${keyed ? `let within = row - sample * uniforms.perSample;
          let head = within / uniforms.tq;
          let mrow = (head * uniforms.c1 + within - head * uniforms.tq) * uniforms.c2;` : ''}
          var mv = -uniforms.INFINITY;
          for (var c = i32(lid); c < uniforms.d; c = c + ${ROW}) { mv = max(mv, ${v}); }
          let mx = rowMax(mv, lid);
          var sv = 0.0;
          for (var c = i32(lid); c < uniforms.d; c = c + ${ROW}) { sv = sv + exp(${v} - mx); }
          let total = rowSum(sv, lid);
          ${tail}`,
      keyed ? `fn dropMask(b : i32, i : i32) -> f32 {${dropoutValueWgsl(TABLE_KEY)}
          return m;
        }` : '',
    );
  };
  const probsKernel = (grad: boolean): tf.KernelFunc => ({ inputs, backend, attrs }) => {
    const { hasBias, hasMask, queryScale = 1 } = attrs as { hasBias: boolean; hasMask: boolean; queryScale?: number };
    const named = inputs as Record<string, tf.TensorInfo>;
    const scores = named['scores'] as tf.TensorInfo;
    const [, h = 1, tq = 1, tk = 1] = scores.shape;
    const mask = !hasMask ? 'none' : named['keys'] ? 'keyed' : 'tensor';
    const list = [...(grad ? ['dy'] : []), 'scores', ...(hasBias ? ['bias'] : []), ...(mask === 'tensor' ? ['mask'] : mask === 'keyed' ? ['keys'] : [])].map((n) => named[n] as tf.TensorInfo);
    const rows = scores.shape.slice(0, -1).reduce((a, b) => a * b, 1);
    const uniforms: Uniforms = [
      { type: 'int32', data: [rows] },
      { type: 'int32', data: [tk] },
      { type: 'int32', data: [h * tq] },
    ];
    if (mask === 'keyed') {
      const { c1, c2, threshold, keep, keyOffset } = attrs as { c1: number; c2: number; threshold: number; keep: number; keyOffset: number };
      uniforms.push(...[tq, c1, c2, threshold].map((x) => ({ type: 'int32', data: [x] })), { type: 'float32', data: [keep] }, { type: 'int32', data: [keyOffset] });
    }
    const scaled = queryScale !== 1;
    if (scaled) uniforms.push({ type: 'float32', data: [queryScale] });
    return runner(backend)(probsProgram([...scores.shape], grad, hasBias, mask, scaled), list, 'float32', uniforms);
  };
  tf.registerKernel({ kernelName: ATTENTION_PROBS, backendName: 'webgpu', kernelFunc: probsKernel(false) });
  tf.registerKernel({ kernelName: ATTENTION_PROBS_GRAD, backendName: 'webgpu', kernelFunc: probsKernel(true) });
  const free = (backend: object, list: tf.TensorInfo[]): void => list.forEach((t) => (backend as WebGPUBackend).disposeData(t.dataId));
  type AttentionAttrs = Required<HeadsShape> & { hasBias: boolean; hasMask: boolean };
  /** One of attention's products (`headsProductProgram`) for the shapes of `a`, x and y as that program reads them. */
  const product = (backend: object, kind: HeadsProduct, x: tf.TensorInfo, y: tf.TensorInfo, a: AttentionAttrs, dh: number): tf.TensorInfo => {
    const { batch, tq, tk, heads: h } = a;
    const [shape, m, n, inner] =
      kind === 'scores' ? [[batch, h, tq, tk], tq, tk, dh] : kind === 'context' ? [[batch * tq, h * dh], tq, dh, tk] : [[batch * tk, h * dh], tk, dh, tq];
    const uniforms: Uniforms = [m, n, inner, h, dh, tq, tk].map((v) => ({ type: 'int32', data: [v] }));
    return runner(backend)(headsProductProgram(kind, shape, batch * h, m, n), [x, y], 'float32', uniforms);
  };
  /** M3aeAttentionProbs(Grad) of `scores` (and `dy`) with the attention's key bias and dropout keys. */
  const probsOf = (backend: object, named: Record<string, tf.TensorInfo>, a: AttentionAttrs, scores: tf.TensorInfo, dy?: tf.TensorInfo): tf.TensorInfo => {
    const inputs: Record<string, tf.TensorInfo> = dy ? { dy, scores } : { scores };
    if (a.hasBias) inputs['bias'] = named['bias'] as tf.TensorInfo;
    if (a.hasMask) inputs['keys'] = named['keys'] as tf.TensorInfo;
    return probsKernel(dy !== undefined)({ inputs: inputs as tf.NamedTensorInfoMap, backend: backend as tf.KernelBackend, attrs: a as unknown as tf.NamedAttrMap }) as tf.TensorInfo;
  };
  tf.registerKernel({
    kernelName: ATTENTION,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const a = attrs as unknown as AttentionAttrs;
      const named = inputs as Record<string, tf.TensorInfo>;
      const [q, k, v] = ['q', 'k', 'v'].map((x) => named[x] as tf.TensorInfo) as [tf.TensorInfo, tf.TensorInfo, tf.TensorInfo];
      const dh = (q.shape[1] as number) / a.heads;
      const scores = product(backend, 'scores', q, k, a, dh);
      const probs = probsOf(backend, named, a, scores);
      // [context, scores, probs]: the gradient's inputs besides dy, q, k and v.
      return [product(backend, 'context', probs, v, a, dh), scores, probs];
    },
  });
  tf.registerKernel({
    kernelName: ATTENTION_GRAD,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const a = attrs as unknown as AttentionAttrs;
      const named = inputs as Record<string, tf.TensorInfo>;
      const [dy, q, k, v, scores, probs] = ['dy', 'q', 'k', 'v', 'scores', 'probs'].map((n) => named[n] as tf.TensorInfo) as [tf.TensorInfo, tf.TensorInfo, tf.TensorInfo, tf.TensorInfo, tf.TensorInfo, tf.TensorInfo];
      const dh = (q.shape[1] as number) / a.heads;
      // The gradients of the weighted sum, of the probabilities (M3aeAttentionProbsGrad) and of the scores.
      const dProbs = product(backend, 'scores', dy, v, a, dh);
      const dv = product(backend, 'transposed', probs, dy, a, dh);
      const dScores = probsOf(backend, named, a, scores, dProbs);
      const dq = product(backend, 'context', dScores, k, a, dh);
      const dk = product(backend, 'transposed', dScores, q, a, dh);
      free(backend, [dProbs, dScores]);
      return [dq, dk, dv];
    },
  });
  tf.registerKernel({
    kernelName: DROPOUT,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x: v, keys, addend } = inputs as { x: tf.TensorInfo; keys: tf.TensorInfo; addend?: tf.TensorInfo };
      const { per, threshold, keep, keyOffset } = attrs as { per: number; threshold: number; keep: number; keyOffset: number };
      // The mask's element i of sample b is element i of the sample's block: shape and canonical shape are one.
      return runner(backend)(
        flatProgram([...v.shape], addend ? 'm3ae_dropout_add' : 'm3ae_dropout', ['v', 'keys', ...(addend ? ['addend'] : [])], 'per : i32, threshold : i32, keep : f32, keyOffset : i32,', `
          let b = index / uniforms.per;
          let i = index - b * uniforms.per;
          ${dropoutValueWgsl(TABLE_KEY)}
          let y = v[index] * m;
          result[index] = ${addend ? 'y + addend[index]' : 'y'};`),
        [v, keys, ...(addend ? [addend] : [])],
        'float32',
        [{ type: 'int32', data: [per] }, { type: 'int32', data: [threshold] }, { type: 'float32', data: [keep] }, { type: 'int32', data: [keyOffset] }],
      );
    },
  });
  tf.registerKernel({
    kernelName: DROPOUT_MASK,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { keys } = inputs as { keys: tf.TensorInfo };
      const { per, a1, a2, c1, c2, threshold, keep } = attrs as { per: number; a1: number; a2: number; c1: number; c2: number; threshold: number; keep: number };
      const batch = keys.shape[0] as number;
      // dropoutValue at the canonical index, in WGSL: u32 arithmetic wraps as Math.imul does.
      return runner(backend)(
        flatProgram([batch, per], 'm3ae_dropout_mask', ['keys'], 'per : i32, a1 : i32, a2 : i32, c1 : i32, c2 : i32, threshold : i32, keep : f32,', `
          let b = index / uniforms.per;
          let e = index - b * uniforms.per;
          let i0 = e / (uniforms.a1 * uniforms.a2);
          let r = e - i0 * uniforms.a1 * uniforms.a2;
          let i1 = r / uniforms.a2;
          let i = (i0 * uniforms.c1 + i1) * uniforms.c2 + (r - i1 * uniforms.a2);
          ${dropoutValueWgsl()}
          result[index] = m;`),
        [keys],
        'float32',
        [
          ...[per, a1, a2, c1, c2, threshold].map((v) => ({ type: 'int32', data: [v] })),
          { type: 'float32', data: [keep] },
        ],
      );
    },
  });
}
