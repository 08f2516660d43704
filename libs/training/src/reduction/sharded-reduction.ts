import type { AdamW } from '@m3ae/model/adamw';
import { addTotals, bytesPerElement, shardRanges, type BlobRef, type ObjectiveTotals, type OptimizerState, type ShardRange, type TensorEncoding } from '@m3ae/protocol';
import { adamwFor, type OptimizerSpec } from '../optimizer.js';
import { LocalShardHost, ProcessShardHost, ThreadShardHost, type BlobTransport, type ShardHost, type ShardInit } from './shard-host.js';
import type { ShardSource } from './shard-reducer.js';

/** Where a run's shards are reduced: this thread (all of them, one after the other), coordinator threads, or reducer processes. */
export type ShardHosting = 'local' | 'threads' | 'processes';

/** A job's contribution as a source hands it over: its gradient (whole, in memory, or one blob per shard) and loss totals. */
export interface StepContribution {
  gradient: { bytes: Uint8Array; encoding: TensorEncoding } | { refs: readonly BlobRef[] };
  sums: ObjectiveTotals;
  counts: ObjectiveTotals;
  correct: ObjectiveTotals;
  tokens?: number | undefined;
}

/** What the reduction measured in one step (summed over shards: thread-milliseconds where shards work side by side). */
export interface ReductionStats {
  /** Gradient bytes the shards read from Redis. */
  readBytes: number;
  /** The same per shard: what each shard's reader (a reducer process, when they are processes) moved. */
  shards: { readBytes: number; writtenBytes: number }[];
  /** Parameter bytes the shards wrote to Redis. */
  writtenBytes: number;
  /** Reading and verifying gradient parts, per shard, summed. */
  fetchMs: number;
  /** Adding gradient parts, per shard, summed. */
  addMs: number;
  /** The optimizer update, per shard, summed. */
  applyMs: number;
}

/**
 * The reduction and update of a run, cut into `training.shards` shards by {@link shardRanges}: shard s sums the
 * contributions' elements [start, end) in job order and applies AdamW to that range of the parameters and moments,
 * which live in shared memory. One shard runs in the caller's thread; several run in threads of their own, each
 * reading its parts from Redis with its own connections, so reading, verifying, adding and updating proceed in
 * parallel. The gradient norm is summed by fixed blocks that shard boundaries respect: the parameters have the same
 * bits for any number of shards, workers or threads.
 */
export class ShardedReduction {
  private constructor(
    readonly ranges: readonly ShardRange[],
    private readonly hosts: readonly ShardHost[],
    /** The run's parameters (shared memory: updated in place by the shards). */
    readonly params: Float32Array,
    /** Plans every update and holds the step count; its moments are the shared ones the shards update. */
    private readonly optimizer: AdamW,
    /** Where the shards run: `local` (this thread, one shard), `threads`, or `processes` (reducer processes). */
    readonly hosting: ShardHosting,
  ) {}

  /** Whether the shards run outside this thread (their parts of a gradient are copied to them). */
  get threaded(): boolean {
    return this.hosting !== 'local';
  }

  private stale = false;

  /**
   * Starts the shards over a copy of `initial` (`threads`: default, one thread per shard when there are several).
   * `blobs`: how the shards reach Redis (a cluster's source); without it, contributions come as bytes in memory.
   */
  static async create(o: { spec: OptimizerSpec; shards: number; initial: Float32Array; blobs?: BlobTransport | undefined; hosting?: ShardHosting | undefined }): Promise<ShardedReduction> {
    const n = o.spec.layout.size;
    if (o.initial.length !== n) throw new Error(`ShardedReduction: ${o.initial.length} initial parameters; the layout has ${n}`);
    const ranges = shardRanges(n, o.shards);
    const shared = (): Float32Array => new Float32Array(new SharedArrayBuffer(n * 4));
    const params = shared();
    params.set(o.initial);
    const m = shared();
    const v = shared();
    const hosting: ShardHosting = o.hosting ?? (ranges.length > 1 ? 'threads' : 'local');
    if (hosting === 'processes' && !o.blobs) throw new Error('reducer processes read their gradient blobs from Redis: they need a cluster (a blob transport), not an in-process run');
    // The threads start side by side; if one cannot, the others are closed again.
    const started = await Promise.allSettled(
      ranges.map(async (range) => {
        const init: ShardInit = { range, params, m, v, optimizer: o.spec, blobs: o.blobs };
        return hosting === 'threads' ? await ThreadShardHost.start(init) : hosting === 'processes' ? await ProcessShardHost.start(init) : LocalShardHost.create(init);
      }),
    );
    const hosts = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await Promise.all(hosts.map(async (h) => h.close()));
      throw failed.reason;
    }
    return new ShardedReduction(ranges, hosts, params, adamwFor(o.spec, { m, v }), hosting);
  }

  /** Updates taken so far. */
  get updates(): number {
    return this.optimizer.step;
  }

  /** The optimizer's state (after {@link sync}: reducer processes hold theirs). */
  getOptimizerState(): OptimizerState {
    if (this.stale) throw new Error('the reducer processes hold newer parameters and moments: sync() first');
    return this.optimizer.getState();
  }

  /** Restores the optimizer's state (and sends every reducer process its range of it and of the parameters). */
  async setOptimizerState(state: OptimizerState): Promise<void> {
    this.optimizer.setState(state);
    await this.pushToProcesses();
  }

  /**
   * Makes {@link params} and the moments current: reducer processes send back their ranges (P values of parameters and
   * 2P of moments through IPC); a no-op for shards in this process. Call before reading the parameters.
   */
  async sync(): Promise<void> {
    if (!this.stale) return;
    const { m, v } = this.optimizer.moments;
    const states = await Promise.all(this.hosts.map(async (h) => h.pull()));
    states.forEach((st, i) => {
      const start = (this.ranges[i] as ShardRange).start;
      this.params.set(st.params, start);
      m.set(st.m, start);
      v.set(st.v, start);
    });
    this.stale = false;
  }

  private async pushToProcesses(): Promise<void> {
    if (this.hosting !== 'processes') return;
    const { m, v } = this.optimizer.moments;
    await Promise.all(this.hosts.map(async (h) => h.push({ params: this.params.slice(h.range.start, h.range.end), m: m.slice(h.range.start, h.range.end), v: v.slice(h.range.start, h.range.end) })));
  }

  /** Starts the reduction of one step of `jobCount` jobs (the previous one must be finished). */
  async begin(jobCount: number): Promise<StepReduction> {
    await Promise.all(this.hosts.map(async (h) => h.begin(jobCount)));
    return new StepReduction(this, this.hosts, jobCount);
  }

  /**
   * Every job of the step is in: the norm from every shard's blocks (in block order), one plan, every shard's range
   * updated. Update number `step` must be the next one.
   */
  async update(step: number, stats: ReductionStats): Promise<{ learningRate: number; gradientNorm: number }> {
    if (this.optimizer.step !== step) throw new Error(`the optimizer has taken ${this.optimizer.step} steps; the trainer is at step ${step}`);
    const parts = await Promise.all(this.hosts.map(async (h) => h.finish()));
    const blocks = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
    let at = 0;
    for (const p of parts) {
      blocks.set(p, at);
      at += p.length;
    }
    const plan = this.optimizer.plan(blocks);
    const ms = await Promise.all(this.hosts.map(async (h) => h.apply(plan)));
    stats.applyMs += ms.reduce((a, b) => a + b, 0);
    if (this.hosting === 'processes') this.stale = true;
    return { learningRate: plan.learningRate, gradientNorm: plan.gradNorm };
  }

  /** Publishes the current parameters, one f32 blob per shard (`<key>:shard<s>`), every shard writing its own. */
  async publish(key: string, stats: ReductionStats): Promise<BlobRef[]> {
    const out = await Promise.all(this.hosts.map(async (h) => h.publish(`${key}:shard${h.range.index}`)));
    out.forEach((o, s) => {
      stats.writtenBytes += o.writtenBytes;
      (stats.shards[s] as ReductionStats['shards'][number]).writtenBytes += o.writtenBytes;
    });
    return out.map((o) => o.ref);
  }

  async close(): Promise<void> {
    await Promise.all(this.hosts.map(async (h) => h.close()));
  }
}

/**
 * One step's reduction as the sources see it: exactly-once (each job counted once, by its first valid contribution),
 * all-or-nothing (a contribution whose part cannot be read in one shard counts in none: the error names the fault),
 * and in job order (the shards add in job order; the loss totals are added here in job order too), so the sum does not
 * depend on the arrival order, the number of workers or the copies that raced.
 */
export class StepReduction {
  readonly sums: ObjectiveTotals = {};
  readonly counts: ObjectiveTotals = {};
  readonly correct: ObjectiveTotals = {};
  /** Real text tokens of the counted jobs (undefined when a contribution did not count them). */
  tokens: number | undefined = 0;
  readonly stats: ReductionStats;
  private readonly accepted: boolean[];
  private readonly adding = new Set<number>();
  private readonly totals = new Map<number, Omit<StepContribution, 'gradient'>>();
  private next = 0;

  constructor(
    private readonly run: ShardedReduction,
    private readonly hosts: readonly ShardHost[],
    readonly jobCount: number,
  ) {
    this.accepted = new Array<boolean>(jobCount).fill(false);
    this.stats = { readBytes: 0, writtenBytes: 0, fetchMs: 0, addMs: 0, applyMs: 0, shards: hosts.map(() => ({ readBytes: 0, writtenBytes: 0 })) };
  }

  /** The parameters the step's gradients are computed at. */
  get params(): Float32Array {
    return this.run.params;
  }

  get shards(): readonly ShardRange[] {
    return this.run.ranges;
  }

  has(jobIndex: number): boolean {
    return this.accepted[jobIndex] === true;
  }

  get acceptedCount(): number {
    return this.accepted.filter(Boolean).length;
  }

  get complete(): boolean {
    return this.next === this.jobCount;
  }

  /** Jobs not yet counted. */
  missing(): number[] {
    const out: number[] = [];
    this.accepted.forEach((a, k) => !a && out.push(k));
    return out;
  }

  /** Publishes the parameters of this step (one blob per shard). */
  async publish(key: string): Promise<BlobRef[]> {
    return await this.run.publish(key, this.stats);
  }

  /**
   * Counts job `jobIndex` (not yet counted): every shard reads and verifies its part, then all add it — or, if one
   * shard cannot, none does and the error (a `BlobError` naming the fault) is thrown.
   */
  async add(jobIndex: number, c: StepContribution): Promise<void> {
    if (!(Number.isInteger(jobIndex) && jobIndex >= 0 && jobIndex < this.jobCount)) throw new Error(`job index ${jobIndex}: expected an integer below ${this.jobCount}`);
    if (this.has(jobIndex) || this.adding.has(jobIndex)) throw new Error(`job ${jobIndex} is already counted`);
    const sources = this.sourcesOf(c.gradient);
    this.adding.add(jobIndex);
    try {
      const staged = await Promise.allSettled(this.hosts.map(async (h, s) => h.stage(jobIndex, sources[s] as ShardSource)));
      staged.forEach((r, s) => {
        if (r.status !== 'fulfilled') return;
        (this.stats.shards[s] as ReductionStats['shards'][number]).readBytes += r.value.readBytes;
        this.stats.readBytes += r.value.readBytes;
        this.stats.fetchMs += r.value.fetchMs;
      });
      const failed = staged.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) {
        await Promise.all(this.hosts.map(async (h) => h.drop(jobIndex)));
        throw failed.reason;
      }
      const added = await Promise.all(this.hosts.map(async (h) => h.commit(jobIndex)));
      this.stats.addMs += added.reduce((a, b) => a + b, 0);
    } finally {
      this.adding.delete(jobIndex);
    }
    this.accepted[jobIndex] = true;
    this.totals.set(jobIndex, c);
    for (let t = this.totals.get(this.next); t; t = this.totals.get(this.next)) {
      addTotals(this.sums, t.sums);
      addTotals(this.counts, t.counts);
      addTotals(this.correct, t.correct);
      this.tokens = this.tokens === undefined || t.tokens === undefined ? undefined : this.tokens + t.tokens;
      this.totals.delete(this.next);
      this.next++;
    }
  }

  /** Each shard's part of a gradient: its blob, or its range of the bytes (a copy when it goes to a thread). */
  private sourcesOf(g: StepContribution['gradient']): ShardSource[] {
    const ranges = this.run.ranges;
    if ('refs' in g) {
      if (g.refs.length !== ranges.length) throw new Error(`${g.refs.length} gradient blob(s); this run has ${ranges.length} shard(s) (training.shards)`);
      return g.refs.map((ref) => ({ ref }));
    }
    const bpe = bytesPerElement(g.encoding);
    const n = ranges[ranges.length - 1]?.end ?? 0;
    if (g.bytes.byteLength !== n * bpe) throw new Error(`a gradient of ${g.bytes.byteLength} bytes; expected ${n * bpe} (${n} ${g.encoding} values)`);
    const part = (a: number, b: number): Uint8Array => (this.run.threaded ? g.bytes.slice(a, b) : g.bytes.subarray(a, b));
    return ranges.map((r) => ({ bytes: part(r.start * bpe, r.end * bpe), encoding: g.encoding }));
  }
}
