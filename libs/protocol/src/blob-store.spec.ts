import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobStore } from './blob-store.js';
import { BlobError, RedisFullError } from './errors.js';
import { LocalRedis } from './local-redis.js';
import { RunKeys } from './keys.js';
import { parseBlobRef } from './job.js';

// Two logical databases of the Redis at 127.0.0.1:6379 stand in for two Redis instances.
describe('BlobStore (real Redis)', () => {
  const keys = new RunKeys(`test-blob-${randomUUID().slice(0, 8)}`);
  let a: Redis;
  let b: Redis;
  beforeAll(() => {
    a = new Redis({ host: '127.0.0.1', port: 6379, db: 0 });
    b = new Redis({ host: '127.0.0.1', port: 6379, db: 1 });
  });
  afterAll(async () => {
    await new BlobStore([a, b]).deletePattern(keys.allPattern);
    a.disconnect();
    b.disconnect();
  });

  const values = (n: number, seed = 1): Float32Array => new Float32Array(n).map((_, i) => Math.sin(i * 0.01 + seed) * 3);

  it('round-trips a tensor over many chunks, f32 bit-exact and bf16 as encoded', async () => {
    const store = new BlobStore([a], { chunkBytes: 1024 });
    const x = values(10_001); // 40,004 bytes: 40 chunks, the last one short
    const ref = await store.putTensor(keys.params(0), x, 'f32');
    expect(parseBlobRef(ref)).toEqual(ref);
    expect(ref).toMatchObject({ bytes: 40_004, chunks: 40, chunkBytes: 1024, elements: 10_001, stores: 1 });
    expect(ref.checksum).toMatch(/^crc32:[0-9a-f]{8}$/);
    expect(Buffer.from((await store.getTensor(ref)).buffer)).toEqual(Buffer.from(x.buffer));
    const h = await store.putTensor(keys.grad(0, 1, 'w', 'n1'), x, 'bf16');
    expect(h.bytes).toBe(20_002);
    const y = await store.getTensor(h);
    for (let i = 0; i < x.length; i += 997) expect(Math.abs((y[i] as number) - (x[i] as number))).toBeLessThan(0.02);
    await store.delete(ref);
    await store.delete(h);
    expect(await store.scan(keys.allPattern)).toEqual([]);
  });

  it('spreads chunks over several Redis instances and reads them back (sha256)', async () => {
    const store = new BlobStore([a, b], { chunkBytes: 4096, checksum: 'sha256' });
    const x = values(50_000, 2);
    const ref = await store.putTensor(keys.params(1), x, 'f32');
    expect(ref.stores).toBe(2);
    const inA = (await new BlobStore([a]).scan(`${keys.params(1)}:*`)).length;
    const inB = (await new BlobStore([b]).scan(`${keys.params(1)}:*`)).length;
    expect(inA + inB).toBe(ref.chunks);
    expect(Math.abs(inA - inB)).toBeLessThanOrEqual(1);
    expect(Buffer.from((await store.getTensor(ref)).buffer)).toEqual(Buffer.from(x.buffer));
    // A reader configured with one instance refuses a blob written over two.
    await expect(new BlobStore([a]).getBytes(ref)).rejects.toMatchObject({ fault: 'layout' });
    await store.delete(ref);
    expect(await store.scan(`${keys.params(1)}:*`)).toEqual([]);
  });

  it('names the fault: missing, truncated, corrupted, non-finite, wrong length', async () => {
    const store = new BlobStore([a], { chunkBytes: 1024 });
    const x = values(1000, 3);
    const fault = async (p: Promise<unknown>): Promise<string> => {
      try {
        await p;
        return 'none';
      } catch (e) {
        expect(e).toBeInstanceOf(BlobError);
        return (e as BlobError).fault;
      }
    };
    let ref = await store.putTensor(keys.grad(1, 0, 'w', 'm'), x, 'f32');
    await a.del(BlobStore.chunkKey(ref.key, 2));
    expect(await fault(store.getTensor(ref))).toBe('missing');

    ref = await store.putTensor(keys.grad(1, 0, 'w', 't'), x, 'f32');
    const c1 = (await a.getBuffer(BlobStore.chunkKey(ref.key, 1))) as Buffer;
    await a.set(BlobStore.chunkKey(ref.key, 1), c1.subarray(0, 1000));
    expect(await fault(store.getTensor(ref))).toBe('truncated');

    ref = await store.putTensor(keys.grad(1, 0, 'w', 'c'), x, 'f32');
    const c0 = (await a.getBuffer(BlobStore.chunkKey(ref.key, 0))) as Buffer;
    c0[17] = (c0[17] as number) ^ 0x10;
    await a.set(BlobStore.chunkKey(ref.key, 0), c0);
    expect(await fault(store.getTensor(ref))).toBe('checksum');

    const bad = x.slice();
    bad[500] = NaN;
    ref = await store.putTensor(keys.grad(1, 0, 'w', 'n'), bad, 'bf16');
    expect(await fault(store.getTensor(ref))).toBe('non-finite');
    expect((await store.getTensor(ref, { requireFinite: false })).length).toBe(1000);
    expect(await fault(store.getTensor(ref, { expectElements: 999 }))).toBe('length');
    await store.deletePattern(keys.gradsPattern);
    expect(await store.scan(keys.gradsPattern)).toEqual([]);
  });

  it('puts an expiry on blobs when asked', async () => {
    const store = new BlobStore([a], { chunkBytes: 1024 });
    const ref = await store.putTensor(keys.grad(2, 0, 'w', 'ttl'), values(600), 'f32', { ttlSeconds: 120 });
    const ttl = await a.ttl(BlobStore.chunkKey(ref.key, 0));
    expect(ttl).toBeGreaterThan(100);
    expect(ttl).toBeLessThanOrEqual(120);
    await store.delete(ref);
  });
});

describe('BlobStore on a full Redis (a private redis-server with a small maxmemory)', () => {
  it('refuses with the instance, the blob and the ways out, and leaves nothing of the blob behind', async () => {
    const redis = await LocalRedis.start({ args: ['--maxmemory', '3mb'] });
    const client = new Redis(redis.url);
    try {
      const store = new BlobStore([client], { chunkBytes: 256 * 1024 });
      const err = await store.putTensor('m3ae:full:params:v0', new Float32Array(2_000_000).fill(1), 'f32').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RedisFullError);
      expect((err as Error).message).toMatch(new RegExp(`^Redis \\(127\\.0\\.0\\.1:${redis.port}\\) is full: it refused m3ae:full:params:v0 \\(8\\.0 MB\\) under its maxmemory; give it more memory`));
      expect((err as Error).message).toContain('redis.blobUrls');
      expect(await client.dbsize()).toBe(0);
      // Room again for what fits.
      const small = await store.putTensor('m3ae:full:small', new Float32Array(1000).fill(2), 'f32');
      expect((await store.getTensor(small))[999]).toBe(2);
    } finally {
      client.disconnect();
      await redis.stop();
    }
  }, 30_000);
});
