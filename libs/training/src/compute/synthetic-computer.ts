import { pretrainTotals, syntheticCompute, syntheticManifest, type SyntheticSpec } from '@m3ae/protocol';
import type { GradientComputer, MicroBatchResult } from './gradient-computer.js';
import type { ComputeJob } from '../gradient-source.js';

/** Fixed work and deterministic gradients of the synthetic quadratic workload (see @m3ae/protocol). */
export class SyntheticComputer implements GradientComputer {
  readonly manifestHash: string;
  readonly paramCount: number;
  readonly backend = 'synthetic';
  constructor(private readonly spec: SyntheticSpec) {
    this.paramCount = spec.paramCount;
    this.manifestHash = syntheticManifest(spec.paramCount).hash;
  }
  async compute(job: ComputeJob, params: Float32Array): Promise<MicroBatchResult> {
    return await syntheticCompute(this.spec, job.indices, pretrainTotals(job.normalizers), params);
  }
  async dispose(): Promise<void> {
    // holds nothing to release
  }
}
