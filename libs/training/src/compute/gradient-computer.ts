import type { ObjectiveTotals, RunConfig } from '@m3ae/protocol';
import type { ComputeJob } from '../gradient-source.js';

/** What one micro-batch yields (pre-training: structurally @m3ae/model's `MicroBatchResult`). */
export interface MicroBatchResult {
  sums: ObjectiveTotals;
  counts: ObjectiveTotals;
  correct: ObjectiveTotals;
  /** Real (non-padding) text tokens read (absent: not counted, as the synthetic workload). */
  tokens?: number;
  /** Flat, canonical parameter order; g_k = ∇ Σ_o w_o · S_{o,k} / N_o. A new array each call: the caller's to keep and change. */
  grads: Float32Array;
}

/**
 * The compute seam of workers and of the in-process trainer: real M3AE gradients with TensorFlow.js (pre-training
 * or a downstream task), or the synthetic workload. `params` is the parameter vector of `job.version`, passed again
 * for every job of that version; `paramsIdentity(job.params)` identifies its content (implementations may keep what they
 * derived from it until it changes).
 */
export interface GradientComputer {
  readonly manifestHash: string;
  readonly paramCount: number;
  /** The tfjs backend in use, or `synthetic`. */
  readonly backend: string;
  compute(job: ComputeJob, params: Float32Array): Promise<MicroBatchResult>;
  dispose(): Promise<void>;
}

/** Real (non-padding) tokens of a batch: the 1s of its attention mask. */
export function realTokens(attentionMask: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < attentionMask.length; i++) n += attentionMask[i] === 1 ? 1 : 0;
  return n;
}

/** Builds the computer a run configuration asks for, in this thread. */
export async function createComputer(config: RunConfig): Promise<GradientComputer> {
  if (config.compute.kind === 'synthetic') {
    const { SyntheticComputer } = await import('./synthetic-computer.js');
    return new SyntheticComputer(config.compute.synthetic);
  }
  if (config.task.name !== 'pretrain') {
    const { TaskComputer } = await import('./task-computer.js');
    return await TaskComputer.create(config);
  }
  const { ModelComputer } = await import('./model-computer.js');
  return await ModelComputer.create(config);
}
