import { fork, type ChildProcess } from 'node:child_process';
import type { Worker } from 'node:worker_threads';
import type { AdamWPlan } from '@m3ae/model/adamw';
import { BlobError, BlobStore, FixedPointError, type BlobFault, type BlobRef, type BlobStoreOptions, type ParamLayout, type ParamLayoutEntry, type RedisEndpoint, type ShardRange } from '@m3ae/protocol';
import { adamwFor, type OptimizerSpec } from '../optimizer.js';
import { compiledExecArgv, requireEntry, startThread, threadEntry } from '../thread-start.js';
import { ShardReducer, type ShardSource, type StageCost } from './shard-reducer.js';

/** How a shard reaches Redis: the blob endpoints and the store's options (plain data: a thread opens its own connections). */
export interface BlobTransport {
  endpoints: RedisEndpoint[];
  options: BlobStoreOptions;
}

/** Everything a shard needs, as plain data and shared memory (what a shard thread receives). */
export interface ShardInit {
  range: ShardRange;
  /**
   * The run's parameters and AdamW moments: whole vectors in shared memory (a thread updates its range in place), or
   * only the shard's range (a reducer process holds its own; `pull` sends them back).
   */
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
  /** The shard's parameters and moments (copies of its range). */
  pull(): Promise<ShardState>;
  /** Sets the shard's parameters and moments (its range). */
  push(state: ShardState): Promise<void>;
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
  | { type: 'pull' }
  | { type: 'push'; state: ShardState }
);

/** A shard's own parameters and moments (what a reducer process holds; the coordinator pulls them to checkpoint). */
export interface ShardState {
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

/** A shard thread or reducer process died (or was closed): the reduction cannot go on, and no retry of a contribution can help. */
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
export function buildShard(init: ShardInit): { reducer: ShardReducer; blobs: BlobStore | undefined } {
  const blobs = init.blobs
    ? BlobStore.connect(init.blobs.endpoints, init.blobs.options, { connectionName: `m3ae-shard-${init.range.index}`, retryStrategy: (times: number) => Math.min(times * 50, 2000) })
    : undefined;
  for (const s of blobs?.stores ?? []) s.on('error', () => undefined); // reconnects on its own; a read that fails is reported by the call
  const { range } = init;
  const length = range.end - range.start;
  if (init.params.length === init.optimizer.layout.size) {
    const optimizer = adamwFor(init.optimizer, { m: init.m, v: init.v });
    return { reducer: new ShardReducer(range, init.params, optimizer, blobs), blobs };
  }
  // Only the range is held: the shard is elements [0, length) of its own vectors, under the layout cut to the range.
  if (init.params.length !== length) throw new Error(`shard ${range.index}: ${init.params.length} parameters given; expected ${init.optimizer.layout.size} (the whole vector) or ${length} (the shard's range)`);
  const optimizer = adamwFor({ layout: sliceLayout(init.optimizer.layout, range.start, range.end), training: init.optimizer.training }, { m: init.m, v: init.v });
  return { reducer: new ShardReducer({ index: range.index, start: 0, end: length }, init.params, optimizer, blobs), blobs };
}

/**
 * The layout of elements [start, end) of a vector, as a vector of its own: every trainable entry that overlaps the
 * range, clipped to it and shifted to offset − start (the optimizer's groups follow the names, so the update of each
 * element is the one it gets in the whole vector).
 */
export function sliceLayout(layout: ParamLayout, start: number, end: number): ParamLayout {
  const entries: ParamLayoutEntry[] = [];
  for (const e of layout.entries) {
    if (e.offset === null) continue;
    const size = e.shape.reduce((a, b) => a * b, 1);
    const from = Math.max(e.offset, start);
    const to = Math.min(e.offset + size, end);
    if (from < to) entries.push({ name: e.name, shape: [to - from], offset: from - start, trainable: true });
  }
  return { entries, size: end - start, hash: `${layout.hash}[${start}:${end}]` };
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
    case 'pull':
      return reducer.state();
    case 'push':
      return reducer.restore(r.state);
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
  async pull(): Promise<ShardState> {
    return (await this.call({ type: 'pull' })) as ShardState;
  }
  async push(state: ShardState): Promise<void> {
    await this.call({ type: 'push', state });
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

/** A shard answered by another thread or process: requests by id, replies matched; its death fails every call. */
abstract class RemoteHost extends HostBase {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  protected dead: Error | undefined;

  constructor(
    range: ShardRange,
    protected readonly what: string,
  ) {
    super(range);
  }

  protected onReply(msg: ShardReply): void {
    if (msg.type !== 'done' && msg.type !== 'error') return;
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    if (msg.type === 'done') p.resolve(msg.value);
    else p.reject(fromFailure(msg.error));
  }

  protected fail(cause: string): void {
    this.dead ??= new ShardThreadError(`${this.what} failed: ${cause} (the coordinator stops; restart it with --resume)`);
    for (const p of this.pending.values()) p.reject(this.dead);
    this.pending.clear();
  }

  protected abstract post(msg: ShardRequest, transfer: ArrayBuffer[]): void;

  protected call(req: Call, transfer: ArrayBuffer[] = []): Promise<unknown> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.post({ ...req, id } as ShardRequest, transfer);
    });
  }
}

/** A shard reduced in a `worker_threads` thread of its own, with its own Redis connections. */
export class ThreadShardHost extends RemoteHost {
  private constructor(
    range: ShardRange,
    private readonly thread: Worker,
  ) {
    super(range, `shard thread ${range.index}`);
    thread.on('message', (msg: ShardReply) => this.onReply(msg));
    thread.on('error', (e) => this.fail(e.message));
    thread.on('exit', (code) => this.fail(`it exited with code ${code}`));
  }

  static async start(init: ShardInit, threadPath = shardThreadPath()): Promise<ThreadShardHost> {
    const { thread } = await startThread(threadPath, init, `shard thread ${init.range.index}`);
    return new ThreadShardHost(init.range, thread);
  }

  protected post(msg: ShardRequest, transfer: ArrayBuffer[]): void {
    this.thread.postMessage(msg, transfer);
  }

  async close(): Promise<void> {
    this.dead ??= new ShardThreadError(`${this.what} was closed`);
    await this.thread.terminate();
  }
}

/** How long a reducer process's IPC error waits for the process's exit, which names the cause better. */
const EXIT_AFTER_ERROR_GRACE_MS = 1_000;

/** The compiled reducer-process entry (`dist/reduction/shard-process.js`). */
export function shardProcessPath(): string {
  return threadEntry(import.meta.url, 'reduction/shard-process.js');
}

/**
 * A shard reduced in a process of its own (`coordinator.reducers: processes`): it holds its range of the parameters
 * and moments and reads its gradient blobs with its own connections, so no gradient byte passes through the
 * coordinator's process. It exits when the coordinator does (its IPC channel closes).
 */
export class ProcessShardHost extends RemoteHost {
  private constructor(
    range: ShardRange,
    private readonly child: ChildProcess,
  ) {
    super(range, `shard process ${range.index} (pid ${child.pid})`);
    child.on('message', (msg: ShardReply) => this.onReply(msg));
    // A request written to a child that has just died fails (EPIPE) before its 'exit' arrives: the exit, when it
    // follows within the grace, names the cause (the signal or code); an error with no exit behind it still fails.
    child.on('error', (e) => setTimeout(() => this.fail(e.message), EXIT_AFTER_ERROR_GRACE_MS));
    child.on('exit', (code, signal) => this.fail(signal ? `it was killed by ${signal}` : `it exited with code ${code}`));
  }

  /** Forks the reducer process with the shard's range of `init` (copies) and waits until it is ready. */
  static async start(init: ShardInit, path = shardProcessPath()): Promise<ProcessShardHost> {
    const what = `shard process ${init.range.index}`;
    requireEntry(path, what);
    const { start, end } = init.range;
    const local: ShardInit = { ...init, params: init.params.slice(start, end), m: init.m.slice(start, end), v: init.v.slice(start, end) };
    const child = fork(path, [], { serialization: 'advanced', execArgv: compiledExecArgv(), stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let onMessage: ((msg: ShardReply) => void) | undefined;
    let onError: ((e: Error) => void) | undefined;
    let onExit: ((code: number | null, signal: NodeJS.Signals | null) => void) | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        onMessage = (msg: ShardReply): void => (msg.type === 'ready' ? resolve() : reject(new Error(`${what}: ${msg.type === 'failed' ? msg.message : 'unexpected first message'}`)));
        onError = reject;
        onExit = (code, signal): void => reject(new Error(`${what} exited (${signal ?? `code ${code}`}) before it was ready`));
        child.once('message', onMessage);
        child.once('error', onError);
        child.once('exit', onExit);
        child.send({ type: 'init', init: local });
      });
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    } finally {
      // Only our own listeners.
      if (onMessage) child.off('message', onMessage);
      if (onError) child.off('error', onError);
      if (onExit) child.off('exit', onExit);
    }
    return new ProcessShardHost(init.range, child);
  }

  protected post(msg: ShardRequest): void {
    this.child.send(msg);
  }

  async close(): Promise<void> {
    this.dead ??= new ShardThreadError(`${this.what} was closed`);
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.kill('SIGTERM');
    await Promise.race([exited, new Promise<void>((r) => setTimeout(r, 5_000).unref())]);
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}
