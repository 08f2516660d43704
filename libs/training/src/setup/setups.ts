import type { RunConfig } from '@m3ae/protocol';
import { isTaskRun } from '@m3ae/tasks';
import { modelSetup, type ModelSetupOptions } from './model-setup.js';
import { taskSetup, type TaskSetupOptions } from './task-setup.js';
import { syntheticSetup, type TrainingSetup } from './training-setup.js';

/** Options of either setup: lines to log, a task's validations, a pre-training run's held-out evaluations. */
export type SetupOptions = TaskSetupOptions & ModelSetupOptions;

/** The training setup a run configuration asks for: M3AE pre-training on shards, a downstream task, or the synthetic workload. */
export async function createSetup(config: RunConfig, options: SetupOptions = {}): Promise<TrainingSetup> {
  if (config.compute.kind === 'synthetic') return syntheticSetup(config);
  return isTaskRun(config) ? await taskSetup(config, options) : await modelSetup(config, options);
}
