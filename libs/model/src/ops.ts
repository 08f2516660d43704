import * as tf from '@tensorflow/tfjs-core';
// tfjs-core's Node bundle registers no gradients (nor chained ops); the umbrella package's CommonJS bundle
// does, and it loads in plain Node (tfjs-core's own dist/register_all_gradients.js has extensionless ESM imports
// that only bundlers resolve).
import '@tensorflow/tfjs';
import { nativeTransposedProducts } from './backend.js';
import { batchMatMul } from './kernels/bmm.js';
import { ATTENTION, ATTENTION_PROBS, DENSE, deviceKernel, fusedAttention, fusedActivation, fusedAttentionProbs, fusedDense, fusedLayerNorm, fusedReshapeTranspose, fusedProjections, fusedResidualAdd, GELU, HEADS, keyedMask, LAYER_NORM, LAYER_NORM_RESIDUAL, projectionsKernel, QUICK_GELU, RESIDUAL_ADD, scatterAddRows, type MaskKeys, type Projection } from './kernels/device.js';

/**
 * Small functional building blocks. Activations are 2-D [rows, features] (rows = batch × tokens) except
 * inside attention. Every function here has a gradient on the wasm backend (no gather/where gradients).
 */

/** Read-only access to parameters by canonical name. */
export interface Params {
  get(name: string): tf.Tensor;
}

export function paramsFromMap(map: ReadonlyMap<string, tf.Tensor>): Params {
  return {
    get(name: string): tf.Tensor {
      const t = map.get(name);
      if (!t) throw new Error(`missing parameter ${JSON.stringify(name)}`);
      return t;
    },
  };
}

/**
 * x·W (+ b) for 2-D x [M, K] and W [K, N], with a gradient that uses only plain (non-transposed, batch-1)
 * products: the wasm backend runs those through XNNPACK, but falls back to a scalar loop (10–15× slower)
 * for the transposed products tfjs's own matMul gradient asks for. The transposes are explicit copies, except
 * where the backend multiplies transposed operands in place (`nativeTransposedProducts`: webgpu).
 */
// Weight transposes for the input gradient, shared by the backward sweeps of one computeGradients call (each
// weight is used in up to three passes). Keyed by the weight's data, which never changes during the call.
let transposeCache: Map<object, tf.Tensor2D> | undefined;
let cachedElements = 0;
/** Cap on cached transpose elements (128 MiB of float32): `base` would otherwise hold a second copy of its weights. */
const TRANSPOSE_CACHE_LIMIT = 32 * 2 ** 20;

/** Runs f with weight transposes cached across its backward sweeps; frees them afterwards. */
export function withWeightTransposeCache<T>(f: () => T): T {
  const outer = transposeCache;
  const outerElements = cachedElements;
  const cache = new Map<object, tf.Tensor2D>();
  transposeCache = cache;
  cachedElements = 0;
  try {
    return f();
  } finally {
    transposeCache = outer;
    cachedElements = outerElements;
    for (const t of cache.values()) t.dispose();
  }
}

function weightTranspose(w: tf.Tensor2D): tf.Tensor2D {
  if (!transposeCache) return tf.transpose(w);
  let t = transposeCache.get(w.dataId);
  if (!t) {
    if (cachedElements + w.size > TRANSPOSE_CACHE_LIMIT) return tf.transpose(w);
    t = tf.keep(tf.transpose(w));
    transposeCache.set(w.dataId, t);
    cachedElements += w.size;
  }
  return t;
}

export function dense(x: tf.Tensor2D, w: tf.Tensor2D, b?: tf.Tensor, inputGrad = true): tf.Tensor2D {
  // The same products in fewer kernels where the backend has them (`fusedDense`).
  if (deviceKernel(DENSE)) return fusedDense(x, w, b, inputGrad);
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xi, wi] = args as [tf.Tensor2D, tf.Tensor2D];
    const save = args[args.length - 1] as tf.GradSaveFunc;
    save([xi, wi]);
    const value = b ? (tf.fused.matMul({ a: xi, b: wi, bias: args[2] as tf.Tensor }) as tf.Tensor2D) : tf.matMul(xi, wi);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, ws] = saved as [tf.Tensor2D, tf.Tensor2D];
        const dy2 = dy as tf.Tensor2D;
        if (nativeTransposedProducts()) {
          const dxn = inputGrad ? tf.matMul(dy2, ws, false, true) : tf.zerosLike(xs);
          const dwn = tf.matMul(xs, dy2, true, false);
          return b ? [dxn, dwn, tf.sum(dy2, 0)] : [dxn, dwn];
        }
        // Inputs that are data (image patches) need no gradient: skip that product.
        const dx = inputGrad ? tf.matMul(dy2, weightTranspose(ws)) : tf.zerosLike(xs);
        // dW = xᵀ·dy, or (dyᵀ·x)ᵀ for wide outputs with many rows (FFN up-projections): XNNPACK packs its
        // right operand on every call, and packing the narrower x is cheaper than packing dy (measured).
        const [m, k] = xs.shape;
        const n = dy2.shape[1];
        const dw = n > k && m >= k ? tf.transpose(tf.matMul(tf.transpose(dy2), xs)) : tf.matMul(tf.transpose(xs), dy2);
        return b ? [dx, dw, tf.sum(dy2, 0)] : [dx, dw];
      },
    };
  });
  return (b ? op(x, w, b) : op(x, w)) as tf.Tensor2D;
}

/** x·W + b for a Linear stored [in, out] (`${prefix}.weight`, `${prefix}.bias`). */
export function linear(p: Params, prefix: string, x: tf.Tensor2D, bias = true): tf.Tensor2D {
  const w = p.get(`${prefix}.weight`) as tf.Tensor2D;
  return bias ? dense(x, w, p.get(`${prefix}.bias`)) : dense(x, w);
}

/**
 * (x·W + b) · s computed as x·(s·W) + s·b: scaling the (small) weights instead of the activations, e.g. the
 * attention queries' 1/√dh.
 */
export function linearScaled(p: Params, prefix: string, x: tf.Tensor2D, s: number): tf.Tensor2D {
  // The scaling inside the product's kernels where the backend has them (`fusedDense`).
  if (deviceKernel(DENSE)) return fusedDense(x, p.get(`${prefix}.weight`) as tf.Tensor2D, p.get(`${prefix}.bias`), true, s);
  return dense(x, tf.mul(p.get(`${prefix}.weight`), s) as tf.Tensor2D, tf.mul(p.get(`${prefix}.bias`), s));
}

/** Attention queries, and what their scores are still to be multiplied by (1: the queries are scaled already). */
export interface AttentionQuery {
  q: tf.Tensor2D;
  scale: number;
}

/** Whether the queries' scale s goes to the device's attention kernel (exact there: a power of two) instead of the products. */
function scaleInAttentionKernel(s: number): boolean {
  return deviceKernel(ATTENTION) && Number.isInteger(Math.log2(s));
}

/** A Linear by its parameter prefix, its output scaled by `scale` (as `linearScaled`; none: 1). */
export interface ScaledLinear {
  prefix: string;
  scale?: number;
}

/**
 * The Linears `layers` of one input x (x·Wᵢ + bᵢ, each scaled as `linearScaled`), and `input`: x again, for a residual
 * connection around their consumer when `residual`. Where the backend has `fusedProjections`, one kernel: x's gradient
 * sums the products' terms (and the residual's) in one chain, in the order the tape would add them, without its Adds;
 * otherwise `linear`s and x itself.
 */
export function projections(p: Params, layers: readonly ScaledLinear[], x: tf.Tensor2D, residual = false): { ys: tf.Tensor2D[]; input: tf.Tensor2D } {
  const scaled = (l: ScaledLinear): boolean => l.scale !== undefined && l.scale !== 1;
  if (!deviceKernel(projectionsKernel(layers.length))) return { ys: layers.map((l) => (scaled(l) ? linearScaled(p, l.prefix, x, l.scale as number) : linear(p, l.prefix, x))), input: x };
  const ys = fusedProjections(x, layers.map((l): Projection => ({ w: p.get(`${l.prefix}.weight`) as tf.Tensor2D, b: p.get(`${l.prefix}.bias`), scale: l.scale ?? 1 })), residual);
  return residual ? { ys: ys.slice(0, layers.length), input: ys[layers.length] as tf.Tensor2D } : { ys, input: x };
}

/** The parameter prefixes of an attention's three input projections. */
export interface AttentionNames {
  query: string;
  key: string;
  value: string;
}

/**
 * An attention's queries (from x, scaled by s = 1/√dh), keys and values (from `source`, or x for self-attention) by
 * `projections`: the projections of one input in one kernel where the backend has it, and x again (`input`) for the
 * residual connection when `residual`. Where the device's attention kernel takes the scale and s is a power of two,
 * the queries stay unscaled and the kernel multiplies the scores by s (`query.scale`): the same bits as scaled queries
 * (`linearScaled`; scaling by a power of two is exact in every product and sum), without their multiplications.
 * Otherwise the queries are `linearScaled`'s, `query.scale` 1.
 */
export function attentionProjections(p: Params, names: AttentionNames, x: tf.Tensor2D, source: tf.Tensor2D | undefined, s: number, residual = false): { query: AttentionQuery; k: tf.Tensor2D; v: tf.Tensor2D; input: tf.Tensor2D } {
  const inKernel = scaleInAttentionKernel(s);
  const query: ScaledLinear = { prefix: names.query, scale: inKernel ? 1 : s };
  const scale = inKernel ? s : 1;
  if (source === undefined) {
    const { ys, input } = projections(p, [query, { prefix: names.key }, { prefix: names.value }], x, residual);
    const [q, k, v] = ys as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D];
    return { query: { q, scale }, k, v, input };
  }
  const { ys: queries, input } = projections(p, [query], x, residual);
  const [k, v] = projections(p, [{ prefix: names.key }, { prefix: names.value }], source).ys as [tf.Tensor2D, tf.Tensor2D];
  return { query: { q: queries[0] as tf.Tensor2D, scale }, k, v, input };
}

/** LayerNorm over the last axis (biased variance, as PyTorch). */
export function layerNorm(p: Params, prefix: string, x: tf.Tensor2D, eps: number): tf.Tensor2D {
  return layerNormOp(x, p.get(`${prefix}.weight`), p.get(`${prefix}.bias`), eps);
}

/**
 * `layerNorm`, and `input`: x again, for a residual connection around the LayerNorm's consumer (pre-LN blocks). Where
 * the backend has `M3aeLayerNormResidual`, x's gradient is the LayerNorm's plus the residual's in one program (no Add of
 * the tape); otherwise x itself.
 */
export function layerNormAndInput(p: Params, prefix: string, x: tf.Tensor2D, eps: number): { y: tf.Tensor2D; input: tf.Tensor2D } {
  if (!deviceKernel(LAYER_NORM_RESIDUAL)) return { y: layerNorm(p, prefix, x, eps), input: x };
  const [y, input] = fusedLayerNorm(x, p.get(`${prefix}.weight`), p.get(`${prefix}.bias`), eps, true);
  return { y, input };
}

/**
 * LayerNorm with a hand-written gradient (about half the kernels of the autodiff one), or the device's fused
 * kernels where the backend has them (`fusedLayerNorm`):
 * x̂ = (x − μ)·r, r = 1/√(var + eps); dx = r · (g − mean(g) − x̂ · mean(g · x̂)) with g = dy·γ.
 */
export function layerNormOp(x: tf.Tensor2D, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor2D {
  if (deviceKernel(LAYER_NORM)) return fusedLayerNorm(x, gamma, beta, eps);
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xi, gi, bi] = args as [tf.Tensor2D, tf.Tensor1D, tf.Tensor1D];
    const save = args[3] as tf.GradSaveFunc;
    const mean = tf.mean(xi, -1, true);
    const centered = tf.sub(xi, mean);
    const r = tf.rsqrt(tf.add(tf.mean(tf.square(centered), -1, true), eps));
    const xhat = tf.mul(centered, r);
    save([xhat, r, gi]);
    return {
      value: tf.add(tf.mul(xhat, gi), bi),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xh, rs, gs] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D];
        const g = tf.mul(dy, gs);
        const dx = tf.mul(tf.sub(tf.sub(g, tf.mean(g, -1, true)), tf.mul(xh, tf.mean(tf.mul(g, xh), -1, true))), rs);
        return [dx, tf.sum(tf.mul(dy, xh), 0), tf.sum(dy, 0)];
      },
    };
  });
  return op(x, gamma, beta) as tf.Tensor2D;
}

/** GELU, erf form (HF "gelu"): x · Φ(x); the device's fused kernels where the backend has them (`fusedActivation`). */
export function gelu(x: tf.Tensor2D): tf.Tensor2D {
  if (deviceKernel(GELU)) return fusedActivation(x, GELU);
  // Hand-written gradient dy · (Φ(x) + x·φ(x)): about half the kernels of differentiating the erf expression.
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const xi = args[0] as tf.Tensor2D;
    const cdf = tf.add(tf.mul(tf.erf(tf.mul(xi, Math.SQRT1_2)), 0.5), 0.5);
    (args[1] as tf.GradSaveFunc)([xi, cdf]);
    return {
      value: tf.mul(xi, cdf),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, c] = saved as [tf.Tensor, tf.Tensor];
        const pdf = tf.exp(tf.mul(tf.square(xs), -0.5));
        return tf.mul(dy, tf.add(c, tf.mul(tf.mul(xs, pdf), 1 / Math.sqrt(2 * Math.PI))));
      },
    };
  });
  return op(x) as tf.Tensor2D;
}

/** a + b of one shape (a residual connection); one kernel each way where the backend has it (`fusedResidualAdd`). */
export function residualAdd(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  if (deviceKernel(RESIDUAL_ADD)) return fusedResidualAdd(a, b);
  return tf.add(a, b);
}

/** CLIP's QuickGELU: x · σ(1.702 x); the device's fused kernels where the backend has them (`fusedActivation`). */
export function quickGelu(x: tf.Tensor2D): tf.Tensor2D {
  if (deviceKernel(QUICK_GELU)) return fusedActivation(x, QUICK_GELU);
  return tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));
}

/**
 * Row lookup `table[indices]` whose gradient is a scatter-add summing duplicate indices in order
 * (`scatterAddRows`: reproducible on every backend; the wasm backend has no UnsortedSegmentSum, the gradient
 * tfjs registers for gather, and the webgpu one adds with atomics). `gradRowMask` [M,1] (0/1) drops the
 * gradient of some rows — PyTorch's nn.Embedding(padding_idx) never updates the padding row.
 */
export function gatherRows(table: tf.Tensor2D, indices: tf.Tensor1D, gradRowMask?: tf.Tensor2D): tf.Tensor2D {
  const shape = table.shape;
  const lookup = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    // Tensors the gradient needs must go through save(): the forward pass runs in its own tidy.
    const save = args[1] as tf.GradSaveFunc;
    save(gradRowMask ? [indices, gradRowMask] : [indices]);
    return {
      value: tf.gather(args[0] as tf.Tensor, indices),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [idx, mask] = saved as [tf.Tensor, tf.Tensor | undefined];
        return scatterAddRows(idx as tf.Tensor1D, (mask ? tf.mul(dy, mask) : dy) as tf.Tensor2D, shape[0]);
      },
    };
  });
  return lookup(table) as tf.Tensor2D;
}

/**
 * [B·T, h·dh] → [B, h, T, dh], or [B, h, dh, T] when `transposed` (keys, ready for q·kᵀ). Rank-4 transposes:
 * the wasm backend's rank-5 transpose is far slower.
 */
export function splitHeads(x: tf.Tensor2D, batch: number, tokens: number, heads: number, transposed = false): tf.Tensor4D {
  const dh = x.shape[1] / heads;
  const shape: [number, number, number, number] = [batch, tokens, heads, dh];
  const perm = transposed ? [0, 2, 3, 1] : [0, 2, 1, 3];
  // One kernel each way where the backend has it (`fusedReshapeTranspose`).
  if (deviceKernel(HEADS)) return fusedReshapeTranspose(x, shape, perm, perm.map((p) => shape[p] as number)) as tf.Tensor4D;
  return tf.transpose(tf.reshape(x, shape), perm);
}

/** [B, h, T, dh] → [B·T, h·dh]. */
export function mergeHeads(x: tf.Tensor4D): tf.Tensor2D {
  const [b, h, t, dh] = x.shape;
  if (deviceKernel(HEADS)) return fusedReshapeTranspose(x, [b, h, t, dh], [0, 2, 1, 3], [b * t, h * dh]) as tf.Tensor2D;
  return tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [b * t, h * dh]);
}

/**
 * Dot-product attention on queries already scaled by 1/√dh (see linearScaled), q, v [B, h, T, dh] and transposed keys kᵀ [B, h, dh, Tk]. `keyBias` [B,1,1,Tk]
 * is added to the scores (0 for real keys, a large negative number for padding); `probsMask` [B,h,Tq,Tk] is the
 * dropout mask on the attention probabilities (already scaled by 1/(1−p)). The two batched products go through
 * the SIMD kernel (`kernels/bmm.ts`); bias, softmax and mask through the device's fused kernels where the backend
 * has them (`fusedAttentionProbs`).
 */
export function attend(q: tf.Tensor4D, kT: tf.Tensor4D, v: tf.Tensor4D, keyBias?: tf.Tensor, probsMask?: tf.Tensor): tf.Tensor4D {
  let scores: tf.Tensor4D = batchMatMul(q, kT);
  if (deviceKernel(ATTENTION_PROBS)) return batchMatMul(fusedAttentionProbs(scores, keyBias, probsMask), v);
  if (keyBias) scores = tf.add(scores, keyBias);
  let probs: tf.Tensor4D = tf.softmax(scores);
  if (probsMask) probs = tf.mul(probs, probsMask);
  return batchMatMul(probs, v);
}

/**
 * Multi-head attention from [B·Tq, D] queries (scaled by 1/√dh: already, or by the kernel, see attentionProjections) and
 * [B·Tk, D] keys and values to the [B·Tq, D] context: `splitHeads`, `attend` (keyBias as there; the dropout mask of `probsMask`, a
 * `Dropout.lazyMask`) and `mergeHeads`; one kernel each way, the mask made inside, where the backend has it
 * (`fusedAttention`).
 */
export function multiHeadAttention(query: tf.Tensor2D | AttentionQuery, k: tf.Tensor2D, v: tf.Tensor2D, dims: { batch: number; tq: number; tk: number; heads: number }, keyBias?: tf.Tensor, probsMask?: MaskKeys): tf.Tensor2D {
  const { q, scale } = query instanceof tf.Tensor ? { q: query, scale: 1 } : query;
  if (deviceKernel(ATTENTION)) return fusedAttention(q, k, v, { ...dims, queryScale: scale }, keyBias, probsMask);
  const { batch, tq, tk, heads } = dims;
  const qs: tf.Tensor2D = scale === 1 ? q : tf.mul(q, scale);
  return mergeHeads(attend(splitHeads(qs, batch, tq, heads), splitHeads(k, batch, tk, heads, true), splitHeads(v, batch, tk, heads), keyBias, probsMask && keyedMask(probsMask)));
}
