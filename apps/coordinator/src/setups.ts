import type { RunConfig } from '@m3ae/protocol';
import { syntheticSetup, type TrainingSetup } from './training-setup.js';

/** The training setup a run configuration asks for. */
export async function createSetup(config: RunConfig): Promise<TrainingSetup> {
  if (config.compute.kind === 'synthetic') return syntheticSetup(config);
  const { modelSetup } = await import('./model-setup.js');
  return await modelSetup(config);
}
