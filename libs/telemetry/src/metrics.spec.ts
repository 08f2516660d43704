import { randomUUID } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { parseExposition, sampleValue } from '../test/helpers/exposition.js';
import { promtoolCheckMetrics } from '../test/helpers/promtool.js';
import { SHARED_REDIS_URL } from '../test/helpers/redis.js';
import { WorkerRestartMetrics } from './cluster-metrics.js';
import { CoordinatorMetrics, type StepObservation } from './coordinator-metrics.js';
import { mergeExpositions } from './exposition.js';
import { WorkerMetrics } from './worker-metrics.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await (cleanups.pop() as () => Promise<void>)();
});

function step(n: number, overrides: Partial<StepObservation> = {}): StepObservation {
  return {
    step: n,
    durationSeconds: 2,
    losses: { total: 10 - n, mlm: 5 - n / 2, mim: 1, itm: 0.69 },
    accuracy: { mlm: 0.1 * n, itm: 0.5 },
    learningRate: 1e-4 * n,
    gradientNorm: 3,
    samples: 16,
    tokens: 400,
    phases: { publish: 0.1, enqueue: 0.05, idle: 1.5, reduction: 0.2, optimizer: 0.1, checkpoint: 0.05 },
    jobPhases: { fetch: 0.1, compute: 1.2, encode: 0.05, upload: 0.1 },
    ...overrides,
  };
}

describe('CoordinatorMetrics', () => {
  it('exports a fine-tuning run: the task objective, its accuracy, and the last and best validation scores', async () => {
    const m = new CoordinatorMetrics({ run: 'run-ft' });
    m.observeStep(step(4, { losses: { total: 2.5, vqa: 2.5 }, accuracy: { vqa: 0.375 } }));
    m.observeValidation({ step: 8, score: 0.41, best: { step: 8, score: 0.41 } });
    m.observeValidation({ step: 16, score: 0.39, best: { step: 8, score: 0.41 } });
    const text = await m.metrics();
    const exp = parseExposition(text);
    const v = (name: string, labels: Record<string, string> = {}) => sampleValue(exp, name, { run: 'run-ft', ...labels });
    expect(v('m3ae_loss', { objective: 'vqa' })).toBe(2.5);
    expect(v('m3ae_accuracy_ratio', { objective: 'vqa' })).toBe(0.375);
    expect(v('m3ae_validation_score', { model: 'last' })).toBe(0.39);
    expect(v('m3ae_validation_score', { model: 'best' })).toBe(0.41);
    expect(v('m3ae_validation_step', { model: 'best' })).toBe(8);
    expect(v('m3ae_validation_step', { model: 'last' })).toBe(16);
    expect(() => m.observeValidation({ step: 1, score: 41, best: { step: 1, score: 41 } })).toThrow('observeValidation score: got 41; expected a score in [0, 1]');
    const check = await promtoolCheckMetrics(text);
    expect(check.output).toBe('');
    expect(check.code).toBe(0);
  });


  it('exports a pre-training run\'s held-out evaluation with its baselines; refuses an accuracy out of [0, 1]', async () => {
    const m = new CoordinatorMetrics({ run: 'run-pt' });
    const obs = { step: 50, loss: { mlm: 5.25, mim: 0.75, itm: 0.625 }, accuracy: { mlm: 0.125, itm: 0.625 }, baseline: { unigramEntropy: 6.5, unigramHeldOut: 7.25, itmChance: 0.5 } };
    m.observeEvaluation(obs);
    m.observeEvaluation({ ...obs, step: 100, accuracy: { mlm: 0.25, itm: 0.75 } });
    const text = await m.metrics();
    const exp = parseExposition(text);
    const v = (name: string, labels: Record<string, string> = {}) => sampleValue(exp, name, { run: 'run-pt', ...labels });
    expect(v('m3ae_heldout_step')).toBe(100);
    expect(v('m3ae_heldout_accuracy_ratio', { objective: 'itm' })).toBe(0.75);
    expect(v('m3ae_heldout_accuracy_ratio', { objective: 'mlm' })).toBe(0.25);
    expect(v('m3ae_heldout_loss', { objective: 'mlm' })).toBe(5.25);
    expect(v('m3ae_heldout_loss', { objective: 'mim' })).toBe(0.75);
    expect(v('m3ae_heldout_baseline', { baseline: 'unigram_entropy' })).toBe(6.5);
    expect(v('m3ae_heldout_baseline', { baseline: 'unigram_heldout' })).toBe(7.25);
    expect(v('m3ae_heldout_baseline', { baseline: 'itm_chance' })).toBe(0.5);
    expect(() => m.observeEvaluation({ ...obs, accuracy: { mlm: 12.5, itm: 0.5 } })).toThrow('observeEvaluation accuracy.mlm: got 12.5; expected a ratio in [0, 1]');
    const check = await promtoolCheckMetrics(text);
    expect(check.output).toBe('');
    expect(check.code).toBe(0);
  });

  it('exports every training series with the run label, and promtool accepts the whole scrape', async () => {
    let clock = 1_000_000;
    const m = new CoordinatorMetrics({ run: 'run-a', now: () => clock, tensorMemory: () => ({ numTensors: 42, numBytes: 4096 }) });
    m.setRunInfo({ totalSteps: 10, jobsPerStep: 4, globalBatchSize: 16, startStep: 0 });
    for (let s = 1; s <= 3; s++) {
      clock += 2000;
      m.observeStep(step(s));
    }
    m.jobEnqueued(12);
    m.jobAccepted('w-1');
    m.jobAccepted('w-2');
    m.jobRejected('checksum');
    m.jobRejected('stale-step', 2);
    m.jobRetried();
    m.jobRedelivered();
    m.jobDuplicated();
    m.backupJobEnqueued();
    m.backupJobWon();
    m.setActiveWorkers(2, ['w-1', 'w-2']);
    m.bytesMoved('gradients', 'read', 1 << 20);
    m.addSkips({ 'missing-image': 2 });
    m.observeCheckpoint({ step: 3, durationSeconds: 0.4 });
    m.observeCheckpoint({ step: 3, durationSeconds: 0.1, ok: false });
    clock += 5000;

    const text = await m.metrics();
    const exp = parseExposition(text);
    const v = (name: string, labels: Record<string, string> = {}) => sampleValue(exp, name, { run: 'run-a', ...labels });
    expect(v('m3ae_loss', { objective: 'total' })).toBe(7);
    expect(v('m3ae_loss', { objective: 'mlm' })).toBe(3.5);
    expect(v('m3ae_accuracy_ratio', { objective: 'mlm' })).toBeCloseTo(0.3);
    expect(v('m3ae_learning_rate')).toBeCloseTo(3e-4);
    expect(v('m3ae_training_step')).toBe(3);
    expect(v('m3ae_training_steps_remaining')).toBe(7);
    expect(v('m3ae_eta_seconds')).toBe(14);
    expect(v('m3ae_jobs_per_step')).toBe(4);
    expect(v('m3ae_steps_completed_total')).toBe(3);
    expect(v('m3ae_step_duration_seconds_count')).toBe(3);
    expect(v('m3ae_step_duration_seconds_bucket', { le: '1' })).toBe(0);
    expect(v('m3ae_step_duration_seconds_bucket', { le: '2.5' })).toBe(3);
    expect(v('m3ae_step_phase_seconds_total', { phase: 'idle' })).toBe(4.5);
    expect(v('m3ae_job_phase_seconds_total', { phase: 'compute' })).toBeCloseTo(3.6);
    expect(v('m3ae_samples_total')).toBe(48);
    expect(v('m3ae_tokens_total')).toBe(1200);
    expect(v('m3ae_jobs_accepted_total', { worker: 'w-2' })).toBe(1);
    expect(v('m3ae_jobs_rejected_total', { reason: 'stale-step' })).toBe(2);
    expect(v('m3ae_backup_jobs_total')).toBe(1);
    expect(v('m3ae_workers_active')).toBe(2);
    expect(v('m3ae_blob_bytes_total', { blob: 'gradients', direction: 'read' })).toBe(1 << 20);
    expect(v('m3ae_samples_skipped_total', { reason: 'missing-image' })).toBe(2);
    expect(v('m3ae_checkpoints_total', { outcome: 'failed' })).toBe(1);
    expect(v('m3ae_checkpoint_age_seconds')).toBe(5);
    expect(v('m3ae_tensors')).toBe(42);
    expect(v('m3ae_tensor_memory_bytes')).toBe(4096);
    expect(exp.types.get('nodejs_eventloop_lag_seconds')).toBe('gauge');

    const check = await promtoolCheckMetrics(text);
    expect(check.output).toBe('');
    expect(check.code).toBe(0);
  });

  it('computes /status from what it observed: losses, throughput, workers, ETA', () => {
    let clock = 0;
    const m = new CoordinatorMetrics({ run: 'r', now: () => clock, defaultMetrics: false, throughputWindow: 2 });
    expect(m.status()).toMatchObject({ run: 'r', state: 'starting', step: 0, losses: null, throughput: null, etaSeconds: null });
    m.setRunInfo({ totalSteps: 5, jobsPerStep: 2, startStep: 1 });
    m.observeStep(step(2, { durationSeconds: 4, samples: 8, tokens: 100 }));
    m.observeStep(step(3, { durationSeconds: 2, samples: 8, tokens: 200 }));
    m.observeStep(step(4, { durationSeconds: 2, samples: 8, tokens: 100 }));
    m.setActiveWorkers(1, ['w-9']);
    clock = 60_000;
    const s = m.status();
    expect(s).toMatchObject({ state: 'training', step: 4, totalSteps: 5, workers: { active: 1, ids: ['w-9'] }, jobs: { perStep: 2 } });
    expect(s.losses).toEqual({ total: 6, mlm: 3, mim: 1, itm: 0.69 });
    // Window of 2 steps: 16 samples and 300 tokens in 4 s.
    expect(s.throughput).toEqual({ samplesPerSecond: 4, tokensPerSecond: 75, secondsPerStep: 2 });
    expect(s.etaSeconds).toBe(2);
    m.observeStep(step(5));
    expect(m.status()).toMatchObject({ state: 'finished', etaSeconds: 0 });
  });

  it('rejects bad observations with the field, the value and what was expected', () => {
    const m = new CoordinatorMetrics({ run: 'r', defaultMetrics: false });
    expect(() => m.observeStep(step(-1))).toThrow('observeStep step is -1; expected an integer ≥ 0');
    expect(() => m.observeStep(step(1, { durationSeconds: Number.NaN }))).toThrow(/durationSeconds is NaN/);
    expect(() => m.observeStep(step(1, { phases: { warmup: 1 } as never }))).toThrow('observeStep phases.warmup is not one of publish, enqueue, idle, reduction, optimizer, checkpoint');
    expect(() => m.observeStep(step(1, { jobPhases: { compute: -1 } }))).toThrow('observeStep jobPhases.compute is -1; expected a finite number ≥ 0');
    expect(() => m.jobRejected('Bad Reason')).toThrow(/reason "Bad Reason"/);
    expect(() => m.setRunInfo({ totalSteps: 1.5 })).toThrow(/totalSteps is 1.5/);
    expect(() => new CoordinatorMetrics({ run: '', defaultMetrics: false })).toThrow(/label run is ""/);
  });

  it('counts skips from cumulative SkipLog totals without double counting', async () => {
    const m = new CoordinatorMetrics({ run: 'r', defaultMetrics: false });
    m.setSkipTotals({ 'unreadable-image': 1 });
    m.setSkipTotals({ 'unreadable-image': 3, 'empty-text': 1 });
    m.setSkipTotals({ 'unreadable-image': 3, 'empty-text': 1 });
    const exp = parseExposition(await m.metrics());
    expect(sampleValue(exp, 'm3ae_samples_skipped_total', { reason: 'unreadable-image' })).toBe(3);
    expect(sampleValue(exp, 'm3ae_samples_skipped_total', { reason: 'empty-text' })).toBe(1);
  });

  it('merges the real BullMQ queue export into the scrape, renamed to pass promtool', async () => {
    const connection = new Redis(SHARED_REDIS_URL, { maxRetriesPerRequest: null });
    const name = `m3ae-telemetry-test-${randomUUID()}`;
    const queue = new Queue(name, { connection });
    const other = new Queue(`${name}-b`, { connection });
    cleanups.push(async () => {
      await queue.obliterate({ force: true });
      await other.obliterate({ force: true });
      await queue.close();
      await other.close();
      connection.disconnect();
    });
    await queue.addBulk([{ name: 'mb', data: { i: 0 } }, { name: 'mb', data: { i: 1 } }, { name: 'mb', data: { i: 2 } }]);
    await queue.add('later', { i: 3 }, { delay: 60_000 });
    // One job really taken and completed through a BullMQ worker (manual fetch, so exactly one).
    const workerConnection = new Redis(SHARED_REDIS_URL, { maxRetriesPerRequest: null });
    cleanups.push(async () => void workerConnection.disconnect());
    const worker = new Worker(name, null, { connection: workerConnection });
    const job = await worker.getNextJob('token-1');
    expect(job).toBeDefined();
    await job?.moveToCompleted('ok', 'token-1', false);
    await worker.close();

    const m = new CoordinatorMetrics({ run: 'run-q', defaultMetrics: false });
    m.addQueue(queue);
    m.addQueue(other);
    m.addQueue(queue); // the same queue twice is one source
    const text = await m.metrics();
    const exp = parseExposition(text);
    expect(exp.types.get('bullmq_jobs')).toBe('gauge');
    expect(exp.types.has('bullmq_job_count')).toBe(false);
    expect(sampleValue(exp, 'bullmq_jobs', { queue: name, state: 'waiting', run: 'run-q' })).toBe(2);
    expect(sampleValue(exp, 'bullmq_jobs', { queue: name, state: 'delayed' })).toBe(1);
    expect(sampleValue(exp, 'bullmq_jobs', { queue: name, state: 'completed' })).toBe(1);
    expect(sampleValue(exp, 'bullmq_jobs', { queue: `${name}-b`, state: 'waiting' })).toBe(0);
    expect(text.match(/^# TYPE bullmq_jobs /gm)).toHaveLength(1);
    const check = await promtoolCheckMetrics(text);
    expect(check.output).toBe('');
    expect(check.code).toBe(0);
  });

  it('serves its own metrics when the queue export hangs, and counts the failure', async () => {
    const m = new CoordinatorMetrics({ run: 'r', defaultMetrics: false, queueExportTimeoutMs: 100 });
    m.addQueue({ name: 'stuck', exportPrometheusMetrics: () => new Promise<string>(() => undefined) });
    m.addQueue({ name: 'broken', exportPrometheusMetrics: () => Promise.reject(new Error('ECONNREFUSED redis://:hunter2@x:1')) });
    const exp = parseExposition(await m.metrics());
    expect(sampleValue(exp, 'm3ae_queue_export_errors_total')).toBe(2);
    expect(m.lastQueueExportError).not.toContain('hunter2');
    expect(exp.types.has('bullmq_jobs')).toBe(false);
  });
});

describe('WorkerMetrics', () => {
  it('labels every series with run, worker and backend (set late), and promtool accepts it', async () => {
    let tensors = 10;
    const m = new WorkerMetrics({ run: 'run-b', worker: 'w-3', tensorMemory: () => ({ numTensors: tensors, numBytes: tensors * 8 }) });
    m.setBackend('wasm');
    m.paramLookup(false);
    m.paramLookup(true);
    m.paramLookup(true);
    m.setBusy(true);
    m.observeJob({ durationSeconds: 3, samples: 4, tokens: 90, step: 7, phases: { fetch: 0.5, compute: 2, encode: 0.2, upload: 0.3 } });
    m.observeJob({ durationSeconds: 1, samples: 4, tokens: 90, outcome: 'handed-back' });
    m.bytesMoved('params', 'read', 1000);
    tensors = 12;
    const text = await m.metrics();
    const exp = parseExposition(text);
    const labels = { run: 'run-b', worker: 'w-3', backend: 'wasm' };
    expect(sampleValue(exp, 'm3ae_worker_jobs_total', { ...labels, outcome: 'completed' })).toBe(1);
    expect(sampleValue(exp, 'm3ae_worker_jobs_total', { ...labels, outcome: 'handed-back' })).toBe(1);
    expect(sampleValue(exp, 'm3ae_worker_samples_total', labels)).toBe(4);
    expect(sampleValue(exp, 'm3ae_worker_job_phase_seconds_total', { ...labels, phase: 'compute' })).toBe(2);
    expect(sampleValue(exp, 'm3ae_worker_job_duration_seconds_count', labels)).toBe(2);
    expect(sampleValue(exp, 'm3ae_worker_param_cache_total', { ...labels, result: 'hit' })).toBe(2);
    expect(sampleValue(exp, 'm3ae_worker_last_step', labels)).toBe(7);
    expect(sampleValue(exp, 'm3ae_worker_busy', labels)).toBe(1);
    expect(sampleValue(exp, 'm3ae_tensors', labels)).toBe(12);
    expect(sampleValue(exp, 'nodejs_eventloop_lag_seconds', labels)).toBeGreaterThanOrEqual(0);
    // The default label reaches every series, Node's default metrics included.
    for (const s of exp.samples) expect(s.labels).toMatchObject(labels);
    const check = await promtoolCheckMetrics(text);
    expect(check.output).toBe('');
    expect(check.code).toBe(0);
  });

  it('takes a pushed tf.memory() reading when the tensors live in another thread', async () => {
    const m = new WorkerMetrics({ run: 'r', worker: 'w', defaultMetrics: false });
    m.setTensorMemory({ numTensors: 77, numBytes: 1234 });
    const exp = parseExposition(await m.metrics());
    expect(sampleValue(exp, 'm3ae_tensors')).toBe(77);
    expect(sampleValue(exp, 'm3ae_tensor_memory_bytes')).toBe(1234);
    expect(() => m.observeJob({ durationSeconds: 1, samples: 1, tokens: 1, outcome: 'lost' as never })).toThrow(/outcome "lost"/);
  });
});

describe('mergeExpositions', () => {
  it('keeps one HELP/TYPE per family, drops repeated samples, keeps distinct ones', () => {
    const a = '# HELP x_total X.\n# TYPE x_total counter\nx_total{q="a"} 1\n';
    const b = '# HELP x_total X.\n# TYPE x_total counter\nx_total{q="a"} 1\nx_total{q="b"} 2';
    expect(mergeExpositions([a, b])).toBe('# HELP x_total X.\n# TYPE x_total counter\nx_total{q="a"} 1\nx_total{q="b"} 2\n');
  });
});

describe('WorkerRestartMetrics', () => {
  it('counts restarts by worker slot in the coordinator scrape, counted before and after it is added, promtool-valid', async () => {
    const restarts = new WorkerRestartMetrics('run-r');
    restarts.restarted(0);
    const m = new CoordinatorMetrics({ run: 'run-r', defaultMetrics: false });
    restarts.addTo(m.registry);
    restarts.addTo(m.registry);
    restarts.restarted(0);
    restarts.restarted(2);
    const text = await m.metrics();
    const exp = parseExposition(text);
    expect(sampleValue(exp, 'm3ae_worker_restarts_total', { run: 'run-r', slot: '0' })).toBe(2);
    expect(sampleValue(exp, 'm3ae_worker_restarts_total', { run: 'run-r', slot: '2' })).toBe(1);
    expect(await restarts.total()).toBe(3);
    const check = await promtoolCheckMetrics(text);
    expect(check.output).toBe('');
    expect(check.code).toBe(0);
  });
});
