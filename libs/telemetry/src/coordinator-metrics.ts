import type { Counter } from 'prom-client';
import { OBJECTIVES, type Objective } from '@m3ae/protocol';
import { BaseMetrics, type BaseMetricsOptions } from './base-metrics.js';
import { checkedPhases, requireNonNegative } from './checks.js';
import { coordinatorSeries, type CoordinatorSeries } from './coordinator-series.js';
import { JOB_PHASES, STEP_PHASES, type JobPhase, type StepPhase } from './phases.js';

/** Pre-training's objectives and the downstream tasks' (VQA, classification, retrieval): the wire protocol's. */
export { OBJECTIVES, type Objective };
/** The objectives that predict a class (all but masked image modelling, a regression). */
export const ACCURACY_OBJECTIVES = ['mlm', 'itm', 'vqa', 'cls', 'irtr'] as const;
export type AccuracyObjective = (typeof ACCURACY_OBJECTIVES)[number];


/** One completed optimizer step, as the coordinator saw it. */
export interface StepObservation {
  /** The step number just completed (the value `/status` and the gauge `m3ae_training_step` report). */
  step: number;
  /** Wall time of the step, from publishing version v to having published v + 1. */
  durationSeconds: number;
  /** Normalised global-batch losses; `total` = Σ w_o · S_o / N_o. Disabled objectives are left out. */
  losses: { total: number } & Partial<Record<Objective, number>>;
  /** Global-batch accuracies in [0, 1]. */
  accuracy?: Partial<Record<AccuracyObjective, number>>;
  learningRate: number;
  /** Global gradient L2 norm before clipping. */
  gradientNorm: number;
  /** Samples in the global batch (minus skipped ones). */
  samples: number;
  /** Real (non-padding) text tokens in the global batch; `m3ae_tokens_total` only moves when given. */
  tokens?: number;
  /** Coordinator wall-clock seconds per phase (they add up to the step); unmeasured phases left out. */
  phases?: Partial<Record<StepPhase, number>>;
  /** Mean seconds per accepted job by phase, as the workers reported them. */
  jobPhases?: Partial<Record<JobPhase, number>>;
}

export interface RunInfo {
  /** Steps the run trains for; drives `m3ae_training_steps_remaining` and the ETA. */
  totalSteps?: number;
  /** Micro-batch jobs per step (global batch / micro-batch): the most workers a step can use. */
  jobsPerStep?: number;
  globalBatchSize?: number;
  /** The step training (re)starts from (0, or the resumed checkpoint's step). */
  startStep?: number;
}

/** One held-out evaluation of a pre-training run (structurally part of @m3ae/training's `EvaluationEntry`). */
export interface EvaluationObservation {
  step: number;
  /** Mean per masked token (nats), per masked patch, per pair. */
  loss: { mlm: number; mim: number; itm: number };
  /** In [0, 1]. */
  accuracy: { mlm: number; itm: number };
  /** The unigram entropy of the training captions, a unigram model's loss on the held-out masked tokens, ITM chance. */
  baseline: { unigramEntropy: number; unigramHeldOut: number; itmChance: number };
}

export interface CheckpointObservation {
  step: number;
  durationSeconds: number;
  /** @defaultValue true */
  ok?: boolean;
}

export interface CoordinatorMetricsOptions extends Omit<BaseMetricsOptions, 'labels'> {
  run: string;
  /** tfjs backend of the coordinator's optimizer, if it uses one. */
  backend?: string;
  /** Buckets of `m3ae_step_duration_seconds`. */
  stepBuckets?: number[];
  /** Steps averaged for `/status` throughput and the ETA. @defaultValue 20 */
  throughputWindow?: number;
  /** Clock in milliseconds (tests). @defaultValue Date.now */
  now?: () => number;
}

/** The `/status` document of the coordinator. */
export interface CoordinatorStatus {
  run: string;
  state: 'starting' | 'training' | 'finished';
  step: number;
  totalSteps: number | null;
  losses: ({ total: number } & Partial<Record<Objective, number>>) | null;
  accuracy: Partial<Record<AccuracyObjective, number>> | null;
  learningRate: number | null;
  gradientNorm: number | null;
  throughput: { samplesPerSecond: number; tokensPerSecond: number; secondsPerStep: number } | null;
  workers: { active: number; ids: string[] };
  jobs: {
    perStep: number | null;
    accepted: number;
    rejected: number;
    retried: number;
    redelivered: number;
    duplicated: number;
    backups: number;
  };
  checkpoint: { step: number; ageSeconds: number } | null;
  etaSeconds: number | null;
  updatedAt: string;
}

const DEFAULT_STEP_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 600];

/**
 * The coordinator's registry: training curves, throughput, step-time breakdown, job accounting, workers,
 * checkpoints, plus everything in {@link BaseMetrics}. Every series carries `run` (and `backend` if given).
 */
export class CoordinatorMetrics extends BaseMetrics {
  readonly run: string;
  private readonly now: () => number;
  private readonly window: number;
  private readonly recent: { samples: number; tokens: number; seconds: number }[] = [];
  private readonly startedAt: number;
  private info: RunInfo = {};
  private last: StepObservation | undefined;
  private step = 0;
  private workerIds: string[] = [];
  private activeWorkers = 0;
  private lastCheckpoint: { step: number; at: number } | undefined;
  private readonly tally = { accepted: 0, rejected: 0, retried: 0, redelivered: 0, duplicated: 0, backups: 0 };

  private readonly m: CoordinatorSeries;

  constructor(options: CoordinatorMetricsOptions) {
    super({ ...options, labels: { run: options.run, ...(options.backend ? { backend: options.backend } : {}) } });
    this.run = options.run;
    this.now = options.now ?? Date.now;
    this.window = options.throughputWindow ?? 20;
    if (!(Number.isInteger(this.window) && this.window >= 1)) {
      throw new Error(`metrics: throughputWindow is ${options.throughputWindow}; expected an integer ≥ 1`);
    }
    this.startedAt = this.now();
    const checkpointAge = (): number => this.checkpointAgeSeconds();
    this.m = coordinatorSeries([this.registry], { stepBuckets: options.stepBuckets ?? DEFAULT_STEP_BUCKETS, checkpointAge });
  }

  /** Static facts of the run; call once at start (and again after a resume). */
  setRunInfo(info: RunInfo): void {
    for (const [key, value] of Object.entries(info)) {
      if (value !== undefined && !(Number.isInteger(value) && (value as number) >= 0)) {
        throw new Error(`metrics: setRunInfo ${key} is ${String(value)}; expected an integer ≥ 0`);
      }
    }
    this.info = { ...this.info, ...definedOnly(info) };
    if (info.totalSteps !== undefined) this.m.targetSteps.set(info.totalSteps);
    if (info.jobsPerStep !== undefined) this.m.jobsPerStep.set(info.jobsPerStep);
    if (info.globalBatchSize !== undefined) this.m.globalBatch.set(info.globalBatchSize);
    if (info.startStep !== undefined) {
      this.step = info.startStep;
      this.m.step.set(info.startStep);
    }
    this.updateProgress();
  }

  /** Records one completed step. */
  observeStep(obs: StepObservation): void {
    requireCount('observeStep step', obs.step);
    requireNonNegative('observeStep durationSeconds', obs.durationSeconds);
    requireNonNegative('observeStep samples', obs.samples);
    if (obs.tokens !== undefined) requireNonNegative('observeStep tokens', obs.tokens);
    this.step = obs.step;
    this.last = obs;
    this.m.step.set(obs.step);
    this.m.stepsCompleted.inc();
    this.m.stepDuration.observe(obs.durationSeconds);
    // A diverged loss is exported as NaN/Inf on purpose: the curve should show it.
    this.m.loss.set({ objective: 'total' }, obs.losses.total);
    for (const o of OBJECTIVES) {
      const v = obs.losses[o];
      if (v !== undefined) this.m.loss.set({ objective: o }, v);
    }
    for (const o of ACCURACY_OBJECTIVES) {
      const v = obs.accuracy?.[o];
      if (v !== undefined) this.m.accuracy.set({ objective: o }, v);
    }
    this.m.learningRate.set(obs.learningRate);
    this.m.gradientNorm.set(obs.gradientNorm);
    this.m.samples.inc(obs.samples);
    if (obs.tokens !== undefined) this.m.tokens.inc(obs.tokens);
    addPhases('observeStep phases', STEP_PHASES, obs.phases, this.m.phaseSeconds);
    addPhases('observeStep jobPhases', JOB_PHASES, obs.jobPhases, this.m.jobPhaseSeconds);
    this.recent.push({ samples: obs.samples, tokens: obs.tokens ?? 0, seconds: obs.durationSeconds });
    if (this.recent.length > this.window) this.recent.shift();
    this.updateProgress();
  }

  jobEnqueued(count = 1): void {
    this.m.jobsEnqueued.inc(count);
  }

  /** A verified result counted into its step; `worker` is the id of the worker that computed it. */
  jobAccepted(worker?: string): void {
    if (worker) this.m.jobsAccepted.inc({ worker });
    else this.m.jobsAccepted.inc();
    this.tally.accepted++;
  }

  jobRetried(count = 1): void {
    this.m.jobsRetried.inc(count);
    this.tally.retried += count;
  }

  jobRedelivered(count = 1): void {
    this.m.jobsRedelivered.inc(count);
    this.tally.redelivered += count;
  }

  /** A refused result; `reason` is a short kebab-case word (`stale-step`, `checksum`, `non-finite`, …). */
  jobRejected(reason: string, count = 1): void {
    if (!/^[a-z][a-z0-9-]*$/.test(reason)) {
      throw new Error(`metrics: jobRejected reason ${JSON.stringify(reason)}; expected a short kebab-case word`);
    }
    this.m.jobsRejected.inc({ reason }, count);
    this.tally.rejected += count;
  }

  jobDuplicated(count = 1): void {
    this.m.jobsDuplicated.inc(count);
    this.tally.duplicated += count;
  }

  backupJobEnqueued(count = 1): void {
    this.m.backupEnqueued.inc(count);
    this.tally.backups += count;
  }

  backupJobWon(count = 1): void {
    this.m.backupWon.inc(count);
  }

  /** Workers currently seen; `ids` (optional) only feed `/status`, never a label. */
  setActiveWorkers(count: number, ids: readonly string[] = []): void {
    requireCount('setActiveWorkers count', count);
    this.activeWorkers = count;
    this.workerIds = [...ids];
    this.m.workersActive.set(count);
  }

  /** A fine-tuning run validated its model after `step` steps (score in [0, 1]); `best` is the selected model so far. */
  observeValidation(obs: { step: number; score: number; best: { step: number; score: number } }): void {
    requireCount('observeValidation step', obs.step);
    for (const [v, what] of [[obs.score, 'score'], [obs.best.score, 'best.score']] as const) {
      if (!(v >= 0 && v <= 1)) throw new RangeError(`observeValidation ${what}: got ${String(v)}; expected a score in [0, 1]`);
    }
    this.m.validationScore.set({ model: 'last' }, obs.score);
    this.m.validationStep.set({ model: 'last' }, obs.step);
    this.m.validationScore.set({ model: 'best' }, obs.best.score);
    this.m.validationStep.set({ model: 'best' }, obs.best.step);
  }

  /** A pre-training run evaluated its parameters after `step` steps on held-out pairs. */
  observeEvaluation(obs: EvaluationObservation): void {
    requireCount('observeEvaluation step', obs.step);
    for (const [o, v] of Object.entries(obs.accuracy)) {
      if (!(v >= 0 && v <= 1)) throw new RangeError(`observeEvaluation accuracy.${o}: got ${String(v)}; expected a ratio in [0, 1]`);
    }
    for (const [o, v] of Object.entries(obs.loss)) if (Number.isFinite(v)) this.m.heldOutLoss.set({ objective: o }, v);
    for (const [o, v] of Object.entries(obs.accuracy)) this.m.heldOutAccuracy.set({ objective: o }, v);
    this.m.heldOutStep.set(obs.step);
    this.m.heldOutBaseline.set({ baseline: 'unigram_entropy' }, obs.baseline.unigramEntropy);
    if (Number.isFinite(obs.baseline.unigramHeldOut)) this.m.heldOutBaseline.set({ baseline: 'unigram_heldout' }, obs.baseline.unigramHeldOut);
    this.m.heldOutBaseline.set({ baseline: 'itm_chance' }, obs.baseline.itmChance);
  }

  observeCheckpoint(obs: CheckpointObservation): void {
    requireCount('observeCheckpoint step', obs.step);
    requireNonNegative('observeCheckpoint durationSeconds', obs.durationSeconds);
    if (obs.ok === false) {
      this.m.checkpoints.inc({ outcome: 'failed' });
      return;
    }
    this.m.checkpoints.inc({ outcome: 'written' });
    this.m.checkpointDuration.observe(obs.durationSeconds);
    const at = this.now();
    this.lastCheckpoint = { step: obs.step, at };
    this.m.checkpointStep.set(obs.step);
    this.m.checkpointTimestamp.set(at / 1000);
  }

  /** The `/status` document, from what was observed (serve it with `status: () => metrics.status()`). */
  status(): CoordinatorStatus {
    const t = this.throughput();
    const total = this.info.totalSteps ?? null;
    const state = total !== null && this.step >= total ? 'finished' : this.last ? 'training' : 'starting';
    return {
      run: this.run,
      state,
      step: this.step,
      totalSteps: total,
      losses: this.last ? { ...this.last.losses } : null,
      accuracy: this.last?.accuracy ? { ...this.last.accuracy } : null,
      learningRate: this.last?.learningRate ?? null,
      gradientNorm: this.last?.gradientNorm ?? null,
      throughput: t,
      workers: { active: this.activeWorkers, ids: [...this.workerIds] },
      jobs: { perStep: this.info.jobsPerStep ?? null, ...this.tally },
      checkpoint: this.lastCheckpoint
        ? { step: this.lastCheckpoint.step, ageSeconds: (this.now() - this.lastCheckpoint.at) / 1000 }
        : null,
      etaSeconds: this.etaSeconds(),
      updatedAt: new Date(this.now()).toISOString(),
    };
  }

  private throughput(): CoordinatorStatus['throughput'] {
    if (this.recent.length === 0) return null;
    let samples = 0;
    let tokens = 0;
    let seconds = 0;
    for (const r of this.recent) {
      samples += r.samples;
      tokens += r.tokens;
      seconds += r.seconds;
    }
    if (seconds <= 0) return null;
    return { samplesPerSecond: samples / seconds, tokensPerSecond: tokens / seconds, secondsPerStep: seconds / this.recent.length };
  }

  private etaSeconds(): number | null {
    const total = this.info.totalSteps;
    if (total === undefined) return null;
    const remaining = Math.max(0, total - this.step);
    if (remaining === 0) return 0;
    const t = this.throughput();
    return t ? remaining * t.secondsPerStep : null;
  }

  private updateProgress(): void {
    const total = this.info.totalSteps;
    if (total !== undefined) this.m.stepsRemaining.set(Math.max(0, total - this.step));
    const eta = this.etaSeconds();
    if (eta !== null) this.m.eta.set(eta);
  }

  private checkpointAgeSeconds(): number {
    return (this.now() - (this.lastCheckpoint?.at ?? this.startedAt)) / 1000;
  }
}

/** Validates every phase first, then counts: a bad phase name leaves the counters untouched. */
function addPhases(what: string, allowed: readonly string[], phases: Readonly<Record<string, number | undefined>> | undefined, counter: Counter<'phase'>): void {
  for (const [phase, seconds] of checkedPhases(what, allowed, phases)) counter.inc({ phase }, seconds);
}

function requireCount(what: string, value: number): void {
  if (!(Number.isInteger(value) && value >= 0)) throw new Error(`metrics: ${what} is ${value}; expected an integer ≥ 0`);
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
