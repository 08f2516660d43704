import { AdamW } from '@m3ae/model';
import type { OptimizerState, ParamLayout, TrainingSettings } from '@m3ae/protocol';

/** An optimizer over the flat parameter vector, with its schedule and gradient clipping; the trainer owns one. */
export interface FlatOptimizer {
  readonly name: string;
  /** Applies update number `step` (0-based) in place from the summed gradient (which it may clip in place). */
  update(params: Float32Array, grads: Float32Array, step: number): { learningRate: number; gradientNorm: number };
  getState(): OptimizerState | undefined;
  setState(state: OptimizerState): void;
}

/** @m3ae/model's AdamW (official groups, warm-up, linear decay, clipping) behind the trainer's interface. */
export class AdamWOptimizer implements FlatOptimizer {
  readonly name = 'adamw';
  constructor(private readonly adamw: AdamW) {}
  update(params: Float32Array, grads: Float32Array, step: number): { learningRate: number; gradientNorm: number } {
    if (this.adamw.step !== step) throw new Error(`AdamW has taken ${this.adamw.step} steps; the trainer is at step ${step}`);
    const info = this.adamw.update(params, grads);
    return { learningRate: info.learningRate, gradientNorm: info.gradNorm };
  }
  getState(): OptimizerState {
    return this.adamw.getState();
  }
  setState(state: OptimizerState): void {
    this.adamw.setState(state);
  }
}

/**
 * The run's AdamW — pre-training and fine-tuning alike: learning rate, the ×head and ×multi-modal groups, betas,
 * epsilon, weight decay and clipping from the resolved `training`; linear warm-up over floor(warmupFraction · steps)
 * steps, then linear decay to 0 (`linear`, the official schedule) or no decay (`constant`).
 */
export function adamwFor(manifest: ParamLayout, training: TrainingSettings): AdamWOptimizer {
  return new AdamWOptimizer(
    new AdamW(
      { entries: manifest.entries.map((e) => ({ ...e, shape: [...e.shape], dtype: 'float32' as const })), size: manifest.size, hash: manifest.hash },
      {
        learningRate: training.learningRate,
        totalSteps: training.steps,
        warmupFraction: training.warmupFraction,
        betas: [training.beta1, training.beta2],
        eps: training.epsilon,
        weightDecay: training.weightDecay,
        lrMultiplierHead: training.lrMultiplierHead,
        lrMultiplierMultiModal: training.lrMultiplierMultiModal,
        clipNorm: training.clipNorm,
        endLearningRate: training.schedule === 'constant' ? training.learningRate : 0,
      },
    ),
  );
}
