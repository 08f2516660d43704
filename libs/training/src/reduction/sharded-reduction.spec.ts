import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { AdamW } from '@m3ae/model';
import {
  addEncodedInto,
  BlobError,
  BlobStore,
  encodeTensor,
  fixedBytes,
  GRADIENT_BLOCK,
  PRETRAIN_TRAINING,
  quantizeInto,
  sha256OfFloats,
  shardRanges,
  syntheticManifest,
  type ObjectiveTotals,
  type TensorEncoding,
  type TrainingSettings,
} from '@m3ae/protocol';
import { adamwFor, type OptimizerSpec } from '../optimizer.js';
import { ProcessShardHost, ShardThreadError, ThreadShardHost } from './shard-host.js';
import { ShardReducer } from './shard-reducer.js';
import { ShardedReduction, type StepContribution } from './sharded-reduction.js';

// Values of very different magnitudes: float addition is not associative on them, so the order shows.
const grad = (k: number, n: number, scale = 4): Float32Array => new Float32Array(n).map((_, i) => Math.sin(i * 7 + k) * 10 ** ((i + k) % 9 - scale));

function contribution(k: number, n: number, encoding: TensorEncoding): StepContribution {
  return { gradient: { bytes: encodeTensor(grad(k, n), encoding), encoding }, sums: { mlm: k + 0.1, mim: k * 2 + 0.01, itm: 1e-9 * k }, counts: { mlm: k, mim: 4, itm: 1 }, correct: { mlm: 1, itm: 0 } };
}

function shuffled(n: number, seed: number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  let s = seed;
  for (let i = n - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [a[i], a[j]] = [a[j] as number, a[i] as number];
  }
  return a;
}

const training: TrainingSettings = { ...PRETRAIN_TRAINING, steps: 10, microBatchesPerJob: 1, shards: 1, schedule: 'linear', beta1: 0.9, beta2: 0.98, epsilon: 1e-8, gradEncoding: 'f32', warmupFraction: 0.1, clipNorm: 1 };
const spec = (n: number): OptimizerSpec => ({ layout: syntheticManifest(n), training });
const initial = (n: number): Float32Array => new Float32Array(n).map((_, i) => Math.cos(i) * 0.02);

/** The serial reference: contributions summed in job order, one AdamW update over the whole vector per step. */
function serial(n: number, steps: number, jobs: number, encoding: 'f32' | 'bf16'): string {
  const params = initial(n);
  const adamw = adamwFor(spec(n));
  for (let step = 0; step < steps; step++) {
    const acc = new Float32Array(n);
    for (let k = 0; k < jobs; k++) {
      addEncodedInto(acc, encodeTensor(grad(k + step, n), encoding), encoding);
    }
    adamw.update(params, acc);
  }
  return sha256OfFloats(params);
}

describe('ShardReducer', () => {
  const n = 2 * GRADIENT_BLOCK + 77;
  const reducer = (): ShardReducer => new ShardReducer({ index: 0, start: 0, end: n }, new Float32Array(n), new AdamW(syntheticManifest(n), { totalSteps: 1 }));

  it('sums f32 in job order whatever the commit order (and that order matters on these values)', async () => {
    const sums = new Set<string>();
    for (const seed of [1, 2, 3]) {
      const r = reducer();
      r.begin(6);
      for (const k of shuffled(6, seed)) {
        await r.stage(k, { bytes: encodeTensor(grad(k, n), 'f32'), encoding: 'f32' });
        r.commit(k);
      }
      r.finish();
      sums.add(sha256OfFloats(r.gradient));
    }
    expect(sums.size).toBe(1);
    const by = (order: number[]): string => {
      const acc = new Float32Array(n);
      for (const k of order) {
        const g = grad(k, n);
        for (let i = 0; i < n; i++) acc[i] = (acc[i] as number) + (g[i] as number);
      }
      return sha256OfFloats(acc);
    };
    expect([...sums][0]).toBe(by([0, 1, 2, 3, 4, 5]));
    expect(by([5, 4, 3, 2, 1, 0])).not.toBe(by([0, 1, 2, 3, 4, 5]));
  });

  it('sums fx53 to the same bits for any grouping of micro-batches into jobs and any order', async () => {
    const hashes = new Set<string>();
    for (const perJob of [1, 2, 4]) {
      const jobs = 8 / perJob;
      for (const seed of [1, 2]) {
        const r = reducer();
        r.begin(jobs);
        for (const k of shuffled(jobs, seed)) {
          const acc = new Float64Array(n);
          for (let m = k * perJob; m < (k + 1) * perJob; m++) quantizeInto(acc, grad(m, n, 7));
          await r.stage(k, { bytes: fixedBytes(acc), encoding: 'fx53' });
          r.commit(k);
        }
        r.finish();
        hashes.add(sha256OfFloats(r.gradient));
      }
    }
    expect(hashes.size).toBe(1);
  });

  it('refuses a part of the wrong length or encoding, and a finish before every job is in', async () => {
    const r = reducer();
    r.begin(2);
    await expect(r.stage(0, { bytes: new Uint8Array(8), encoding: 'f32' })).rejects.toThrow(`shard 0 of job 0: 8 bytes; expected ${n * 4} (${n} f32 values)`);
    await r.stage(0, { bytes: fixedBytes(new Float64Array(n)), encoding: 'fx53' });
    r.commit(0);
    await r.stage(1, { bytes: encodeTensor(grad(1, n), 'f32'), encoding: 'f32' });
    expect(() => r.commit(1)).toThrow("shard 0: job 1 is f32-encoded; this step's contributions are fx53");
    expect(() => r.finish()).toThrow('shard 0: 1 job(s) not yet added');
    expect(() => r.commit(5)).toThrow('shard 0: job 5 was not staged');
  });
});

describe('ShardedReduction', () => {
  const n = 3 * GRADIENT_BLOCK + 1234;
  const jobs = 5;
  const steps = 3;

  for (const encoding of ['f32', 'bf16'] as const) {
    it(`gives the serial reference's parameters for 1 and 3 shards, in this thread or in shard threads, any arrival order (${encoding})`, async () => {
      const want = serial(n, steps, jobs, encoding);
      for (const [shards, threads] of [
        [1, false],
        [3, false],
        [3, true],
      ] as const) {
        const red = await ShardedReduction.create({ spec: spec(n), shards, initial: initial(n), hosting: threads ? 'threads' : 'local' });
        try {
          expect(red.ranges).toHaveLength(shards);
          for (let step = 0; step < steps; step++) {
            const r = await red.begin(jobs);
            for (const k of shuffled(jobs, step + shards)) {
              expect(r.complete).toBe(false);
              await r.add(k, { ...contribution(k + step, n, encoding), sums: { mlm: k } });
            }
            expect(r.complete).toBe(true);
            expect(r.sums).toEqual({ mlm: 10 });
            const info = await red.update(step, r.stats);
            expect(info.gradientNorm).toBeGreaterThan(0);
          }
          expect(red.updates).toBe(steps);
          expect(sha256OfFloats(red.params), `${shards} shard(s), threads ${threads}`).toBe(want);
          // The optimizer state a checkpoint stores is the shards' shared moments.
          const state = red.getOptimizerState();
          expect(state.step).toBe(steps);
          expect(state.m.some((x) => x !== 0) && state.v.some((x) => x !== 0)).toBe(true);
        } finally {
          await red.close();
        }
      }
    });
  }

  it('counts a job once, in job order, and says which are missing', async () => {
    const red = await ShardedReduction.create({ spec: spec(n), shards: 3, initial: initial(n), hosting: 'threads' });
    try {
      const r = await red.begin(3);
      await r.add(2, contribution(2, n, 'f32'));
      expect(r.has(2)).toBe(true);
      expect(r.acceptedCount).toBe(1);
      expect(r.missing()).toEqual([0, 1]);
      expect(r.counts).toEqual({}); // waits for 0 and 1
      await expect(r.add(2, contribution(2, n, 'f32'))).rejects.toThrow('job 2 is already counted');
      await expect(r.add(0, { ...contribution(0, n, 'f32'), gradient: { bytes: new Uint8Array(12), encoding: 'f32' } })).rejects.toThrow(`a gradient of 12 bytes; expected ${n * 4}`);
      await r.add(1, contribution(1, n, 'f32'));
      await r.add(0, contribution(0, n, 'f32'));
      expect(r.counts).toEqual({ mlm: 3, mim: 12, itm: 3 } satisfies ObjectiveTotals);
      await expect(red.update(1, r.stats)).rejects.toThrow('the optimizer has taken 0 steps; the trainer is at step 1');
    } finally {
      await red.close();
    }
  });

  it('a reducer process killed by a signal fails every call with the cause, and is needed for in-process runs only with Redis', async () => {
    await expect(ShardedReduction.create({ spec: spec(n), shards: 2, initial: initial(n), hosting: 'processes' })).rejects.toThrow('reducer processes read their gradient blobs from Redis');
    const m = new Float32Array(n);
    const host = await ProcessShardHost.start({ range: { index: 0, start: 0, end: n }, params: initial(n), m, v: m, optimizer: spec(n), blobs: { endpoints: [{ url: 'redis://127.0.0.1:6379' }], options: {} } });
    await host.begin(1);
    const pid = (host as unknown as { child: { pid: number } }).child.pid;
    process.kill(pid, 'SIGKILL');
    // Block this thread a moment, so the request is written to a child already dead whose exit is not yet seen:
    // the write fails (EPIPE) first, and the cause named must still be the signal.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    const failure = await host.finish().catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ShardThreadError);
    expect((failure as Error).message).toBe(`shard process 0 (pid ${pid}) failed: it was killed by SIGKILL (the coordinator stops; restart it with --resume)`);
    await expect(host.begin(1)).rejects.toThrow(ShardThreadError);
    await host.close();
  });

  it('a shard thread that dies fails every call with the cause, at once and for good (never a hang)', async () => {
    // A stand-in thread that says it is ready, then exits on its first request.
    const dir = mkdtempSync(join(tmpdir(), 'm3ae-shard-thread-'));
    const path = join(dir, 'dies.mjs');
    writeFileSync(path, "import { parentPort } from 'node:worker_threads';\nparentPort.postMessage({ type: 'ready' });\nparentPort.on('message', () => process.exit(3));\n");
    const m = new Float32Array(new SharedArrayBuffer(n * 4));
    const host = await ThreadShardHost.start({ range: { index: 1, start: 0, end: n }, params: m, m, v: m, optimizer: spec(n) }, path);
    const failure = await host.begin(2).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ShardThreadError);
    expect((failure as Error).message).toBe('shard thread 1 failed: it exited with code 3 (the coordinator stops; restart it with --resume)');
    await expect(host.commit(0)).rejects.toThrow(ShardThreadError);
    await host.close();
  });

  describe('with Redis', () => {
    const redis = new Redis('redis://127.0.0.1:6379', { lazyConnect: false, maxRetriesPerRequest: 1 });
    const blobs = new BlobStore([redis], { chunkBytes: 64 * 1024 });
    const prefix = `m3ae:test-sharded-${process.pid}`;
    afterAll(async () => {
      await blobs.deletePattern(`${prefix}:*`);
      redis.disconnect();
    });

    for (const hosting of ['threads', 'processes'] as const) {
    it(`each shard (${hosting}) reads its own blob; a contribution one shard cannot read counts in none`, async () => {
      const transport = { endpoints: [{ url: 'redis://127.0.0.1:6379' }], options: { chunkBytes: 64 * 1024 } };
      const red = await ShardedReduction.create({ spec: spec(n), shards: 3, initial: initial(n), blobs: transport, hosting });
      const ranges = shardRanges(n, 3);
      try {
        // The parameters, published shard by shard, read back whole.
        const r = await red.begin(2);
        const refs = await r.publish(`${prefix}:params:v0`);
        expect(refs.map((x) => x.elements)).toEqual(ranges.map((x) => x.end - x.start));
        const back = new Float32Array(n);
        await blobs.getShardsInto(refs, ranges, new Uint8Array(back.buffer));
        expect(sha256OfFloats(back)).toBe(sha256OfFloats(initial(n)));
        expect(r.stats.writtenBytes).toBe(n * 4);

        const put = async (k: number, tag: string) => blobs.putShards(`${prefix}:grads:${k}:${tag}`, encodeTensor(grad(k, n), 'f32'), 'f32', ranges);
        const bad = await put(0, 'bad');
        const chunk = (await redis.getBuffer(`${bad[1]?.key}:0`)) as Buffer;
        chunk[3] = (chunk[3] as number) ^ 1;
        await redis.set(`${bad[1]?.key}:0`, chunk);
        const failure = await r.add(0, { ...contribution(0, n, 'f32'), gradient: { refs: bad } }).catch((e: unknown) => e);
        expect(failure).toBeInstanceOf(BlobError);
        expect((failure as BlobError).fault).toBe('checksum');
        expect(r.has(0)).toBe(false);
        // The same job again, readable this time, and the next: the sum is exactly the serial one.
        await r.add(1, { ...contribution(1, n, 'f32'), gradient: { refs: await put(1, 'good') } });
        await r.add(0, { ...contribution(0, n, 'f32'), gradient: { refs: await put(0, 'good') } });
        // Bytes really read: both good contributions, and the two shards of the bad one that could be read.
        const shard1 = (ranges[1]?.end ?? 0) - (ranges[1]?.start ?? 0);
        expect(r.stats.readBytes).toBe(2 * n * 4 + (n - shard1) * 4);
        await red.update(0, r.stats);
        const ref = initial(n);
        const acc = new Float32Array(n);
        for (const k of [0, 1]) {
          const g = grad(k, n);
          for (let i = 0; i < n; i++) acc[i] = (acc[i] as number) + (g[i] as number);
        }
        const serialOptimizer = adamwFor(spec(n));
        serialOptimizer.update(ref, acc);
        // Reducer processes hold the new parameters and moments until the coordinator asks for them.
        if (hosting === 'processes') expect(() => red.getOptimizerState()).toThrow('sync() first');
        await red.sync();
        expect(sha256OfFloats(red.params)).toBe(sha256OfFloats(ref));
        const state = red.getOptimizerState();
        expect(sha256OfFloats(state.m)).toBe(sha256OfFloats(serialOptimizer.getState().m));
        expect(sha256OfFloats(state.v)).toBe(sha256OfFloats(serialOptimizer.getState().v));
        // Each shard's reader counted its own bytes.
        expect(r.stats.shards.map((x) => x.writtenBytes)).toEqual(ranges.map((x) => (x.end - x.start) * 4));
        expect(r.stats.shards.reduce((a, x) => a + x.readBytes, 0)).toBe(r.stats.readBytes);
      } finally {
        await red.close();
      }
    });
    }
  });
});
