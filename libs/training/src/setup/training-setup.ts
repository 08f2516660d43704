import { pretrainTraining, syntheticCounts, syntheticInitialParams, syntheticManifest, type ObjectiveTotals, type ParamLayout, type RunConfig } from '@m3ae/protocol';
import type { OptimizerSpec } from '../optimizer.js';

export interface MicroBatchSlice {
  step: number;
  seed: number;
  globalBatchSize: number;
  indices: readonly number[];
  positions: readonly number[];
}

/** How many steps a run takes and how each step's samples are drawn and split into jobs. */
export interface StepSchedule {
  steps: number;
  /** Samples per step (the last step of an epoch has fewer when `dropLast` is false). */
  globalBatch: number;
  /** Samples per micro-batch (a step's last one has fewer when the step's samples are not a multiple). */
  microBatch: number;
  /** Micro-batches per job (`training.microBatchesPerJob`), summed by the job's computer into one contribution. */
  microBatchesPerJob: number;
  /** Drop an epoch's last incomplete batch (pre-training) or train on it (fine-tuning, as the official loaders). */
  dropLast: boolean;
}

/** The schedule of a pre-training (or synthetic) run: straight from `training`. */
export function pretrainSchedule(config: RunConfig): StepSchedule {
  const t = pretrainTraining(config);
  return { steps: t.steps, globalBatch: t.globalBatch, microBatch: t.microBatch, microBatchesPerJob: t.microBatchesPerJob, dropLast: true };
}

/**
 * What the trainer needs to know about what is being trained — the model (pre-training or a downstream task,
 * or the synthetic workload), its data and optimizer — and nothing about how gradients are computed.
 */
export interface TrainingSetup {
  readonly kind: 'model' | 'task' | 'synthetic';
  readonly manifest: ParamLayout;
  /** Stored in checkpoints as `config` (the model configuration). */
  readonly modelConfig: unknown;
  readonly fixedParams?: ReadonlyMap<string, Float32Array>;
  readonly datasetSize: number;
  /** Identifies the dataset; stored in checkpoints and checked on resume. */
  readonly datasetHash: string;
  /** Weight of each objective in the total loss (absent or 0 = not trained). */
  readonly objectiveWeights: ObjectiveTotals;
  readonly schedule: StepSchedule;
  initialParams(): Float32Array;
  /** Exact item counts (masked tokens, masked patches, pairs; a task's examples) of a micro-batch, as its worker will count them. */
  counts(slice: MicroBatchSlice): Promise<ObjectiveTotals>;
  /** The run's optimizer (AdamW over this layout with the resolved `training`). */
  readonly optimizer: OptimizerSpec;
  /** Metadata the setup adds to every checkpoint (a task's description and model-selection state). */
  checkpointMetadata?(): Record<string, string>;
  /** Restores the setup's state from a checkpoint's metadata (on resume). */
  restore?(metadata: Readonly<Record<string, string>>): void;
  /** Called after `done` steps are applied, with the new parameters and the step's losses (a task validates and selects its model here). */
  afterStep?(done: number, params: Float32Array, report: { losses: ObjectiveTotals; accuracy: ObjectiveTotals; samples: number }): Promise<void>;
  close?(): Promise<void>;
}

/** The synthetic workload of @m3ae/protocol: no model, no data files, the same contract. */
export function syntheticSetup(config: RunConfig): TrainingSetup {
  const spec = config.compute.synthetic;
  const manifest = syntheticManifest(spec.paramCount);
  return {
    kind: 'synthetic',
    manifest,
    modelConfig: { synthetic: spec },
    datasetSize: spec.datasetSize,
    datasetHash: `synthetic-${spec.datasetSize}`,
    objectiveWeights: { mlm: 1, mim: 1, itm: 1 },
    schedule: pretrainSchedule(config),
    initialParams: () => syntheticInitialParams(spec.paramCount, config.seed),
    counts: async (slice) => syntheticCounts(slice.indices),
    optimizer: { layout: manifest, training: pretrainTraining(config) },
  };
}
