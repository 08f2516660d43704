import { Counter, Gauge, Histogram } from 'prom-client';
import { JOB_OUTCOMES, type JobOutcome } from '@m3ae/protocol';
import { BaseMetrics, type BaseMetricsOptions } from './base-metrics.js';
import { checkedPhases, requireNonNegative } from './checks.js';
import { JOB_PHASES, type JobPhase } from './phases.js';


/** One micro-batch job as a worker ran it. */
export interface JobObservation {
  /** Wall time from taking the job to completing (or failing, or handing back) it. */
  durationSeconds: number;
  /** Samples in the micro-batch that were computed (skipped ones excluded). */
  samples: number;
  /** Real (non-padding) text tokens in the micro-batch; `m3ae_worker_tokens_total` only moves when given. */
  tokens?: number;
  /** Seconds per phase: fetch (parameters; 0 on a cache hit), compute (batch + forward/backward), encode, upload. */
  phases?: Partial<Record<JobPhase, number>>;
  /** @defaultValue 'completed' */
  outcome?: JobOutcome;
  /** The job's step, for `m3ae_worker_last_step`. */
  step?: number;
}

export interface WorkerMetricsOptions extends Omit<BaseMetricsOptions, 'labels'> {
  run: string;
  worker: string;
  /** tfjs backend; may be set later with `setBackend` once the compute thread has chosen it. */
  backend?: string;
  /** Buckets of `m3ae_worker_job_duration_seconds`. */
  jobBuckets?: number[];
}

const DEFAULT_JOB_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 600];

/** A worker's registry: jobs, their time breakdown, throughput, parameter cache, plus {@link BaseMetrics}. */
export class WorkerMetrics extends BaseMetrics {
  readonly run: string;
  readonly worker: string;
  private readonly m: {
    jobs: Counter<'outcome'>;
    jobDuration: Histogram;
    phaseSeconds: Counter<'phase'>;
    samples: Counter;
    tokens: Counter;
    paramCache: Counter<'result'>;
    busy: Gauge;
    lastStep: Gauge;
  };

  constructor(options: WorkerMetricsOptions) {
    super({
      ...options,
      labels: { run: options.run, worker: options.worker, ...(options.backend ? { backend: options.backend } : {}) },
    });
    this.run = options.run;
    this.worker = options.worker;
    const registers = [this.registry];
    this.m = {
      jobs: new Counter({
        name: 'm3ae_worker_jobs_total',
        help: 'Micro-batch jobs this worker finished, by outcome (completed, stale, failed, handed-back, refused).',
        labelNames: ['outcome'],
        registers,
      }),
      jobDuration: new Histogram({
        name: 'm3ae_worker_job_duration_seconds',
        help: 'Wall time of one micro-batch job on this worker.',
        buckets: options.jobBuckets ?? DEFAULT_JOB_BUCKETS,
        registers,
      }),
      phaseSeconds: new Counter({
        name: 'm3ae_worker_job_phase_seconds_total',
        help: 'Job time by phase (fetch parameters, compute, encode gradient, upload gradient).',
        labelNames: ['phase'],
        registers,
      }),
      samples: new Counter({ name: 'm3ae_worker_samples_total', help: 'Samples this worker computed gradients for.', registers }),
      tokens: new Counter({ name: 'm3ae_worker_tokens_total', help: 'Real text tokens this worker computed gradients for.', registers }),
      paramCache: new Counter({
        name: 'm3ae_worker_param_cache_total',
        help: 'Parameter-version lookups: hit (cached) or miss (fetched from Redis).',
        labelNames: ['result'],
        registers,
      }),
      busy: new Gauge({ name: 'm3ae_worker_busy', help: '1 while a job is being processed, else 0.', registers }),
      lastStep: new Gauge({ name: 'm3ae_worker_last_step', help: 'Step of the last job this worker took.', registers }),
    };
  }

  /** Sets the `backend` label on every series (once the compute thread reports its backend). */
  setBackend(backend: string): void {
    this.setLabel('backend', backend);
  }

  observeJob(obs: JobObservation): void {
    requireNonNegative('observeJob durationSeconds', obs.durationSeconds);
    requireNonNegative('observeJob samples', obs.samples);
    if (obs.tokens !== undefined) requireNonNegative('observeJob tokens', obs.tokens);
    const outcome = obs.outcome ?? 'completed';
    if (!(JOB_OUTCOMES as readonly string[]).includes(outcome)) {
      throw new Error(`metrics: observeJob outcome ${JSON.stringify(outcome)} is not one of ${JOB_OUTCOMES.join(', ')}`);
    }
    const phases = checkedPhases('observeJob phases', JOB_PHASES, obs.phases);
    this.m.jobs.inc({ outcome });
    this.m.jobDuration.observe(obs.durationSeconds);
    if (outcome === 'completed') {
      this.m.samples.inc(obs.samples);
      if (obs.tokens !== undefined) this.m.tokens.inc(obs.tokens);
    }
    for (const [phase, seconds] of phases) this.m.phaseSeconds.inc({ phase }, seconds);
    if (obs.step !== undefined) this.m.lastStep.set(obs.step);
  }

  /** A parameter version was found in the per-version cache (`true`) or fetched (`false`). */
  paramLookup(hit: boolean): void {
    this.m.paramCache.inc({ result: hit ? 'hit' : 'miss' });
  }

  setBusy(busy: boolean): void {
    this.m.busy.set(busy ? 1 : 0);
  }
}
