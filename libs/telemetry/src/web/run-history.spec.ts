import { describe, expect, it } from 'vitest';
import { mergeEventHandlers } from '../events.js';
import { RunHistory, type RunStepInput } from './run-history.js';

function report(step: number, extra: Partial<RunStepInput> = {}): RunStepInput {
  return {
    step,
    losses: { total: 10 / (step + 1), mlm: 6 / (step + 1), mim: 3 / (step + 1), itm: 1 / (step + 1) },
    accuracy: { mlm: step / 100, itm: 0.5 },
    learningRate: 1e-4,
    gradientNorm: 1.5,
    samples: 8,
    tokens: 64,
    durationMs: 500,
    phases: { publishMs: 10, enqueueMs: 5, idleMs: 400, reduceMs: 60, optimizerMs: 25, checkpointMs: 0 },
    worker: { fetchMs: 4, computeMs: 380, encodeMs: 2, uploadMs: 6, totalMs: 392 },
    jobs: { count: 4, enqueued: 4, rejected: 0, duplicates: 0, backups: 0, retried: 0 },
    workers: ['w-a', 'w-b'],
    ...extra,
  };
}

function clock(start = 1_700_000_000_000): { now: () => number; advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

describe('RunHistory', () => {
  it('goes from waiting to training to finished, with progress, ETA and throughput from its own window', () => {
    const c = clock();
    const h = new RunHistory({ now: c.now, window: 4 });
    h.setRun({ runId: 'r1', totalSteps: 6, globalBatch: 8, jobsPerStep: 4 });
    let s = h.snapshot();
    expect(s.state.phase).toBe('waiting');
    expect(s.progress).toMatchObject({ completedSteps: 0, totalSteps: 6, etaSeconds: null, samplesPerSecond: null });
    expect(s.latest).toBeNull();

    for (let i = 0; i < 3; i++) {
      c.advance(500);
      h.recordStep(report(i, { durationMs: 250 * (i + 1) }));
    }
    s = h.snapshot();
    expect(s.state.phase).toBe('training');
    expect(s.progress.completedSteps).toBe(3);
    // Window: 250 + 500 + 750 ms for 24 samples.
    expect(s.progress.secondsPerStep).toBeCloseTo(0.5, 12);
    expect(s.progress.samplesPerSecond).toBeCloseTo(24 / 1.5, 12);
    expect(s.progress.tokensPerSecond).toBeCloseTo(192 / 1.5, 12);
    expect(s.progress.etaSeconds).toBeCloseTo(3 * 0.5, 12);
    expect(s.latest).toMatchObject({ step: 3, loss: { total: 10 / 3, mlm: 2, mim: 1, itm: 1 / 3 } });
    expect(s.series.points.map((p) => p.step)).toEqual([1, 2, 3]);
    expect(s.breakdown.steps).toBe(3);
    expect(s.breakdown.coordinator['idleMs']).toBe(400);
    expect(s.breakdown.worker['computeMs']).toBe(380);

    for (let i = 3; i < 6; i++) h.recordStep(report(i));
    s = h.snapshot();
    expect(s.state.phase).toBe('finished');
    expect(s.progress).toMatchObject({ completedSteps: 6, etaSeconds: 0 });
  });

  it('sends only new points after `since`, and the whole series again after thinning', () => {
    const h = new RunHistory({ capacity: 8 });
    for (let i = 0; i < 5; i++) h.recordStep(report(i));
    const first = h.snapshot();
    expect(first.series).toMatchObject({ reset: true, generation: 0, lastSeq: 5, stride: 1 });
    expect(first.series.points).toHaveLength(5);
    h.recordStep(report(5));
    const delta = h.snapshot(5, 0);
    expect(delta.series.reset).toBe(false);
    expect(delta.series.points.map((p) => p.seq)).toEqual([6]);

    // Past capacity the series halves (every other point) and starts a new generation.
    for (let i = 6; i < 40; i++) h.recordStep(report(i));
    const thinned = h.snapshot(6, 0);
    expect(thinned.series.reset).toBe(true);
    expect(thinned.series.generation).toBeGreaterThan(0);
    expect(thinned.series.points.length).toBeLessThanOrEqual(8);
    expect(thinned.series.points.length).toBeGreaterThanOrEqual(4);
    const seqs = thinned.series.points.map((p) => p.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    for (const q of seqs) expect(q % thinned.series.stride).toBe(0);
    // It still spans the run, and the newest step always travels as `latest`.
    expect(seqs[0]).toBeLessThanOrEqual(thinned.series.stride);
    expect(thinned.latest?.seq).toBe(40);
  });

  it('tracks workers from contributions and heartbeats, and marks silent ones gone', () => {
    const c = clock();
    const h = new RunHistory({ now: c.now, staleAfterMs: 10_000 });
    h.recordHeartbeats([{ id: 'w-a', at: c.now(), backend: 'wasm', pid: 42 }, { id: 'w-c', at: c.now() - 60_000 }]);
    h.recordStep(report(0, { workers: ['w-a', 'w-b'], samples: 8, durationMs: 1000 }));
    h.recordStep(report(1, { workers: ['w-a'], samples: 8, durationMs: 1000 }));
    const w = Object.fromEntries(h.snapshot().workers.map((x) => [x.id, x]));
    expect(Object.keys(w)).toEqual(['w-a', 'w-b', 'w-c']);
    expect(w['w-a']).toMatchObject({ backend: 'wasm', pid: 42, steps: 2, alive: true });
    // 4 samples of step 0 and 8 of step 1 over 2 s.
    expect(w['w-a']?.samplesPerSecond).toBeCloseTo(6, 12);
    expect(w['w-b']?.samplesPerSecond).toBeCloseTo(2, 12);
    expect(w['w-c']).toMatchObject({ steps: 0, alive: false, lastContributionAt: null });
    // An older beat does not move the last heartbeat back.
    h.recordHeartbeats([{ id: 'w-a', at: c.now() - 5000 }]);
    expect(h.snapshot().workers[0]?.lastHeartbeatAt).toBe(c.now());
    c.advance(20_000);
    expect(h.snapshot().workers.every((x) => !x.alive)).toBe(true);
  });

  it('keeps rejects, retries, backups and recoveries; scrubs secrets from messages and the configuration', () => {
    const h = new RunHistory({ maxRejects: 2 });
    h.setRun({ runId: 'r', config: { redis: { url: 'redis://:hunter2@redis:6379', password: 'hunter2' } } });
    const events = h.coordinatorEvents();
    events.onReject('checksum', { step: 3, jobIndex: 1, workerId: 'w-a', message: 'crc mismatch from redis://user:hunter2@host:6379' });
    events.onReject('stale-step', { step: 3, message: 'step 2 while reducing step 3' });
    events.onReject('checksum', { step: 4, jobIndex: 0, workerId: 'w-b', message: 'again' });
    events.onRecover({ step: 4, reason: 'flushed' });
    events.onBackupWon({ step: 4, jobIndex: 0 });
    events.onCheckpoint({ step: 5, path: '/var/ckpt/ckpt-5.safetensors', durationMs: 12 });
    events.onStep(report(4, { jobs: { enqueued: 6, retried: 2, backups: 1, duplicates: 1 } }));
    const s = h.snapshot();
    expect(s.jobs).toMatchObject({ rejected: 3, retried: 2, backups: 1, backupsWon: 1, duplicates: 1, recoveries: 1, enqueued: 6, rejectedByReason: { checksum: 2, 'stale-step': 1 } });
    expect(s.jobs.recentRejects.map((r) => r.message)).toEqual(['again', 'step 2 while reducing step 3']);
    expect(s.checkpoint).toMatchObject({ step: 5, file: 'ckpt-5.safetensors' });
    const text = JSON.stringify(s);
    expect(text).not.toContain('hunter2');
    expect(text).toContain('[REDACTED]');

    h.recordReject('checksum', { message: 'redis://:pw1234567@x' });
    expect(JSON.stringify(h.snapshot().jobs.recentRejects)).not.toContain('pw1234567');
  });

  it('records the end of a run: failed (scrubbed message) or stopped', () => {
    const h = new RunHistory();
    h.recordStep(report(0));
    h.fail(new Error('lost Redis at rediss://admin:s3cret@redis:6380'));
    const s = h.snapshot();
    expect(s.state.phase).toBe('failed');
    expect(s.state.message).toContain('lost Redis at rediss://admin:[REDACTED]@redis:6380');
    h.stop('SIGTERM: checkpoint written');
    expect(h.snapshot().state).toMatchObject({ phase: 'stopped', message: 'SIGTERM: checkpoint written' });
  });

  it('refuses bad input naming the field and the value', () => {
    const h = new RunHistory();
    expect(() => new RunHistory({ capacity: 2 })).toThrow(/capacity is 2; expected an integer ≥ 4/);
    expect(() => h.recordStep(report(-1))).toThrow(/recordStep step is -1/);
    expect(() => h.recordStep(report(0, { durationMs: Number.NaN }))).toThrow(/durationMs is NaN/);
    expect(() => h.recordStep(report(0, { phases: { idleMs: -3 } }))).toThrow(/phases\.idleMs is -3/);
    expect(() => h.setRun({ runId: 'r', totalSteps: 1.5 })).toThrow(/setRun totalSteps is 1.5/);
  });

  it('keeps every held-out evaluation in step order with its baselines (a repeated step replaces the point)', () => {
    const h = new RunHistory();
    expect(h.snapshot().evaluation).toEqual({ points: [], baseline: null });
    const e = (step: number, itm: number) => ({ step, loss: { mlm: 6 - step / 100, mim: 0.9, itm: 0.69 }, accuracy: { mlm: 0.1, itm }, baseline: { unigramEntropy: 5.5, unigramHeldOut: 6.25, itmChance: 0.5 } });
    h.recordEvaluation(e(100, 0.55));
    h.recordEvaluation(e(50, 0.5));
    h.recordEvaluation(e(100, 0.6));
    h.recordEvaluation({ ...e(150, 0.7), loss: { mlm: NaN, mim: 0.8, itm: 0.6 } });
    const ev = h.snapshot().evaluation;
    expect(ev.baseline).toEqual({ unigramEntropy: 5.5, unigramHeldOut: 6.25, itmChance: 0.5 });
    expect(ev.points.map((p) => [p.step, p.accuracy.itm])).toEqual([[50, 0.5], [100, 0.6], [150, 0.7]]);
    expect(ev.points[2]?.loss.mlm).toBeNull(); // a diverged loss is a gap, as on the training curves
    expect(() => h.recordEvaluation(e(-1, 0.5))).toThrow('run history: recordEvaluation step is -1; expected an integer ≥ 0');
  });

  it('starts its step count at the resumed step', () => {
    const h = new RunHistory();
    h.setRun({ runId: 'r', totalSteps: 20, startStep: 12 });
    expect(h.snapshot().progress.completedSteps).toBe(12);
    h.recordStep(report(12));
    expect(h.snapshot().progress.completedSteps).toBe(13);
  });
});

describe('RunHistory.coordinatorEvents', () => {
  it('merges with other handlers (the metrics adapter) into one events object', () => {
    const calls: string[] = [];
    const h = new RunHistory();
    const events = mergeEventHandlers({ onStep: () => void calls.push('metrics') }, h.coordinatorEvents());
    events.onStep(report(0));
    expect(h.completedSteps).toBe(1);
    expect(calls.at(-1)).toBe('metrics');
  });
});
