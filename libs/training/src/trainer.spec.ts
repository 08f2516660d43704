import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { latestCheckpoint } from '@m3ae/model';
import { loadRunConfig, type RunConfig, type StepReport } from '@m3ae/protocol';
import { InProcessError, trainInProcess } from './in-process-source.js';
import { syntheticSetup, type TrainingSetup } from './setup/training-setup.js';
import type { RunSummary } from './trainer.js';

/** A synthetic run (no model, no data files): 6 steps of 8 samples in 4 jobs of 2. */
function run(overrides: { training?: Record<string, unknown> } = {}): RunConfig {
  return loadRunConfig({
    base: {
      runId: `trainer-${randomUUID().slice(0, 8)}`,
      seed: 5,
      compute: { kind: 'synthetic', synthetic: { paramCount: 4_000, workMsPerSample: 0, datasetSize: 96 } },
      training: { steps: 6, globalBatch: 8, microBatch: 2, learningRate: 0.01, warmupFraction: 0.2, clipNorm: 0.05, ...overrides.training },
      checkpoint: { dir: mkdtempSync(join(tmpdir(), 'm3ae-trainer-')), every: 0, keep: 2 },
    },
    env: {},
  });
}

async function train(config: RunConfig, o: { threads?: number; resume?: boolean; setup?: TrainingSetup; onStep?: (r: StepReport, stop: () => void) => void } = {}): Promise<RunSummary> {
  const ac = new AbortController();
  return await trainInProcess(config, o.setup ?? syntheticSetup(config), { threads: o.threads, resume: o.resume, signal: ac.signal, events: { onStep: (r) => o.onStep?.(r, () => ac.abort()) } });
}

describe('Trainer with the in-process source', () => {
  it('gives the same parameters for 1 and 3 compute threads, and bf16 on the wire changes them', async () => {
    const config = run();
    const reports: StepReport[] = [];
    const one = await train(config, { onStep: (r) => reports.push(r) });
    const three = await train({ ...config, checkpoint: { ...config.checkpoint, dir: mkdtempSync(join(tmpdir(), 'm3ae-trainer-')) } }, { threads: 3 });
    expect(one.steps).toBe(6);
    expect(three.paramsSha256).toBe(one.paramsSha256);
    expect(reports.map((r) => r.jobs.count)).toEqual([4, 4, 4, 4, 4, 4]);
    expect(reports.every((r) => Number.isFinite(r.losses.total) && r.losses.total > 0 && r.gradientNorm > 0)).toBe(true);
    // Warm-up over floor(0.2 · 6) = 1 step: update 0 has learning rate 0, update 1 the full rate.
    expect(reports.map((r) => r.learningRate).slice(0, 2)).toEqual([0, 0.01]);
    const bf16 = await train(run({ training: { gradEncoding: 'bf16' } }));
    expect(bf16.paramsSha256).not.toBe(one.paramsSha256);
  });

  it('1 or 3 shards (reduced and updated in shard threads), 1 or 3 compute threads: bitwise the same parameters, also resumed', async () => {
    // 200,000 parameters: 4 gradient blocks, so 3 shards of whole blocks.
    const big = (training: Record<string, unknown> = {}): RunConfig => {
      const c = run({ training });
      return { ...c, compute: { ...c.compute, synthetic: { ...c.compute.synthetic, paramCount: 200_000 } } };
    };
    const one = await train(big());
    const hashes = new Set([one.paramsSha256]);
    for (const [shards, threads] of [[3, 1], [3, 3], [2, 1]] as const) hashes.add((await train(big({ shards }), { threads })).paramsSha256);
    expect(hashes.size).toBe(1);
    // Stopped after step 3 and resumed with 3 shards: the checkpoint holds the shards' parameters and moments.
    const config = big({ shards: 3 });
    const stopped = await train(config, { onStep: (r, stop) => (r.step === 2 ? stop() : undefined) });
    expect(stopped.stopped).toBe(true);
    const resumed = await train(config, { resume: true });
    expect(resumed.startStep).toBe(3);
    expect(resumed.paramsSha256).toBe(one.paramsSha256);
  });

  it('fx53 gradients: the same parameters for 1 and 3 compute threads, not those of the f32 sum', async () => {
    const one = await train(run({ training: { gradEncoding: 'fx53' } }));
    const three = await train(run({ training: { gradEncoding: 'fx53' } }), { threads: 3 });
    expect(one.steps).toBe(6);
    expect(three.paramsSha256).toBe(one.paramsSha256);
    // Not the f32 sum (on these gradients the exact sum rounds differently somewhere).
    expect(one.paramsSha256).not.toBe((await train(run())).paramsSha256);
  });

  it('jobs of 1, 2 or 4 micro-batches summed on the computer (fx53): bitwise the same parameters, 1 or 3 threads', async () => {
    const hashes = new Set<string>();
    for (const [perJob, threads] of [[1, 1], [2, 3], [4, 1], [4, 3]] as const) {
      const jobs: number[] = [];
      const s = await train(run({ training: { gradEncoding: 'fx53', microBatchesPerJob: perJob } }), { threads, onStep: (r) => jobs.push(r.jobs.count) });
      expect(jobs).toEqual(new Array<number>(6).fill(4 / perJob));
      hashes.add(s.paramsSha256);
    }
    expect(hashes.size).toBe(1);
  });

  it('jobs of 2 micro-batches in f32 or bf16 (summed in order on the computer): the same parameters for 1 and 3 threads, not those of 1 per job', async () => {
    for (const gradEncoding of ['f32', 'bf16'] as const) {
      const jobs: number[] = [];
      const one = await train(run({ training: { gradEncoding, microBatchesPerJob: 2 } }), { onStep: (r) => jobs.push(r.jobs.count) });
      const three = await train(run({ training: { gradEncoding, microBatchesPerJob: 2 } }), { threads: 3 });
      expect(jobs).toEqual(new Array<number>(6).fill(2));
      expect(three.paramsSha256).toBe(one.paramsSha256);
      // Another grouping of the same gradients rounds differently (only fx53 makes the grouping irrelevant).
      expect(one.paramsSha256).not.toBe((await train(run({ training: { gradEncoding } }))).paramsSha256);
    }
  });

  it('stops after the step it is in, checkpoints it, and resumes to the parameters of an uninterrupted run', async () => {
    const straight = await train(run());
    const config = run();
    const stopped = await train(config, { onStep: (r, stop) => (r.step === 1 ? stop() : undefined) });
    expect(stopped).toMatchObject({ stopped: true, steps: 2 });
    expect((await latestCheckpoint(config.checkpoint.dir))?.step).toBe(2);
    const resumed = await train(config, { resume: true, threads: 2 });
    expect(resumed).toMatchObject({ startStep: 2, steps: 4, stopped: false });
    expect(resumed.paramsSha256).toBe(straight.paramsSha256);
  });

  it('refuses a computer whose counts differ from the plan (other data or masking), naming the job', async () => {
    const config = run();
    const honest = syntheticSetup(config);
    const lying: TrainingSetup = { ...honest, counts: async (slice) => ({ ...(await honest.counts(slice)), mlm: 1e9 }) };
    await expect(train(config, { setup: lying })).rejects.toThrow(InProcessError);
    await expect(train(config, { setup: lying })).rejects.toThrow(/step 0 job 0: counts .* expected .*"mlm":1000000000/);
  });
});
