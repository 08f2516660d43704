import type { RunConfig } from '@m3ae/protocol';
import { modelSetup } from './model-setup.js';
import { syntheticSetup, type TrainingSetup } from './training-setup.js';

/** The training setup a run configuration asks for: the M3AE model on shards, or the synthetic workload. */
export async function createSetup(config: RunConfig): Promise<TrainingSetup> {
  return config.compute.kind === 'synthetic' ? syntheticSetup(config) : await modelSetup(config);
}
