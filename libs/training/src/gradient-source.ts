import type { BlobRef, MicroBatchJob, ObjectiveTotals, StepPhases, StepReport } from '@m3ae/protocol';
import type { BlobTransport } from './reduction/shard-host.js';
import type { StepReduction } from './reduction/sharded-reduction.js';

/** A micro-batch as the trainer plans it: the whole job but its transport (copy number, parameter blob). */
export type PlannedJob = Omit<MicroBatchJob, 'copy' | 'params'>;

/**
 * What a gradient computer gets of a job: the plan, its copy number (0 in process), and an identifier of the
 * parameter vector's content in `params` (its shards' checksums; a computer reloads its model when they change). A
 * {@link MicroBatchJob} from the queue is one.
 */
export type ComputeJob = PlannedJob & { copy: number; params: readonly Pick<BlobRef, 'checksum'>[] };

/** One step's work, planned by the trainer and handed to a {@link GradientSource}. */
export interface StepWork {
  step: number;
  /** The parameter version the step's gradients are computed at (the step number). */
  version: number;
  jobs: PlannedJob[];
  /** Exact item counts of each job, as its computer must report them (a mismatch means other data or masking). */
  expected: ObjectiveTotals[];
  /** The global counts every job's summed losses are divided by. */
  normalizers: ObjectiveTotals;
  samples: number;
}

/** What a source measured while it gathered one step. */
export interface GatherStats {
  phases: Pick<StepPhases, 'publishMs' | 'enqueueMs' | 'idleMs' | 'reduceMs'>;
  worker: StepReport['worker'];
  bytes: StepReport['bytes'];
  jobs: Omit<StepReport['jobs'], 'count'>;
  /** Who computed the counted contributions. */
  workers: string[];
  /** Times the source had to rebuild its transport state during the step (a Redis that lost the run). */
  recoveries: number;
}

/** Thrown out of {@link GradientSource.gather} when the trainer asked to stop: the step is abandoned. */
export class StopRequested extends Error {
  override readonly name = 'StopRequested';
}

/**
 * Where a step's gradient contributions come from — the one seam of the trainer. Two implementations: the
 * BullMQ/Redis workers of a cluster (`@m3ae/coordinator`) and computers in this process (`InProcessSource`, with
 * optional threads). Either way each job's contribution is added to the step's {@link StepReduction}, which
 * sums in job order: the parameters do not depend on which source computed them.
 */
export interface GradientSource {
  /** Called once when the trainer's state is loaded (fresh or resumed), before the first step. */
  start(info: { startStep: number }): Promise<void>;
  /**
   * Computes every job of `work` at `reducer.params` and adds each job's contribution to `reducer` until it is complete.
   * Throws {@link StopRequested} when `shouldStop()` turns true before that.
   */
  gather(work: StepWork, reducer: StepReduction, shouldStop: () => boolean): Promise<GatherStats>;
  /** How the reduction's shards reach the blobs of this source's contributions (a cluster's Redis); absent in process. */
  readonly blobTransport?: BlobTransport | undefined;
  /** After the optimizer applied the step: drop what the step left in transport. */
  finishStep(work: StepWork): Promise<void>;
}
