import { createHash } from 'node:crypto';
import type { LossTriple } from './job.js';

/**
 * A synthetic workload that coordinator and workers agree on without the model: one flat parameter vector,
 * a per-sample quadratic loss ½·mean((p − t_x)²) towards a pseudo-random target t_x of each sample index x,
 * and a fixed amount of work per sample (sleep: a GPU busy elsewhere; spin: a CPU-bound thread). Its
 * gradients follow the same normalisation contract as the model's (Σ over micro-batches = the global
 * gradient), so orchestration — exactly-once accounting, ordering, faults, scaling — is tested and
 * benchmarked with real transport but without TensorFlow.js.
 */
export interface SyntheticSpec {
  paramCount: number;
  workMsPerSample: number;
  work: 'sleep' | 'spin';
}

export const SYNTHETIC_PARAM_NAME = 'synthetic.weight';

/** A parameter manifest in @m3ae/model's layout: one trainable tensor, hashed like the model's manifests. */
export function syntheticManifest(paramCount: number): {
  entries: { name: string; shape: number[]; dtype: 'float32'; offset: number; trainable: boolean }[];
  size: number;
  hash: string;
} {
  const entries = [{ name: SYNTHETIC_PARAM_NAME, shape: [paramCount], dtype: 'float32' as const, offset: 0, trainable: true }];
  const hash = createHash('sha256')
    .update(JSON.stringify(entries.map((e) => ({ name: e.name, shape: e.shape, dtype: e.dtype }))))
    .digest('hex');
  return { entries, size: paramCount, hash };
}

function mix(a: number, b: number): number {
  let h = Math.imul(a ^ Math.imul(b, 0x9e3779b1), 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Initial parameters in [-0.1, 0.1), a pure function of (paramCount, seed). */
export function syntheticInitialParams(paramCount: number, seed: number): Float32Array {
  const p = new Float32Array(paramCount);
  for (let i = 0; i < paramCount; i++) p[i] = (mix(i, seed + 1) / 2 ** 32 - 0.5) * 0.2;
  return p;
}

/** The item counts of one sample (masked tokens, masked patches, pairs), from its index only. */
export function syntheticSampleCounts(index: number): LossTriple {
  return { mlm: 1 + (mix(index, 7) % 5), mim: 4, itm: 1 };
}

export function syntheticCounts(indices: ArrayLike<number>): LossTriple {
  const n: LossTriple = { mlm: 0, mim: 0, itm: 0 };
  for (let s = 0; s < indices.length; s++) {
    const c = syntheticSampleCounts(indices[s] as number);
    n.mlm += c.mlm;
    n.mim += c.mim;
    n.itm += c.itm;
  }
  return n;
}

export interface SyntheticResult {
  sums: LossTriple;
  counts: LossTriple;
  correct: { mlm: number; itm: number };
  grads: Float32Array;
}

/** Spends the configured work, then computes the micro-batch's exact synthetic gradient. */
export async function syntheticCompute(spec: SyntheticSpec, indices: ArrayLike<number>, normalizers: LossTriple, params: Float32Array): Promise<SyntheticResult> {
  const workMs = spec.workMsPerSample * indices.length;
  if (workMs > 0) {
    if (spec.work === 'sleep') await new Promise((r) => setTimeout(r, workMs));
    else for (const end = performance.now() + workMs; performance.now() < end; );
  }
  return syntheticGradients(indices, normalizers, params);
}

/** g = ∇ Σ_o Σ_samples count_{s,o} · L_s / N_o with L_s = ½·mean((p − t_s)²). */
export function syntheticGradients(indices: ArrayLike<number>, normalizers: LossTriple, params: Float32Array): SyntheticResult {
  const n = params.length;
  const grads = new Float32Array(n);
  const sums: LossTriple = { mlm: 0, mim: 0, itm: 0 };
  const counts: LossTriple = { mlm: 0, mim: 0, itm: 0 };
  const inv = (x: number): number => (x > 0 ? 1 / x : 0);
  for (let s = 0; s < indices.length; s++) {
    const x = indices[s] as number;
    const c = syntheticSampleCounts(x);
    const w = (c.mlm * inv(normalizers.mlm) + c.mim * inv(normalizers.mim) + c.itm * inv(normalizers.itm)) / n;
    let sq = 0;
    for (let i = 0; i < n; i++) {
      const d = (params[i] as number) - (mix(i, x) / 2 ** 31 - 1);
      sq += d * d;
      grads[i] = (grads[i] as number) + w * d;
    }
    const loss = (0.5 * sq) / n;
    sums.mlm += c.mlm * loss;
    sums.mim += c.mim * loss;
    sums.itm += c.itm * loss;
    counts.mlm += c.mlm;
    counts.mim += c.mim;
    counts.itm += c.itm;
  }
  return { sums, counts, correct: { mlm: 0, itm: 0 }, grads };
}
