import { randomUUID } from 'node:crypto';
import type { Queue } from 'bullmq';
import { pino, type Logger } from 'pino';
import { jobsPerStep, type RunConfig, type StepReport } from '@m3ae/protocol';
import { Trainer, type RunSummary, type TrainerEvents, type TrainingSetup } from '@m3ae/training';
import { RedisGradientSource, type SourceEvents } from './redis-source.js';

export interface CoordinatorEvents extends SourceEvents, Omit<TrainerEvents, 'onStart'> {
  /** Connected, state loaded (fresh or from a checkpoint), Redis cleared: training starts at `startStep`. */
  onStart?(info: { startStep: number; queue: Queue }): void;
  onStep?(report: StepReport): void;
}

export interface CoordinatorOptions {
  config: RunConfig;
  setup: TrainingSetup;
  /** Continue from the latest checkpoint of `checkpoint.dir` (starts fresh when there is none). */
  resume?: boolean;
  logger?: Logger;
  events?: CoordinatorEvents;
}

/**
 * The coordinator of one run on a cluster: the {@link Trainer} (parameters, optimizer, sampler, checkpoints — the
 * one training loop) fed by the BullMQ/Redis workers through a {@link RedisGradientSource}. It owns the run's
 * Redis connections for the run's lifetime and removes the run from Redis at the end.
 */
export class Coordinator {
  readonly incarnation = randomUUID();
  private readonly log: Logger;
  private readonly source: RedisGradientSource;
  private readonly trainer: Trainer;

  constructor(private readonly options: CoordinatorOptions) {
    const { config, setup, events } = options;
    const base = options.logger ?? pino({ level: 'silent' });
    this.log = base.child({ ...('run' in base.bindings() ? {} : { run: config.runId }), incarnation: this.incarnation.slice(0, 8) });
    this.source = new RedisGradientSource({
      config,
      incarnation: this.incarnation,
      manifestHash: setup.manifest.hash,
      paramCount: setup.manifest.size,
      jobsPerFullStep: jobsPerStep(setup.schedule.globalBatch, setup.schedule),
      logger: this.log,
      events,
    });
    this.trainer = new Trainer({
      config,
      setup,
      source: this.source,
      incarnation: this.incarnation,
      resume: options.resume,
      logger: this.log,
      events: {
        onStart: ({ startStep }) => events?.onStart?.({ startStep, queue: this.source.jobQueue }),
        ...(events?.onStep ? { onStep: events.onStep } : {}),
        ...(events?.onCheckpoint ? { onCheckpoint: events.onCheckpoint } : {}),
      },
    });
  }

  get keys(): RedisGradientSource['keys'] {
    return this.source.keys;
  }

  /** Asks the run to stop: the current step is abandoned, a checkpoint written, Redis cleaned. */
  stop(): void {
    this.source.requestStop();
    this.trainer.stop();
  }

  /** Current parameters (a live view; copy it to keep it). */
  get parameters(): Float32Array {
    return this.trainer.parameters;
  }

  async run(): Promise<RunSummary> {
    try {
      await this.source.connect();
      return await this.trainer.run();
    } finally {
      await this.source.close();
      await this.options.setup.close?.();
    }
  }
}
