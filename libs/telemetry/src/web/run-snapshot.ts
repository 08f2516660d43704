/** The run page's document (`/run/state.json`), as `RunHistory.snapshot` builds it and the page reads it. */

export type RunPhase = 'waiting' | 'training' | 'finished' | 'stopped' | 'failed';

/** One point of the curves. Absent objectives are null. */
export interface RunPoint {
  /** Increases by one per recorded step; the page asks for points after the last one it has. */
  readonly seq: number;
  /** Steps complete after this one (report step + 1). */
  readonly step: number;
  /** Unix milliseconds. */
  readonly t: number;
  readonly loss: { total: number; mlm: number | null; mim: number | null; itm: number | null };
  /** `task`: a fine-tuning run's training accuracy on its task. */
  readonly accuracy: { mlm: number | null; itm: number | null; task: number | null };
  readonly learningRate: number;
  readonly gradientNorm: number;
  readonly samplesPerSecond: number;
  readonly tokensPerSecond: number | null;
  readonly durationMs: number;
}

/** One held-out evaluation of a pre-training run (`evaluation.every`). */
export interface RunEvaluationPoint {
  /** Steps applied to the evaluated parameters. */
  readonly step: number;
  readonly t: number;
  readonly loss: { mlm: number | null; mim: number | null; itm: number | null };
  readonly accuracy: { mlm: number | null; itm: number | null };
}

export interface RunWorkerView {
  id: string;
  backend: string | null;
  pid: number | null;
  /** Unix milliseconds of the last heartbeat seen, or null. */
  lastHeartbeatAt: number | null;
  /** Unix milliseconds of the last step its contributions were counted in, or null. */
  lastContributionAt: number | null;
  /** Steps it contributed to. */
  steps: number;
  /**
   * Samples per second it accounted for over recent steps, a step's samples shared evenly among the workers
   * counted in it (the coordinator's step report does not say how many micro-batches each computed).
   */
  samplesPerSecond: number;
  /** Heartbeat (or contribution) within `staleAfterMs`. */
  alive: boolean;
}

export interface RunRejectView {
  at: number;
  step: number | null;
  reason: string;
  jobIndex: number | null;
  workerId: string | null;
  message: string;
}

/** The document the run page polls (`/run/state.json`). */
export interface RunSnapshot {
  now: number;
  run: { runId: string | null; totalSteps: number | null; startStep: number; globalBatch: number | null; jobsPerStep: number | null; config: unknown; startedAt: number };
  state: { phase: RunPhase; message: string | null; since: number };
  progress: {
    completedSteps: number;
    totalSteps: number | null;
    /** Mean wall seconds per step over the recent window. */
    secondsPerStep: number | null;
    samplesPerSecond: number | null;
    tokensPerSecond: number | null;
    etaSeconds: number | null;
    elapsedSeconds: number;
  };
  latest: RunPoint | null;
  /** Points after `since` (all of them when the series was thinned since the caller's generation). */
  series: { generation: number; reset: boolean; points: RunPoint[]; lastSeq: number; stride: number };
  /** Mean milliseconds per phase over the recent window: coordinator phases and the workers' means. */
  breakdown: { steps: number; coordinator: Record<string, number>; worker: Record<string, number> };
  workers: RunWorkerView[];
  jobs: {
    enqueued: number;
    rejected: number;
    retried: number;
    backups: number;
    backupsWon: number;
    duplicates: number;
    recoveries: number;
    rejectedByReason: Record<string, number>;
    recentRejects: RunRejectView[];
  };
  checkpoint: { step: number; file: string; at: number; durationMs: number } | null;
  grid: { step: number; at: number } | null;
  /**
   * Held-out evaluations (every one kept, sent whole) and what they are read against: a unigram model's loss on the
   * same held-out masked tokens (an MLM loss below it uses context; null when unknown), the unigram entropy of the
   * training captions, and ITM chance. Null baseline: the run evaluates nothing.
   */
  evaluation: { points: RunEvaluationPoint[]; baseline: { unigramEntropy: number; unigramHeldOut: number | null; itmChance: number } | null };
}
