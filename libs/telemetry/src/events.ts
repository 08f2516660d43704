import type { StepReport, WorkerJobEvent } from '@m3ae/protocol';
import type { CoordinatorMetrics } from './coordinator-metrics.js';
import type { WorkerMetrics } from './worker-metrics.js';

/*
 * Adapters from the event hooks of the coordinator (`CoordinatorEvents`) and the worker (`onJob`) to the
 * metrics, so that wiring telemetry in is one line each. The step report (`StepReport`, the trainer's) and the worker's
 * job event (`WorkerJobEvent`) are @m3ae/protocol's; the coordinator's other events are declared here structurally
 * (this lib imports no app).
 */

export interface CoordinatorEventHandlers {
  onStep(report: StepReport): void;
  onReject(reason: string, detail: { workerId?: string }): void;
  onDuplicate(detail: { workerId: string }): void;
  onEnqueue(detail: { kind: 'original' | 'retry' | 'backup' }): void;
  onBackupWon(detail: { step: number }): void;
  onCheckpoint(detail: { step: number; durationMs: number }): void;
  onNoWorkers(detail: { step: number; waiting: number; seconds: number }): void;
}

/**
 * Event handlers that record a coordinator's steps, jobs and checkpoints into `metrics`; pass them as (or merge
 * them into) the coordinator's `events`.
 */
export function coordinatorEvents(metrics: CoordinatorMetrics): CoordinatorEventHandlers {
  return {
    onStep(r) {
      metrics.observeStep({
        step: r.step,
        durationSeconds: r.durationMs / 1000,
        losses: r.losses,
        accuracy: r.accuracy,
        learningRate: r.learningRate,
        gradientNorm: r.gradientNorm,
        samples: r.samples,
        ...(r.tokens !== undefined ? { tokens: r.tokens } : {}),
        phases: {
          publish: r.phases.publishMs / 1000,
          enqueue: r.phases.enqueueMs / 1000,
          idle: r.phases.idleMs / 1000,
          reduction: r.phases.reduceMs / 1000,
          optimizer: r.phases.optimizerMs / 1000,
          checkpoint: r.phases.checkpointMs / 1000,
        },
        jobPhases: {
          fetch: r.worker.fetchMs / 1000,
          compute: r.worker.computeMs / 1000,
          encode: r.worker.encodeMs / 1000,
          upload: r.worker.uploadMs / 1000,
        },
      });
      metrics.bytesMoved('params', 'write', r.bytes.params);
      metrics.bytesMoved('gradients', 'read', r.bytes.grads);
      for (let i = 0; i < r.jobs.count; i++) metrics.jobAccepted();
      metrics.setActiveWorkers(r.workers.length, r.workers);
    },
    onReject(reason) {
      metrics.jobRejected(reason);
    },
    onDuplicate() {
      metrics.jobDuplicated();
    },
    onEnqueue({ kind }) {
      metrics.jobEnqueued();
      if (kind === 'retry') metrics.jobRetried();
      if (kind === 'backup') metrics.backupJobEnqueued();
    },
    onBackupWon() {
      metrics.backupJobWon();
    },
    onCheckpoint({ step, durationMs }) {
      metrics.observeCheckpoint({ step, durationSeconds: durationMs / 1000 });
    },
    onNoWorkers() {
      // Nothing alive while jobs wait: the gauge says so before a step could (an alert can fire on it).
      metrics.setActiveWorkers(0);
    },
  };
}

/** A listener that records every job a worker handles into `metrics`; pass it as the worker's `onJob`. */
export function workerJobListener(metrics: WorkerMetrics): (event: Omit<WorkerJobEvent, 'jobId' | 'jobIndex' | 'copy' | 'error'>) => void {
  return (e) => {
    metrics.observeJob({
      durationSeconds: e.timings.totalMs / 1000,
      samples: e.samples,
      ...(e.tokens !== undefined ? { tokens: e.tokens } : {}),
      outcome: e.outcome,
      step: e.step,
      phases: { fetch: e.timings.fetchMs / 1000, compute: e.timings.computeMs / 1000, encode: e.timings.encodeMs / 1000, upload: e.timings.uploadMs / 1000 },
    });
    if (e.outcome === 'completed') {
      metrics.paramLookup(e.paramCacheHit);
      metrics.bytesMoved('params', 'read', e.paramBytes);
      metrics.bytesMoved('gradients', 'write', e.gradBytes);
    }
  };
}

/**
 * One events object that calls every given handler object's method of the same name, in order: e.g. the
 * metrics adapter and a run history on one coordinator (`events: mergeEventHandlers(a, b)`).
 */
export function mergeEventHandlers<A extends object, B extends object>(a: A, b: B): A & B {
  const out: Record<string, (...args: unknown[]) => void> = {};
  for (const handlers of [a, b]) {
    for (const [name, fn] of Object.entries(handlers)) {
      if (typeof fn !== 'function') continue;
      const call = fn as (...args: unknown[]) => void;
      const before = out[name];
      out[name] = before
        ? (...args) => {
            before(...args);
            call(...args);
          }
        : call;
    }
  }
  return out as A & B;
}
