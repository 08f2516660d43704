import type { Redis, RedisOptions } from 'ioredis';
import { Checksum, bytesPerElement, checksumAlgorithm, countNonFinite, decodeTensor, encodeTensor, type ChecksumAlgorithm, type TensorEncoding } from './encoding.js';
import { BlobError, ProtocolError, RedisFullError } from './errors.js';
import type { BlobRef } from './job.js';
import type { ShardRange } from './shards.js';
import { connectRedis, type RedisEndpoint } from './redis-connection.js';
import { redisAddress } from './redis-reachable.js';

export const DEFAULT_CHUNK_BYTES = 4 * 2 ** 20;
/**
 * Bytes per pipelined window. Small enough that checksumming and checking one window overlaps the transfer
 * of the next (on both ends), large enough to amortise round trips.
 */
const WINDOW_BYTES = 16 * 2 ** 20;

export interface BlobStoreOptions {
  /** Bytes per chunk (default 4 MiB; Redis handles values of a few MiB fastest). */
  chunkBytes?: number;
  /** Checksum of the whole blob (default crc32). */
  checksum?: ChecksumAlgorithm;
}

export interface PutOptions {
  /** Expire the chunks after this many seconds (safety net for blobs nobody consumes). */
  ttlSeconds?: number | undefined;
}

export interface GetOptions {
  /** Refuse a tensor with NaN or ±Inf (default true for tensors). */
  requireFinite?: boolean;
  /** Refuse a blob whose element count differs. */
  expectElements?: number;
  /** Write into this buffer (exactly the blob's size; e.g. a SharedArrayBuffer view) instead of a new one. */
  into?: Uint8Array;
}

/** Transfer counters, for metrics and benchmarks. */
export interface BlobStats {
  putBytes: number;
  getBytes: number;
  puts: number;
  gets: number;
}

/** Simple string hash so that blobs start on different stores (FNV-1a). */
function keyHash(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * Binary blobs in Redis: a tensor is cut into chunks `<key>:<i>` (4 MiB by default) that are written and
 * read in pipelined windows, optionally spread round-robin over several Redis instances, and guarded by one
 * checksum of the whole blob. Readers verify chunk count, every chunk's length, the checksum and (for
 * tensors) that every value is finite, and fail with a {@link BlobError} naming the fault.
 */
export class BlobStore {
  readonly chunkBytes: number;
  readonly checksum: ChecksumAlgorithm;
  private readonly windowChunks: number;
  readonly stats: BlobStats = { putBytes: 0, getBytes: 0, puts: 0, gets: 0 };

  constructor(
    readonly stores: readonly Redis[],
    options: BlobStoreOptions = {},
    private readonly owned = false,
  ) {
    if (stores.length === 0) throw new ProtocolError('BlobStore needs at least one Redis connection');
    this.chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    // A multiple of 4: chunks then hold whole f32 and bf16 values and can be checked one by one.
    if (!Number.isInteger(this.chunkBytes) || this.chunkBytes < 1024 || this.chunkBytes > 512 * 2 ** 20 || this.chunkBytes % 4 !== 0) {
      throw new ProtocolError(`chunkBytes = ${this.chunkBytes}: expected a multiple of 4 from 1024 to 536870912 (Redis values are limited to 512 MiB)`);
    }
    this.windowChunks = Math.max(1, Math.floor(WINDOW_BYTES / this.chunkBytes));
    this.checksum = options.checksum ?? 'crc32';
  }

  /** Opens one connection per endpoint; {@link close} closes them. */
  /** `redis`: extra ioredis options of every connection (e.g. a `retryStrategy`). */
  static connect(endpoints: readonly RedisEndpoint[], options: BlobStoreOptions = {}, redis: RedisOptions = {}): BlobStore {
    return new BlobStore(endpoints.map((e) => connectRedis(e, { connectionName: 'm3ae-blobs', ...redis })), options, true);
  }

  private storeFor(key: string, chunk: number): Redis {
    return this.stores[(keyHash(key) + chunk) % this.stores.length] as Redis;
  }

  static chunkKey(key: string, i: number): string {
    return `${key}:${i}`;
  }

  /** Stores a tensor under `key` in the given encoding. */
  async putTensor(key: string, values: Float32Array, encoding: TensorEncoding, options: PutOptions = {}): Promise<BlobRef> {
    return await this.putEncoded(key, encodeTensor(values, encoding), encoding, values.length, options);
  }

  /** Stores bytes already encoded (`elements` values of `encoding`). */
  async putEncoded(key: string, bytes: Uint8Array, encoding: TensorEncoding, elements: number, options: PutOptions = {}): Promise<BlobRef> {
    if (bytes.byteLength !== elements * bytesPerElement(encoding)) {
      throw new ProtocolError(`putEncoded(${key}): ${bytes.byteLength} bytes for ${elements} ${encoding} values; expected ${elements * bytesPerElement(encoding)}`);
    }
    const chunks = Math.ceil(bytes.byteLength / this.chunkBytes);
    try {
      return await this.putChunks(key, bytes, encoding, elements, chunks, options);
    } catch (e) {
      // What was stored of it is of no use: give the memory back (best effort), then say what happened.
      await this.delete({ key, chunks }).catch(() => undefined);
      if (e instanceof Error && e.message.startsWith('OOM')) {
        const where = this.stores.map((s) => redisAddress(s.options)).join(', ');
        throw new RedisFullError(
          `Redis (${where}) is full: it refused ${key} (${(bytes.byteLength / 1e6).toFixed(1)} MB) under its maxmemory; give it more memory (a step needs the parameters plus one contribution per job in flight), spread blobs over more instances (redis.blobUrls), or send bf16 gradients (training.gradEncoding)`,
        );
      }
      throw e;
    }
  }

  private async putChunks(key: string, bytes: Uint8Array, encoding: TensorEncoding, elements: number, chunks: number, options: PutOptions): Promise<BlobRef> {
    const sum = new Checksum(this.checksum);
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    // Two windows in flight: the next window is checksummed while the previous one is on the wire.
    const inFlight: Promise<unknown>[] = [];
    for (let start = 0; start < chunks; start += this.windowChunks) {
      const end = Math.min(chunks, start + this.windowChunks);
      const pipes = new Map<Redis, ReturnType<Redis['pipeline']>>();
      for (let i = start; i < end; i++) {
        const part = buf.subarray(i * this.chunkBytes, Math.min(buf.byteLength, (i + 1) * this.chunkBytes));
        sum.update(part);
        const store = this.storeFor(key, i);
        let p = pipes.get(store);
        if (!p) pipes.set(store, (p = store.pipeline()));
        if (options.ttlSeconds) p.set(BlobStore.chunkKey(key, i), part, 'EX', options.ttlSeconds);
        else p.set(BlobStore.chunkKey(key, i), part);
      }
      const sent = Promise.all([...pipes.values()].map(async (p) => throwPipelineErrors(await p.exec())));
      sent.catch(() => undefined); // awaited below; not unhandled if an earlier window fails first
      inFlight.push(sent);
      if (inFlight.length > 1) await inFlight.shift();
    }
    await Promise.all(inFlight);
    this.stats.putBytes += bytes.byteLength;
    this.stats.puts++;
    return { key, encoding, elements, bytes: bytes.byteLength, chunkBytes: this.chunkBytes, chunks, stores: this.stores.length, checksum: sum.digest() };
  }

  /**
   * Reads and verifies a blob's bytes (chunk count and lengths, checksum; with `requireFinite`, that every
   * value is finite — checked chunk by chunk while the next window is in transfer).
   */
  async getBytes(ref: BlobRef, into?: Uint8Array, requireFinite = false): Promise<Uint8Array> {
    if (ref.stores !== this.stores.length) {
      throw new BlobError('layout', `blob ${ref.key} is spread over ${ref.stores} Redis instances; this process has ${this.stores.length} (check redis.blobUrls)`);
    }
    if (into && into.byteLength !== ref.bytes) throw new BlobError('length', `blob ${ref.key} has ${ref.bytes} bytes; the target buffer has ${into.byteLength}`);
    // Every byte is overwritten below (or the read fails): no need to zero-fill. Unpooled, so 8-byte aligned.
    const out = into ?? new Uint8Array(Buffer.allocUnsafeSlow(ref.bytes).buffer, 0, ref.bytes);
    const sum = new Checksum(checksumAlgorithm(ref.checksum));
    const fetchWindow = (start: number): Promise<(Buffer | null)[]> => {
      const end = Math.min(ref.chunks, start + this.windowChunks);
      const pipes = new Map<Redis, { p: ReturnType<Redis['pipeline']>; slots: number[] }>();
      for (let i = start; i < end; i++) {
        const store = this.storeFor(ref.key, i);
        let e = pipes.get(store);
        if (!e) pipes.set(store, (e = { p: store.pipeline(), slots: [] }));
        e.p.getBuffer(BlobStore.chunkKey(ref.key, i));
        e.slots.push(i - start);
      }
      return Promise.all(
        [...pipes.values()].map(async ({ p, slots }) => ({ slots, res: throwPipelineErrors(await p.exec()) as (Buffer | null)[] })),
      ).then((parts) => {
        const window: (Buffer | null)[] = new Array<Buffer | null>(end - start).fill(null);
        for (const { slots, res } of parts) slots.forEach((slot, j) => (window[slot] = res[j] ?? null));
        return window;
      });
    };
    // Request the next window before verifying this one, so checksum work overlaps the network.
    let pending = ref.chunks > 0 ? fetchWindow(0) : Promise.resolve([]);
    let nonFinite = 0;
    for (let start = 0; start < ref.chunks; start += this.windowChunks) {
      const window = await pending;
      if (start + this.windowChunks < ref.chunks) {
        pending = fetchWindow(start + this.windowChunks);
        pending.catch(() => undefined); // surfaced when awaited; not unhandled if this window fails first
      }
      window.forEach((chunk, j) => {
        const i = start + j;
        if (chunk === null) throw new BlobError('missing', `blob ${ref.key}: chunk ${i} of ${ref.chunks} is missing (consumed, expired or lost with a Redis restart)`);
        const expected = Math.min(ref.chunkBytes, ref.bytes - i * ref.chunkBytes);
        if (chunk.byteLength !== expected) throw new BlobError('truncated', `blob ${ref.key}: chunk ${i} has ${chunk.byteLength} bytes; expected ${expected}`);
        sum.update(chunk);
        out.set(chunk, i * ref.chunkBytes);
        if (requireFinite) nonFinite += countNonFinite(out.subarray(i * ref.chunkBytes, i * ref.chunkBytes + expected), ref.encoding);
      });
    }
    const digest = sum.digest();
    if (digest !== ref.checksum) throw new BlobError('checksum', `blob ${ref.key}: checksum ${digest}; expected ${ref.checksum}`);
    if (nonFinite > 0) throw new BlobError('non-finite', `blob ${ref.key}: ${nonFinite} of ${ref.elements} values are NaN or infinite`);
    this.stats.getBytes += ref.bytes;
    this.stats.gets++;
    return out;
  }

  /**
   * Stores encoded bytes of a whole vector as one blob per shard (`<key>:shard<s>`, elements [start, end) of each
   * range), all shards in flight at once: a shard's reducer reads only its own blob.
   */
  async putShards(key: string, bytes: Uint8Array, encoding: TensorEncoding, ranges: readonly ShardRange[], options: PutOptions = {}): Promise<BlobRef[]> {
    const bpe = bytesPerElement(encoding);
    const elements = bytes.byteLength / bpe;
    const last = ranges[ranges.length - 1];
    if (!last || last.end !== elements) throw new ProtocolError(`putShards(${key}): ${elements} ${encoding} values; the shard ranges cover ${last?.end ?? 0}`);
    return await Promise.all(ranges.map(async (r) => this.putEncoded(BlobStore.shardKey(key, r.index), bytes.subarray(r.start * bpe, r.end * bpe), encoding, r.end - r.start, options)));
  }

  /**
   * Reads the shard blobs of one vector into `into` (its encoded bytes, every shard at its range), verifying each
   * (element count of its range, chunks, checksum, finiteness when asked); all shards in flight at once.
   */
  async getShardsInto(refs: readonly BlobRef[], ranges: readonly ShardRange[], into: Uint8Array, options: Omit<GetOptions, 'into' | 'expectElements'> = {}): Promise<void> {
    if (refs.length !== ranges.length) throw new BlobError('layout', `${refs.length} shard blob(s); this run cuts its vectors into ${ranges.length} shard(s) (training.shards)`);
    await Promise.all(
      refs.map(async (ref, s) => {
        const r = ranges[s] as ShardRange;
        const bpe = bytesPerElement(ref.encoding);
        await this.getEncoded(ref, { ...options, expectElements: r.end - r.start, into: into.subarray(r.start * bpe, r.end * bpe) });
      }),
    );
  }

  static shardKey(key: string, shard: number): string {
    return `${key}:shard${shard}`;
  }

  /** Reads, verifies and decodes a tensor. */
  async getTensor(ref: BlobRef, options: GetOptions = {}): Promise<Float32Array> {
    const bytes = await this.getEncoded(ref, options);
    return decodeTensor(bytes, ref.encoding, ref.elements);
  }

  /** Reads and verifies a tensor's encoded bytes (length, checksum, finiteness) without decoding. */
  async getEncoded(ref: BlobRef, options: GetOptions = {}): Promise<Uint8Array> {
    if (options.expectElements !== undefined && ref.elements !== options.expectElements) {
      throw new BlobError('length', `blob ${ref.key} holds ${ref.elements} values; expected ${options.expectElements}`);
    }
    return await this.getBytes(ref, options.into, options.requireFinite ?? true);
  }

  /** Deletes a blob's chunks (UNLINK: Redis frees the memory off its main thread). */
  async delete(ref: Pick<BlobRef, 'key' | 'chunks'>): Promise<void> {
    const pipes = new Map<Redis, ReturnType<Redis['pipeline']>>();
    for (let i = 0; i < ref.chunks; i++) {
      const store = this.storeFor(ref.key, i);
      let p = pipes.get(store);
      if (!p) pipes.set(store, (p = store.pipeline()));
      p.unlink(BlobStore.chunkKey(ref.key, i));
    }
    await Promise.all([...pipes.values()].map(async (p) => throwPipelineErrors(await p.exec())));
  }

  /** Keys matching a pattern on every store (SCAN, never KEYS). */
  async scan(pattern: string): Promise<string[]> {
    const keys: string[] = [];
    for (const store of this.stores) {
      let cursor = '0';
      do {
        const [next, batch] = await store.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        cursor = next;
        keys.push(...batch);
      } while (cursor !== '0');
    }
    return keys;
  }

  /** Deletes every key matching a pattern on every store; returns how many there were. */
  async deletePattern(pattern: string): Promise<number> {
    let n = 0;
    for (const store of this.stores) {
      let cursor = '0';
      do {
        const [next, batch] = await store.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        cursor = next;
        if (batch.length) n += await store.unlink(...batch);
      } while (cursor !== '0');
    }
    return n;
  }

  async close(): Promise<void> {
    if (!this.owned) return;
    await Promise.all(this.stores.map(async (s) => s.quit().catch(() => s.disconnect())));
  }
}

function throwPipelineErrors(results: [Error | null, unknown][] | null): unknown[] {
  if (!results) throw new ProtocolError('redis pipeline was discarded');
  return results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}
