import type { RunConfig } from '@m3ae/protocol';
import type { TrainingSetup } from './training-setup.js';

/** The real M3AE setup (model manifest, AdamW, shard dataset, exact normalizers). */
export async function modelSetup(_config: RunConfig): Promise<TrainingSetup> {
  throw new Error('compute.kind "model" needs @m3ae/model computeGradients and @m3ae/data pretrainCounts, which have not landed yet; use compute.kind "synthetic"');
}
