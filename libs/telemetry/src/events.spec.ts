import { describe, expect, it } from 'vitest';
import { parseExposition, sampleValue } from '../test/helpers/exposition.js';
import { CoordinatorMetrics } from './coordinator-metrics.js';
import type { StepReport } from '@m3ae/protocol';
import { coordinatorEvents, mergeEventHandlers, workerJobListener } from './events.js';
import { WorkerMetrics } from './worker-metrics.js';

const report: StepReport = {
  step: 5,
  losses: { total: 4.2, mlm: 3, itm: 0.6 },
  accuracy: { mlm: 0.25 },
  learningRate: 2e-4,
  gradientNorm: 1.5,
  samples: 16,
  durationMs: 4000,
  phases: { publishMs: 200, enqueueMs: 100, idleMs: 3000, reduceMs: 400, optimizerMs: 300, checkpointMs: 0 },
  worker: { fetchMs: 100, computeMs: 2500, encodeMs: 50, uploadMs: 150, totalMs: 2800 },
  bytes: { params: 4_000_000, grads: 16_000_000 },
  processes: [
    { id: 'coordinator', role: 'coordinator', readBytes: 16_000_000, writtenBytes: 4_000_000, jobs: 0 },
    { id: 'w-1', role: 'worker', readBytes: 4_000_000, writtenBytes: 8_000_000, jobs: 2 },
  ],
  reduction: { fetchMs: 300, addMs: 80, applyMs: 250 },
  jobs: { count: 4, enqueued: 6, rejected: 1, duplicates: 1, backups: 1, retried: 1 },
  workers: ['w-1', 'w-2'],
};

describe('coordinatorEvents', () => {
  it('records steps, jobs, rejections, backups and checkpoints from the coordinator\u2019s events', async () => {
    const m = new CoordinatorMetrics({ run: 'r', defaultMetrics: false });
    const events = coordinatorEvents(m);
    for (const kind of ['original', 'original', 'original', 'original', 'retry', 'backup'] as const) events.onEnqueue({ kind });
    events.onReject('stale-version', { workerId: 'w-2' });
    events.onDuplicate({ workerId: 'w-1' });
    events.onBackupWon({ step: 5 });
    events.onStep(report);
    events.onCheckpoint({ step: 5, durationMs: 1500 });
    const exp = parseExposition(await m.metrics());
    const v = (name: string, labels: Record<string, string> = {}) => sampleValue(exp, name, labels);
    expect(v('m3ae_training_step')).toBe(5);
    expect(v('m3ae_loss', { objective: 'itm' })).toBe(0.6);
    expect(v('m3ae_step_duration_seconds_sum')).toBe(4);
    expect(v('m3ae_step_phase_seconds_total', { phase: 'idle' })).toBe(3);
    expect(v('m3ae_step_phase_seconds_total', { phase: 'reduction' })).toBe(0.4);
    expect(v('m3ae_job_phase_seconds_total', { phase: 'compute' })).toBe(2.5);
    expect(v('m3ae_blob_bytes_total', { blob: 'gradients', direction: 'read' })).toBe(16_000_000);
    expect(v('m3ae_jobs_enqueued_total')).toBe(6);
    expect(v('m3ae_jobs_retried_total')).toBe(1);
    expect(v('m3ae_backup_jobs_total')).toBe(1);
    expect(v('m3ae_backup_jobs_won_total')).toBe(1);
    expect(v('m3ae_jobs_accepted_total')).toBe(4);
    expect(v('m3ae_jobs_rejected_total', { reason: 'stale-version' })).toBe(1);
    expect(v('m3ae_jobs_duplicated_total')).toBe(1);
    expect(v('m3ae_workers_active')).toBe(2);
    expect(v('m3ae_checkpoint_last_step')).toBe(5);
    expect(v('m3ae_checkpoint_duration_seconds_sum')).toBe(1.5);
    expect(m.status()).toMatchObject({ step: 5, workers: { active: 2, ids: ['w-1', 'w-2'] }, throughput: { samplesPerSecond: 4 } });
    // Then every worker is gone while step 6 waits: the gauge drops to 0 without waiting for a step.
    events.onNoWorkers({ step: 6, waiting: 4, seconds: 30 });
    expect(sampleValue(parseExposition(await m.metrics()), 'm3ae_workers_active', {})).toBe(0);
    expect(m.status()).toMatchObject({ workers: { active: 0, ids: [] } });
  });
});

describe('workerJobListener', () => {
  it('records every outcome, and traffic and cache lookups of completed jobs', async () => {
    const m = new WorkerMetrics({ run: 'r', worker: 'w-1', defaultMetrics: false });
    const onJob = workerJobListener(m);
    const timings = { fetchMs: 200, computeMs: 1000, encodeMs: 50, uploadMs: 150, totalMs: 1400 };
    onJob({ step: 1, outcome: 'completed', samples: 4, timings, paramCacheHit: false, paramBytes: 1000, gradBytes: 500 });
    onJob({ step: 1, outcome: 'completed', samples: 4, timings: { ...timings, fetchMs: 0 }, paramCacheHit: true, paramBytes: 0, gradBytes: 500 });
    onJob({ step: 2, outcome: 'stale', samples: 4, timings: { ...timings, computeMs: 0 }, paramCacheHit: false, paramBytes: 0, gradBytes: 0 });
    const exp = parseExposition(await m.metrics());
    const v = (name: string, labels: Record<string, string> = {}) => sampleValue(exp, name, labels);
    expect(v('m3ae_worker_jobs_total', { outcome: 'completed' })).toBe(2);
    expect(v('m3ae_worker_jobs_total', { outcome: 'stale' })).toBe(1);
    expect(v('m3ae_worker_samples_total')).toBe(8);
    expect(v('m3ae_worker_param_cache_total', { result: 'miss' })).toBe(1);
    expect(v('m3ae_worker_param_cache_total', { result: 'hit' })).toBe(1);
    expect(v('m3ae_blob_bytes_total', { blob: 'params', direction: 'read' })).toBe(1000);
    expect(v('m3ae_blob_bytes_total', { blob: 'gradients', direction: 'write' })).toBe(1000);
    expect(v('m3ae_worker_job_phase_seconds_total', { phase: 'compute' })).toBe(2);
    expect(v('m3ae_worker_last_step')).toBe(2);
  });
});

describe('mergeEventHandlers', () => {
  it('calls both handler objects, in order, and keeps handlers only one of them has', () => {
    const calls: string[] = [];
    const merged = mergeEventHandlers(
      { onStep: (r: { step: number }) => void calls.push(`a${r.step}`), onReject: () => void calls.push('a-reject') },
      { onStep: (r: { step: number }) => void calls.push(`b${r.step}`), onCheckpoint: () => void calls.push('b-ckpt') },
    );
    merged.onStep({ step: 3 });
    merged.onReject();
    merged.onCheckpoint();
    expect(calls).toEqual(['a3', 'b3', 'a-reject', 'b-ckpt']);
  });
});
