import { scrubSecrets, scrubValue } from '../redact.js';
import { RecentSteps } from './recent-steps.js';
import type { RunEvaluationPoint, RunPhase, RunPoint, RunRejectView, RunSnapshot, RunWorkerView } from './run-snapshot.js';

/**
 * What the run page shows, kept by the coordinator itself (no Prometheus needed): the run's description, a
 * bounded series of per-step points (halved, every other point kept, when full, so a long run still shows
 * its whole curve), the step-time breakdown of recent steps, workers, rejected contributions and the run's
 * end. Fed from the coordinator's events ({@link RunHistory.coordinatorEvents}); read by the run page handler.
 */

export const RUN_OBJECTIVES = ['mlm', 'mim', 'itm'] as const;

/**
 * One applied step, as the coordinator reports it (structurally a subset of its `StepReport`). `step` is the
 * 0-based index of the step just applied, so `step + 1` steps are complete.
 */
export interface RunStepInput {
  readonly step: number;
  readonly losses: { readonly total: number; readonly mlm?: number; readonly mim?: number; readonly itm?: number };
  /** Pre-training's masked-token and matching accuracies, or a fine-tuning run's task accuracy (vqa, cls, irtr). */
  readonly accuracy?: { readonly mlm?: number; readonly itm?: number; readonly vqa?: number; readonly cls?: number; readonly irtr?: number };
  readonly learningRate: number;
  readonly gradientNorm: number;
  /** Samples in the global batch. */
  readonly samples: number;
  /** Real text tokens in the global batch, when known. */
  readonly tokens?: number;
  readonly durationMs: number;
  /** Coordinator milliseconds by phase (`publishMs`, `enqueueMs`, `idleMs`, `reduceMs`, `optimizerMs`, `checkpointMs`). */
  readonly phases?: object;
  /** Mean worker milliseconds of the step's accepted contributions (`fetchMs`, `computeMs`, `encodeMs`, `uploadMs`, `totalMs`). */
  readonly worker?: object;
  readonly jobs?: {
    readonly count?: number;
    readonly enqueued?: number;
    readonly rejected?: number;
    readonly duplicates?: number;
    readonly backups?: number;
    readonly retried?: number;
  };
  /** Workers whose contributions were counted in this step. */
  readonly workers?: readonly string[];
}

/** A worker's heartbeat record (`m3ae:<run>:workers:<id>`: `{ id, backend, pid, at }`). */
export interface WorkerHeartbeat {
  readonly id: string;
  /** Unix milliseconds of the beat. */
  readonly at: number;
  readonly backend?: string;
  readonly pid?: number;
}

export interface RunDescription {
  readonly runId: string;
  readonly totalSteps?: number;
  /** The step training (re)started from: 0, or the resumed checkpoint's step. */
  readonly startStep?: number;
  readonly globalBatch?: number;
  readonly jobsPerStep?: number;
  /** Shown on the page as JSON; pass a redacted copy (`redactConfig`); it is scrubbed again when served. */
  readonly config?: unknown;
}

export interface RunHistoryOptions {
  /** Points kept before the series is thinned. @defaultValue 1000 */
  capacity?: number;
  /** Steps averaged for throughput, ETA and the breakdown. @defaultValue 20 */
  window?: number;
  /** Recent rejected contributions listed. @defaultValue 20 */
  maxRejects?: number;
  /** A worker with no heartbeat or contribution for this long is shown as gone. @defaultValue 30000 */
  staleAfterMs?: number;
  /** Clock in Unix milliseconds (tests). @defaultValue Date.now */
  now?: () => number;
}

/** What the history keeps of a worker: its view less what is computed when the snapshot is taken. */
type WorkerState = Omit<RunWorkerView, 'samplesPerSecond' | 'alive'>;

/** Own numeric fields of a plain object (phases and worker timings arrive as interfaces). */
function numericFields(value: object | undefined, what: string): Record<string, number> {
  const out: Record<string, number> = {};
  if (!value) return out;
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new Error(`run history: ${what}.${k} is ${String(v)}; expected a finite number ≥ 0`);
    out[k] = v;
  }
  return out;
}

function requireInt(what: string, value: number, min = 0): void {
  if (!(Number.isSafeInteger(value) && value >= min)) throw new Error(`run history: ${what} is ${String(value)}; expected an integer ≥ ${min}`);
}

function orNull(v: number | undefined): number | null {
  return v === undefined ? null : v;
}

export class RunHistory {
  private readonly capacity: number;
  private readonly maxRejects: number;
  private readonly staleAfterMs: number;
  private readonly now: () => number;
  private readonly startedAt: number;
  private run: RunDescription | undefined;
  private points: RunPoint[] = [];
  private seq = 0;
  private generation = 0;
  private stride = 1;
  private latestPoint: RunPoint | null = null;
  private completed = 0;
  private readonly recent: RecentSteps;
  private readonly workers = new Map<string, WorkerState>();
  private readonly tally = { enqueued: 0, rejected: 0, retried: 0, backups: 0, backupsWon: 0, duplicates: 0, recoveries: 0 };
  private readonly byReason = new Map<string, number>();
  private rejects: RunRejectView[] = [];
  private checkpoint: RunSnapshot['checkpoint'] = null;
  private grid: RunSnapshot['grid'] = null;
  private evaluations: RunEvaluationPoint[] = [];
  private evaluationBaseline: RunSnapshot['evaluation']['baseline'] = null;
  private phase: RunPhase = 'waiting';
  private message: string | null = null;
  private phaseSince: number;

  constructor(options: RunHistoryOptions = {}) {
    this.capacity = options.capacity ?? 1000;
    const windowSize = options.window ?? 20;
    this.maxRejects = options.maxRejects ?? 20;
    this.staleAfterMs = options.staleAfterMs ?? 30_000;
    requireInt('capacity', this.capacity, 4);
    requireInt('window', windowSize, 1);
    this.recent = new RecentSteps(windowSize);
    requireInt('maxRejects', this.maxRejects, 0);
    if (!(Number.isFinite(this.staleAfterMs) && this.staleAfterMs > 0)) throw new Error(`run history: staleAfterMs is ${this.staleAfterMs}; expected a positive number`);
    this.now = options.now ?? Date.now;
    this.startedAt = this.now();
    this.phaseSince = this.startedAt;
  }

  /** Static facts of the run; call at start (and again after a resume). */
  setRun(run: RunDescription): void {
    for (const key of ['totalSteps', 'startStep', 'globalBatch', 'jobsPerStep'] as const) {
      const v = run[key];
      if (v !== undefined) requireInt(`setRun ${key}`, v);
    }
    this.run = run;
    if (this.latestPoint === null) this.completed = run.startStep ?? 0;
  }

  /** Records one applied step (the coordinator's `onStep` report). */
  recordStep(report: RunStepInput): void {
    requireInt('recordStep step', report.step);
    if (!(Number.isFinite(report.durationMs) && report.durationMs >= 0)) throw new Error(`run history: recordStep durationMs is ${report.durationMs}; expected a finite number ≥ 0`);
    requireInt('recordStep samples', report.samples);
    const t = this.now();
    const seconds = report.durationMs / 1000;
    const tokens = report.tokens ?? null;
    const point: RunPoint = {
      seq: ++this.seq,
      step: report.step + 1,
      t,
      // A diverged loss stays NaN/Infinity here; JSON turns it into null and the chart leaves a gap.
      loss: { total: report.losses.total, mlm: orNull(report.losses.mlm), mim: orNull(report.losses.mim), itm: orNull(report.losses.itm) },
      accuracy: { mlm: orNull(report.accuracy?.mlm), itm: orNull(report.accuracy?.itm), task: orNull(report.accuracy?.vqa ?? report.accuracy?.cls ?? report.accuracy?.irtr) },
      learningRate: report.learningRate,
      gradientNorm: report.gradientNorm,
      samplesPerSecond: seconds > 0 ? report.samples / seconds : 0,
      tokensPerSecond: tokens !== null && seconds > 0 ? tokens / seconds : null,
      durationMs: report.durationMs,
    };
    this.latestPoint = point;
    this.completed = point.step;
    this.keepPoint(point);

    const workers = [...new Set(report.workers ?? [])];
    for (const id of workers) {
      const w = this.worker(id);
      w.lastContributionAt = t;
      w.steps++;
    }
    this.recent.push({ durationMs: report.durationMs, samples: report.samples, tokens, workers, phases: numericFields(report.phases, 'phases'), worker: numericFields(report.worker, 'worker') });

    const j = report.jobs;
    if (j) {
      this.tally.enqueued += j.enqueued ?? 0;
      this.tally.retried += j.retried ?? 0;
      this.tally.backups += j.backups ?? 0;
      this.tally.duplicates += j.duplicates ?? 0;
    }
    if (this.phase === 'waiting') this.setPhase('training', null);
    const total = this.run?.totalSteps;
    if (total !== undefined && this.completed >= total && this.phase === 'training') this.setPhase('finished', null);
  }

  /** A refused contribution (the coordinator's `onReject`). */
  recordReject(reason: string, detail: { step?: number; jobIndex?: number; workerId?: string; message?: string } = {}): void {
    this.tally.rejected++;
    this.byReason.set(reason, (this.byReason.get(reason) ?? 0) + 1);
    if (this.maxRejects === 0) return;
    this.rejects.push({
      at: this.now(),
      step: detail.step ?? null,
      reason: scrubSecrets(reason),
      jobIndex: detail.jobIndex ?? null,
      workerId: detail.workerId ?? null,
      message: scrubSecrets(detail.message ?? ''),
    });
    if (this.rejects.length > this.maxRejects) this.rejects = this.rejects.slice(-this.maxRejects);
  }

  recordRecovery(_detail: { step: number; reason: string }): void {
    this.tally.recoveries++;
  }

  recordBackupWon(): void {
    this.tally.backupsWon++;
  }

  recordCheckpoint(detail: { step: number; path: string; durationMs: number }): void {
    // Only the file name: the page has no business with the coordinator's directory layout.
    const file = detail.path.split(/[\\/]/).pop() ?? detail.path;
    this.checkpoint = { step: detail.step, file, at: this.now(), durationMs: detail.durationMs };
  }

  /** A new reconstruction grid (of the parameters after `step` steps) is available. */
  recordGrid(step: number): void {
    requireInt('recordGrid step', step);
    this.grid = { step, at: this.now() };
  }

  /**
   * A held-out evaluation after `step` steps (a pre-training run's `onEvaluate`), with its baselines. A repeated step
   * (a resumed run) replaces the earlier point.
   */
  recordEvaluation(e: {
    step: number;
    loss: { mlm: number; mim: number; itm: number };
    accuracy: { mlm: number; itm: number };
    baseline: { unigramEntropy: number; unigramHeldOut: number; itmChance: number };
  }): void {
    requireInt('recordEvaluation step', e.step);
    const f = (v: number): number | null => (Number.isFinite(v) ? v : null);
    const point: RunEvaluationPoint = { step: e.step, t: this.now(), loss: { mlm: f(e.loss.mlm), mim: f(e.loss.mim), itm: f(e.loss.itm) }, accuracy: { mlm: f(e.accuracy.mlm), itm: f(e.accuracy.itm) } };
    this.evaluations = [...this.evaluations.filter((p) => p.step !== e.step), point].sort((a, b) => a.step - b.step);
    this.evaluationBaseline = { unigramEntropy: e.baseline.unigramEntropy, unigramHeldOut: f(e.baseline.unigramHeldOut), itmChance: e.baseline.itmChance };
  }

  /** Heartbeats read from Redis (see `readWorkerHeartbeats`); newer beats replace older ones. */
  recordHeartbeats(beats: readonly WorkerHeartbeat[]): void {
    for (const b of beats) {
      const w = this.worker(b.id);
      if (w.lastHeartbeatAt === null || b.at > w.lastHeartbeatAt) w.lastHeartbeatAt = b.at;
      if (b.backend !== undefined) w.backend = b.backend;
      if (b.pid !== undefined) w.pid = b.pid;
    }
  }

  /** The run completed all its steps. */
  finish(message?: string): void {
    this.setPhase('finished', message ?? null);
  }

  /** The run stopped early on request (SIGTERM) after writing a checkpoint. */
  stop(message?: string): void {
    this.setPhase('stopped', message ?? null);
  }

  /** The run failed; the message is shown on the page (scrubbed of credentials). */
  fail(error: unknown): void {
    this.setPhase('failed', error instanceof Error ? error.message : String(error));
  }

  get currentPhase(): RunPhase {
    return this.phase;
  }

  /** Steps complete so far. */
  get completedSteps(): number {
    return this.completed;
  }

  /**
   * Handlers shaped like the coordinator's `CoordinatorEvents` (onStep, onReject, onCheckpoint, onRecover,
   * onBackupWon, onDuplicate): `new Coordinator({ …, events: history.coordinatorEvents() })`.
   */
  coordinatorEvents(): {
    onStep(report: RunStepInput): void;
    onReject(reason: string, detail: { step: number; jobIndex?: number; workerId?: string; message: string }): void;
    onCheckpoint(detail: { step: number; path: string; durationMs: number }): void;
    onRecover(detail: { step: number; reason: string }): void;
    onBackupWon(detail: { step: number; jobIndex: number }): void;
  } {
    return {
      onStep: (report) => this.recordStep(report),
      onReject: (reason, detail) => this.recordReject(reason, detail),
      onCheckpoint: (detail) => this.recordCheckpoint(detail),
      onRecover: (detail) => this.recordRecovery(detail),
      onBackupWon: () => this.recordBackupWon(),
    };
  }

  /**
   * The page's document. `since`: the last point `seq` the caller has (−1 or undefined: all); `generation`:
   * the series generation it has (a thinned series starts a new generation and is sent whole).
   */
  snapshot(since?: number, generation?: number): RunSnapshot {
    const now = this.now();
    const reset = since === undefined || since < 0 || generation !== this.generation;
    const points = reset ? this.points.slice() : this.points.filter((p) => p.seq > since);
    const run = this.run;
    const total = run?.totalSteps ?? null;
    const t = this.recent.throughput();
    const remaining = total === null ? null : Math.max(0, total - this.completed);
    return {
      now,
      run: {
        runId: run?.runId ?? null,
        totalSteps: total,
        startStep: run?.startStep ?? 0,
        globalBatch: run?.globalBatch ?? null,
        jobsPerStep: run?.jobsPerStep ?? null,
        config: scrubValue(run?.config ?? null),
        startedAt: this.startedAt,
      },
      state: { phase: this.phase, message: this.message === null ? null : scrubSecrets(this.message), since: this.phaseSince },
      progress: {
        completedSteps: this.completed,
        totalSteps: total,
        secondsPerStep: t?.secondsPerStep ?? null,
        samplesPerSecond: t?.samplesPerSecond ?? null,
        tokensPerSecond: t?.tokensPerSecond ?? null,
        etaSeconds: remaining === null ? null : remaining === 0 ? 0 : t ? remaining * t.secondsPerStep : null,
        elapsedSeconds: (now - this.startedAt) / 1000,
      },
      latest: this.latestPoint,
      series: { generation: this.generation, reset, points, lastSeq: this.seq, stride: this.stride },
      breakdown: this.recent.breakdown(),
      workers: this.workerViews(now),
      jobs: { ...this.tally, rejectedByReason: Object.fromEntries(this.byReason), recentRejects: this.rejects.slice().reverse() },
      checkpoint: this.checkpoint,
      grid: this.grid,
      evaluation: { points: this.evaluations.slice(), baseline: this.evaluationBaseline },
    };
  }

  private setPhase(phase: RunPhase, message: string | null): void {
    this.phase = phase;
    this.message = message;
    this.phaseSince = this.now();
  }

  private worker(id: string): WorkerState {
    let w = this.workers.get(id);
    if (!w) {
      w = { id, backend: null, pid: null, lastHeartbeatAt: null, lastContributionAt: null, steps: 0 };
      this.workers.set(id, w);
    }
    return w;
  }

  /**
   * Keeps the points whose seq is a multiple of `stride`; when more than `capacity` are kept, the stride
   * doubles and the series is thinned to match (a new generation, sent whole). The newest point always
   * travels separately as `latest`, so the curve's end is never behind.
   */
  private keepPoint(point: RunPoint): void {
    if (point.seq % this.stride !== 0) return;
    this.points.push(point);
    if (this.points.length > this.capacity) {
      this.stride *= 2;
      this.points = this.points.filter((p) => p.seq % this.stride === 0);
      this.generation++;
    }
  }

  private workerViews(now: number): RunWorkerView[] {
    const ms = this.recent.durationMs();
    const share = this.recent.workerSamples();
    return [...this.workers.values()]
      .map((w) => {
        const seen = Math.max(w.lastHeartbeatAt ?? -Infinity, w.lastContributionAt ?? -Infinity);
        return {
          ...w,
          samplesPerSecond: ms > 0 ? (share.get(w.id) ?? 0) / (ms / 1000) : 0,
          alive: now - seen <= this.staleAfterMs,
        };
      })
      .sort((a, b) => a.id.localeCompare(b.id));
  }
}
