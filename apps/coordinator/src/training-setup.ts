import { syntheticCounts, syntheticInitialParams, syntheticManifest, type LossTriple, type RunConfig } from '@m3ae/protocol';
import { adamwFor, type FlatOptimizer } from './optimizer.js';

/** The parameter layout (structurally @m3ae/model's `ParamManifest` / `CheckpointManifest`). */
export interface SetupManifest {
  readonly entries: readonly { readonly name: string; readonly shape: readonly number[]; readonly offset: number | null; readonly trainable: boolean }[];
  readonly size: number;
  readonly hash: string;
}

export interface MicroBatchSlice {
  step: number;
  seed: number;
  globalBatchSize: number;
  indices: readonly number[];
  positions: readonly number[];
}

/**
 * What the coordinator needs to know about what is being trained — the model (or the synthetic workload),
 * its data and optimizer — and nothing about how gradients are computed.
 */
export interface TrainingSetup {
  readonly kind: 'model' | 'synthetic';
  readonly manifest: SetupManifest;
  /** Stored in checkpoints as `config` (the model configuration). */
  readonly modelConfig: unknown;
  readonly fixedParams?: ReadonlyMap<string, Float32Array>;
  readonly datasetSize: number;
  /** Identifies the dataset; stored in checkpoints and checked on resume. */
  readonly datasetHash: string;
  /** Weight of each objective in the total loss (0 = disabled). */
  readonly objectiveWeights: LossTriple;
  initialParams(): Float32Array;
  /** Exact item counts (masked tokens, masked patches, pairs) of a micro-batch, as its worker will count them. */
  counts(slice: MicroBatchSlice): Promise<LossTriple>;
  createOptimizer(): FlatOptimizer;
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
    initialParams: () => syntheticInitialParams(spec.paramCount, config.seed),
    counts: async (slice) => syntheticCounts(slice.indices),
    createOptimizer: () => adamwFor(manifest, config.training),
  };
}
