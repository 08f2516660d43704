import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import {
  BlobStore,
  JOB_QUEUE_NAME,
  loadRunConfig,
  parseContribution,
  PROTOCOL_VERSION,
  RunKeys,
  syntheticCounts,
  syntheticGradients,
  syntheticInitialParams,
  syntheticManifest,
  toBf16,
  type BlobRef,
  type MicroBatchJob,
} from '@m3ae/protocol';
import { computeThreadPath, SyntheticComputer, ThreadedComputer } from '@m3ae/training';
import { TrainingWorker } from './training-worker.js';

// The compiled thread entry (the Nx test target builds this project first).
const threadPath = computeThreadPath();

describe('TrainingWorker (real Redis and BullMQ, hand-made jobs)', () => {
  const runId = `test-worker-${randomUUID().slice(0, 8)}`;
  const keys = new RunKeys(runId);
  const redis = new Redis('redis://127.0.0.1:6379');
  const blobs = new BlobStore([redis], { chunkBytes: 64 * 1024 });
  const queue = new Queue(JOB_QUEUE_NAME, { connection: { host: '127.0.0.1', port: 6379 }, prefix: keys.bullPrefix });
  afterAll(async () => {
    await blobs.deletePattern(keys.allPattern);
    await queue.close();
    redis.disconnect();
  });

  it('computes in its thread while locks keep renewing: a 3 s CPU-bound job under a 1 s lock runs once, the event loop stays free', async () => {
    if (!existsSync(threadPath)) throw new Error(`${threadPath} is missing: build @m3ae/training first (nx run @m3ae/training:build)`);
    const paramCount = 20_000;
    const config = loadRunConfig({
      base: {
        runId,
        compute: { kind: 'synthetic', synthetic: { paramCount, workMsPerSample: 1500, work: 'spin' } },
        redis: { chunkBytes: 64 * 1024 },
        worker: { lockDurationMs: 1000, heartbeatSeconds: 1 },
      },
      env: {},
    });
    const manifest = syntheticManifest(paramCount);
    const incarnation = randomUUID();
    await redis.hset(keys.coordinator, { incarnation, step: '0', manifestHash: manifest.hash });
    const params = syntheticInitialParams(paramCount, 7);
    const paramsRef = await blobs.putTensor(keys.params(0), params, 'f32');
    const indices = [5, 9];
    const normalizers = syntheticCounts([5, 9, 11, 40]);
    const job: MicroBatchJob = {
      protocol: PROTOCOL_VERSION,
      runId,
      incarnation,
      step: 0,
      version: 0,
      jobIndex: 0,
      jobCount: 2,
      copy: 0,
      seed: 7,
      globalBatchSize: 4,
      indices,
      positions: [0, 1],
      normalizers,
      manifestHash: manifest.hash,
      params: [paramsRef],
      gradEncoding: 'bf16',
    };

    const computer = await ThreadedComputer.start(config, threadPath);
    expect(computer.manifestHash).toBe(manifest.hash);
    const worker = await TrainingWorker.start({ config, computer, workerId: 'thread-test' });
    let maxGap = 0;
    let last = performance.now();
    const ticker = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    }, 20);
    await queue.add('microbatch', job, { jobId: 's0-j0-c0', removeOnComplete: true });
    const popped = await redis.blpop(keys.results, 20);
    clearInterval(ticker);
    // Longer than a lock period after the result: a stalled-job redelivery would show up as a second result.
    await new Promise((r) => setTimeout(r, 1500));
    expect(await redis.llen(keys.results)).toBe(0);
    await worker.close();

    // The 3 s of compute run in the thread: the event loop never stalls for anything like that (a loaded CI machine
    // still delays timers by a few hundred milliseconds at most).
    expect(maxGap).toBeLessThan(1000);
    expect(worker.stats).toMatchObject({ completed: 1, failed: 0, paramFetches: 1 });
    const c = parseContribution(JSON.parse((popped as [string, string])[1]));
    expect(c).toMatchObject({ runId, incarnation, step: 0, version: 0, jobIndex: 0, copy: 0, workerId: 'thread-test', manifestHash: manifest.hash });
    expect(c.timings.computeMs).toBeGreaterThan(2900);
    // Exactly the synthetic gradient of these samples, bf16-encoded.
    const expected = await new SyntheticComputer(config.compute.synthetic).compute(job, params);
    // …and that gradient is the gradient of the loss it reports (central differences of Σ_o sum_o / N_o on a few
    // coordinates; the loss is quadratic, so they are exact up to rounding), not a copy of what computed it.
    const lossAt = (p: Float32Array): number => {
      const { sums } = syntheticGradients(indices, normalizers, p);
      return sums.mlm / normalizers.mlm + sums.mim / normalizers.mim + sums.itm / normalizers.itm;
    };
    for (const i of [0, 1, 17, params.length - 1]) {
      const h = 0.25;
      const plus = Float32Array.from(params);
      const minus = Float32Array.from(params);
      plus[i] = (params[i] as number) + h;
      minus[i] = (params[i] as number) - h;
      const numeric = (lossAt(plus) - lossAt(minus)) / (2 * h);
      expect(Math.abs(numeric - (expected.grads[i] as number))).toBeLessThan(1e-6 * Math.max(1e-3, Math.abs(numeric)) + 1e-12);
    }
    expect(c.counts).toEqual(syntheticCounts(indices));
    expect(c.grads).toHaveLength(1);
    expect(c.transfer).toEqual({ readBytes: params.length * 4, writtenBytes: params.length * 2 });
    const got = await blobs.getEncoded(c.grads[0] as BlobRef);
    const want = new Uint16Array(expected.grads.length);
    toBf16(expected.grads, want);
    expect(Buffer.from(got)).toEqual(Buffer.from(want.buffer));
    await blobs.delete(c.grads[0] as BlobRef);
  });
});
