import { AdamW } from '@m3ae/model/adamw';
import type { ParamLayout, TrainingSettings } from '@m3ae/protocol';

/**
 * What the run's optimizer is built from: the parameter layout (groups by name) and the resolved `training`. Plain
 * data, so that every shard thread builds the same optimizer over its range of the shared moments.
 */
export interface OptimizerSpec {
  layout: ParamLayout;
  training: TrainingSettings;
}

/**
 * The run's AdamW — pre-training and fine-tuning alike: learning rate, the ×head and ×multi-modal groups, betas,
 * epsilon, weight decay and clipping from the resolved `training`; linear warm-up over floor(warmupFraction · steps)
 * steps, then linear decay to 0 (`linear`, the official schedule) or no decay (`constant`). `memory`: moments in
 * shared memory (the sharded reduction's).
 */
export function adamwFor(spec: OptimizerSpec, memory?: { m: Float32Array; v: Float32Array }): AdamW {
  const { layout, training } = spec;
  return new AdamW(
    { entries: layout.entries.map((e) => ({ ...e, shape: [...e.shape], dtype: 'float32' as const })), size: layout.size, hash: layout.hash },
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
    memory,
  );
}
