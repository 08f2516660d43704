import type { MicroBatchJob, RunConfig } from '@m3ae/protocol';
import type { GradientComputer, MicroBatchResult } from './gradient-computer.js';

/** Real M3AE gradients (TensorFlow.js): the micro-batch is built from the shard dataset by sample index. */
export class ModelComputer implements GradientComputer {
  readonly manifestHash = '';
  readonly paramCount = 0;
  readonly backend = 'none';
  static async create(_config: RunConfig): Promise<ModelComputer> {
    throw new Error('compute.kind "model" needs @m3ae/model computeGradients, which has not landed yet; use compute.kind "synthetic"');
  }
  async compute(_job: MicroBatchJob, _params: Float32Array): Promise<MicroBatchResult> {
    throw new Error('unreachable');
  }
  async dispose(): Promise<void> {
    // holds nothing to release
  }
}
