import type { RunConfig } from '@m3ae/protocol';

/** Optimizer state in a checkpoint (structurally @m3ae/model's `OptimizerState`). */
export interface FlatOptimizerState {
  step: number;
  m: Float32Array;
  v: Float32Array;
}

/** An optimizer over the flat parameter vector; the coordinator owns one. */
export interface FlatOptimizer {
  readonly name: string;
  /** Applies one update in place with learning rate `lr` (the schedule's value for this step). */
  step(params: Float32Array, grads: Float32Array, lr: number): void;
  /** State to checkpoint, or undefined for a stateless optimizer. */
  getState(): FlatOptimizerState | undefined;
  setState(state: FlatOptimizerState): void;
}

/** Plain SGD: the stand-in used where no AdamW is available (and a stateless baseline). */
export class SgdOptimizer implements FlatOptimizer {
  readonly name = 'sgd';
  step(params: Float32Array, grads: Float32Array, lr: number): void {
    for (let i = 0; i < params.length; i++) params[i] = (params[i] as number) - lr * (grads[i] as number);
  }
  getState(): undefined {
    return undefined;
  }
  setState(): void {
    // stateless
  }
}

/**
 * The learning rate of `step` (0-based): linear warm-up over floor(warmupFraction · steps) steps, then linear
 * decay to 0 (as `get_linear_schedule_with_warmup` in the official code), a cosine decay, or constant.
 */
export function learningRateAt(step: number, training: RunConfig['training']): number {
  const total = training.steps;
  const warmup = Math.floor(training.warmupFraction * total);
  const base = training.learningRate;
  if (step < warmup) return (base * step) / Math.max(1, warmup);
  const progress = (step - warmup) / Math.max(1, total - warmup);
  switch (training.schedule) {
    case 'constant':
      return base;
    case 'linear':
      return base * Math.max(0, 1 - progress);
    case 'cosine':
      return base * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress)));
  }
}

/** L2 norm of a flat vector, accumulated in float64 in index order (deterministic). */
export function globalNorm(values: Float32Array): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as number;
    s += v * v;
  }
  return Math.sqrt(s);
}

/** Scales `grads` in place so that its norm is at most `maxNorm` (0 = no clipping); returns the factor. */
export function clipByGlobalNorm(grads: Float32Array, norm: number, maxNorm: number): number {
  if (maxNorm <= 0 || !(norm > maxNorm)) return 1;
  const scale = maxNorm / (norm + 1e-6);
  for (let i = 0; i < grads.length; i++) grads[i] = (grads[i] as number) * scale;
  return scale;
}
