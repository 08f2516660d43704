import { AdamW } from '@m3ae/model';
import type { RunConfig } from '@m3ae/protocol';
import type { SetupManifest } from './training-setup.js';

/** Optimizer state in a checkpoint (structurally @m3ae/model's `OptimizerState`). */
export interface FlatOptimizerState {
  step: number;
  m: Float32Array;
  v: Float32Array;
}

/** An optimizer over the flat parameter vector, with its schedule and gradient clipping; the coordinator owns one. */
export interface FlatOptimizer {
  readonly name: string;
  /** Applies update number `step` (0-based) in place from the summed gradient (which it may clip in place). */
  update(params: Float32Array, grads: Float32Array, step: number): { learningRate: number; gradientNorm: number };
  getState(): FlatOptimizerState | undefined;
  setState(state: FlatOptimizerState): void;
}

/** @m3ae/model's AdamW (official groups, warm-up, linear decay, clipping) behind the coordinator's interface. */
export class AdamWOptimizer implements FlatOptimizer {
  readonly name = 'adamw';
  constructor(private readonly adamw: AdamW) {}
  update(params: Float32Array, grads: Float32Array, step: number): { learningRate: number; gradientNorm: number } {
    if (this.adamw.step !== step) throw new Error(`AdamW has taken ${this.adamw.step} steps; the coordinator is at step ${step}`);
    const info = this.adamw.update(params, grads);
    return { learningRate: info.learningRate, gradientNorm: info.gradNorm };
  }
  getState(): FlatOptimizerState {
    return this.adamw.getState();
  }
  setState(state: FlatOptimizerState): void {
    this.adamw.setState(state);
  }
}

/**
 * The run's AdamW: learning rate, betas, epsilon, weight decay and clipping from `training`; linear warm-up
 * over floor(warmupFraction · steps) steps, then linear decay to 0 (`linear`, the official schedule) or no
 * decay (`constant`).
 */
export function adamwFor(manifest: SetupManifest, training: RunConfig['training']): AdamWOptimizer {
  return new AdamWOptimizer(
    new AdamW(
      { entries: manifest.entries.map((e) => ({ ...e, shape: [...e.shape], dtype: 'float32' as const })), size: manifest.size, hash: manifest.hash },
      {
        learningRate: training.learningRate,
        totalSteps: training.steps,
        warmupSteps: Math.floor(training.warmupFraction * training.steps),
        betas: [training.beta1, training.beta2],
        eps: training.epsilon,
        weightDecay: training.weightDecay,
        ...(training.clipNorm > 0 ? { maxGradNorm: training.clipNorm } : {}),
        endLearningRate: training.schedule === 'constant' ? training.learningRate : 0,
      },
    ),
  );
}
