import type { Worker } from 'node:worker_threads';
import type { AdamWPlan } from '@m3ae/model/adamw';
import { BlobError, BlobStore, FixedPointError, type BlobFault, type BlobRef, type BlobStoreOptions, type RedisEndpoint, type ShardRange } from '@m3ae/protocol';
import { adamwFor, type OptimizerSpec } from '../optimizer.js';
import { startThread, threadEntry } from '../thread-start.js';
import { ShardReducer, type ShardSource, type StageCost } from './shard-reducer.js';

/** How a shard reaches Redis: the blob endpoints and the store's options (plain data: a thread opens its own connections). */
export interface BlobTransport {
  endpoints: RedisEndpoint[];
  options: BlobStoreOptions;
}

/** Everything a shard needs, as plain data and shared memory (what a shard thread receives). */
export interface ShardInit {
  range: ShardRange;
  /** The run's parameters and AdamW moments, whole vectors in shared memory: the shard updates its range in place. */
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
  optimizer: OptimizerSpec;
  blobs?: BlobTransport | undefined;
}

/** One shard's reducer, wherever it runs; every call is answered (or fails) — a thread that dies fails them all. */
export interface ShardHost {
  readonly range: ShardRange;
  begin(jobCount: number): Promise<void>;
  stage(k: number, source: ShardSource): Promise<StageCost>;
  commit(k: number): Promise<number>;
  drop(k: number): Promise<void>;
  finish(): Promise<Float64Array>;
  apply(plan: AdamWPlan): Promise<number>;
  publish(key: string): Promise<{ ref: BlobRef; writtenBytes: number }>;
  close(): Promise<void>;
}

export type ShardRequest = { id: number } & (
  | { type: 'begin'; jobCount: number }
  | { type: 'stage'; k: number; source: ShardSource }
  | { type: 'commit'; k: number }
  | { type: 'drop'; k: number }
  | { type: 'finish' }
  | { type: 'apply'; plan: AdamWPlan }
  | { type: 'publish'; key: string }
);

/** A shard thread died (or was closed): the reduction cannot go on, and no retry of a contribution can help. */
export class ShardThreadError extends Error {
  override readonly name = 'ShardThreadError';
}

/** An error as it crosses the thread boundary: the blob faults and fixed-point errors keep their kind. */
export interface ShardFailure {
  message: string;
  fault?: BlobFault | undefined;
  fixedPoint?: boolean | undefined;
}

export type ShardReply = { type: 'ready' } | { type: 'failed'; message: string } | { type: 'done'; id: number; value: unknown } | { type: 'error'; id: number; error: ShardFailure };

export function toFailure(e: unknown): ShardFailure {
  if (e instanceof BlobError) return { message: e.message, fault: e.fault };
  if (e instanceof FixedPointError) return { message: e.message, fixedPoint: true };
  return { message: e instanceof Error ? e.message : String(e) };
}

export function fromFailure(f: ShardFailure): Error {
  if (f.fault) return new BlobError(f.fault, f.message);
  if (f.fixedPoint) return new FixedPointError(f.message);
  return new Error(f.message);
}

/** The shard's reducer and its own Redis connections, built from plain data (in this thread or in a shard thread). */
export function buildShard(init: ShardInit, redis: ConstructorParameters<typeof BlobStore>[1] = {}): { reducer: ShardReducer; blobs: BlobStore | undefined } {
  const blobs = init.blobs
    ? BlobStore.connect(init.blobs.endpoints, { ...init.blobs.options, ...redis }, { connectionName: `m3ae-shard-${init.range.index}`, retryStrategy: (times: number) => Math.min(times * 50, 2000) })
    : undefined;
  for (const s of blobs?.stores ?? []) s.on('error', () => undefined); // reconnects on its own; a read that fails is reported by the call
  const optimizer = adamwFor(init.optimizer, { m: init.m, v: init.v });
  return { reducer: new ShardReducer(init.range, init.params, optimizer, blobs), blobs };
}

/** Answers one request with the shard's reducer (the same code in this thread and in a shard thread). */
export async function serve(reducer: ShardReducer, r: ShardRequest): Promise<unknown> {
  switch (r.type) {
    case 'begin':
      return reducer.begin(r.jobCount);
    case 'stage':
      return await reducer.stage(r.k, r.source);
    case 'commit':
      return reducer.commit(r.k);
    case 'drop':
      return reducer.drop(r.k);
    case 'finish':
      return reducer.finish();
    case 'apply': {
      const t = performance.now();
      reducer.apply(r.plan);
      return performance.now() - t;
    }
    case 'publish':
      return await reducer.publish(r.key);
  }
}

type Call = { [T in ShardRequest['type']]: Omit<Extract<ShardRequest, { type: T }>, 'id'> }[ShardRequest['type']];

/** Calls through `send` and awaits `serve`'s value: one implementation of the host's methods for either transport. */
abstract class HostBase implements ShardHost {
  constructor(readonly range: ShardRange) {}
  protected abstract call(req: Call, transfer?: ArrayBuffer[]): Promise<unknown>;
  abstract close(): Promise<void>;
  async begin(jobCount: number): Promise<void> {
    await this.call({ type: 'begin', jobCount });
  }
  async stage(k: number, source: ShardSource): Promise<StageCost> {
    return (await this.call({ type: 'stage', k, source }, 'bytes' in source ? [source.bytes.buffer as ArrayBuffer] : [])) as StageCost;
  }
  async commit(k: number): Promise<number> {
    return (await this.call({ type: 'commit', k })) as number;
  }
  async drop(k: number): Promise<void> {
    await this.call({ type: 'drop', k });
  }
  async finish(): Promise<Float64Array> {
    return (await this.call({ type: 'finish' })) as Float64Array;
  }
  async apply(plan: AdamWPlan): Promise<number> {
    return (await this.call({ type: 'apply', plan })) as number;
  }
  async publish(key: string): Promise<{ ref: BlobRef; writtenBytes: number }> {
    return (await this.call({ type: 'publish', key })) as { ref: BlobRef; writtenBytes: number };
  }
}

/** The shard reduced in the caller's thread (one shard: nothing to parallelise). */
export class LocalShardHost extends HostBase {
  private constructor(
    private readonly reducer: ShardReducer,
    private readonly blobs: BlobStore | undefined,
  ) {
    super(reducer.range);
  }
  static create(init: ShardInit): LocalShardHost {
    const { reducer, blobs } = buildShard(init);
    return new LocalShardHost(reducer, blobs);
  }
  protected async call(req: Call): Promise<unknown> {
    return await serve(this.reducer, { ...req, id: 0 } as ShardRequest);
  }
  async close(): Promise<void> {
    await this.blobs?.close();
  }
}

/** The compiled thread entry (`dist/reduction/shard-thread.js`). */
export function shardThreadPath(): string {
  return threadEntry(import.meta.url, 'reduction/shard-thread.js');
}

/** A shard reduced in a `worker_threads` thread of its own, with its own Redis connections. */
export class ThreadShardHost extends HostBase {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private dead: Error | undefined;

  private constructor(
    range: ShardRange,
    private readonly thread: Worker,
  ) {
    super(range);
    thread.on('message', (msg: ShardReply) => {
      if (msg.type !== 'done' && msg.type !== 'error') return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.type === 'done') p.resolve(msg.value);
      else p.reject(fromFailure(msg.error));
    });
    const fail = (e: Error): void => {
      this.dead ??= new ShardThreadError(`shard thread ${range.index} failed: ${e.message} (the coordinator stops; restart it with --resume)`);
      for (const p of this.pending.values()) p.reject(this.dead);
      this.pending.clear();
    };
    thread.on('error', fail);
    thread.on('exit', (code) => fail(new Error(`it exited with code ${code}`)));
  }

  static async start(init: ShardInit, threadPath = shardThreadPath()): Promise<ThreadShardHost> {
    const { thread } = await startThread(threadPath, init, `shard thread ${init.range.index}`);
    return new ThreadShardHost(init.range, thread);
  }

  protected call(req: Call, transfer: ArrayBuffer[] = []): Promise<unknown> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.thread.postMessage({ ...req, id }, transfer);
    });
  }

  async close(): Promise<void> {
    this.dead ??= new ShardThreadError(`shard thread ${this.range.index} was closed`);
    await this.thread.terminate();
  }
}
