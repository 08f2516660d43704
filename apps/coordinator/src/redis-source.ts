import { Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import {
  BlobError,
  BlobStore,
  FixedPointError,
  blobEndpoints,
  connectRedis,
  JOB_QUEUE_NAME,
  parseContribution,
  sameTotals,
  queueEndpoint,
  redisOptions,
  RunKeys,
  waitForRedis,
  type BlobRef,
  type Contribution,
  type MicroBatchJob,
  type ObjectiveTotals,
  type ProcessTransfer,
  type RunConfig,
} from '@m3ae/protocol';
import { ShardThreadError, StopRequested, type BlobTransport, type GatherStats, type GradientSource, type PlannedJob, type StepReduction, type StepWork } from '@m3ae/training';
import { assertNoEviction } from './redis-policy.js';

/** Why a contribution was refused (a label of `m3ae_jobs_rejected_total`). */
export type RejectReason =
  | 'malformed'
  | 'other-run'
  | 'stale-incarnation'
  | 'stale-step'
  | 'stale-version'
  | 'bad-job-index'
  | 'manifest'
  | 'counts'
  | 'encoding'
  | 'non-finite-loss'
  | 'missing'
  | 'truncated'
  | 'checksum'
  | 'layout'
  | 'non-finite'
  | 'length'
  | 'unreadable';

/** The BullMQ job states in which a copy of a micro-batch is still on its way to a result. */
const LIVE_JOB_STATES: ReadonlySet<string> = new Set(['waiting', 'active', 'delayed', 'prioritized', 'waiting-children']);

/** What happens to the jobs and contributions of a run on the cluster (for logs, metrics and tests). */
export interface SourceEvents {
  onReject?(reason: RejectReason, detail: { step: number; jobIndex?: number; workerId?: string; message: string }): void;
  onDuplicate?(detail: { step: number; jobIndex: number; workerId: string }): void;
  onEnqueue?(detail: { step: number; jobIndex: number; copy: number; kind: 'original' | 'retry' | 'backup'; job: MicroBatchJob }): void;
  onBackupWon?(detail: { step: number; jobIndex: number }): void;
  onRecover?(detail: { step: number; reason: string }): void;
  /** BullMQ found a job whose lock expired (its worker died or stalled) and put it back: it runs again. */
  onRedeliver?(detail: { jobId: string }): void;
  /** A step's jobs have waited `seconds` with no worker alive (said every `coordinator.noWorkerWarnMs`). */
  onNoWorkers?(detail: { step: number; waiting: number; seconds: number }): void;
}

export class CoordinatorError extends Error {
  override readonly name = 'CoordinatorError';
}

export interface RedisSourceOptions {
  config: RunConfig;
  incarnation: string;
  /** The run's parameter layout hash and the jobs of a full step (written to the run's sentinel for workers and tools). */
  manifestHash: string;
  jobsPerFullStep: number;
  paramCount: number;
  logger: Logger;
  events?: SourceEvents | undefined;
}

interface JobCopy {
  id: string;
  copy: number;
  kind: 'original' | 'retry' | 'backup';
  enqueuedAt: number;
  /** Consecutive checks that found this copy gone from the queue. */
  goneChecks: number;
}

interface StepState {
  step: number;
  version: number;
  paramsRefs: BlobRef[];
  jobs: PlannedJob[];
  jobCount: number;
  expected: ObjectiveTotals[];
  copies: JobCopy[][];
  reducer: StepReduction;
  acceptedTimings: Contribution['timings'][];
  workers: Set<string>;
  tally: { enqueued: number; rejected: number; duplicates: number; backups: number; retried: number };
  bytes: { params: number; grads: number };
  /** Bytes each worker reported moving for this step's contributions (accepted or not). */
  transfers: Map<string, ProcessTransfer>;
  backupsOf: Set<number>;
  recoveries: number;
  /** When the step's jobs were enqueued, and when the coordinator last said that no worker was alive. */
  startedAt: number;
  noWorkerWarnedAt?: number;
}

/**
 * The {@link GradientSource} of a cluster: each step it publishes parameter version v, enqueues the step's
 * micro-batch jobs on BullMQ, counts each micro-batch's first valid contribution (verified: run, incarnation, step,
 * version, manifest, counts, length, checksum, finite values) into the trainer's reducer, gives stragglers backup
 * copies, enqueues lost or failed jobs again, and repopulates a Redis that lost everything and redoes the step's
 * missing micro-batches.
 */
export class RedisGradientSource implements GradientSource {
  readonly keys: RunKeys;
  private readonly log: Logger;
  private readonly config: RunConfig;
  private redis!: Redis;
  private blocking!: Redis;
  private blobs!: BlobStore;
  private queue!: Queue;
  private queueEvents: QueueEvents | undefined;
  private current: StepState | undefined;
  private stopRequested = false;

  constructor(private readonly options: RedisSourceOptions) {
    this.config = options.config;
    this.keys = new RunKeys(this.config.runId);
    this.log = options.logger;
  }

  /** The shards of the coordinator's reduction read the workers' gradient blobs from the run's blob Redis instances. */
  get blobTransport(): BlobTransport {
    return { endpoints: blobEndpoints(this.config), options: { chunkBytes: this.config.redis.chunkBytes, checksum: this.config.redis.checksum } };
  }

  private get incarnation(): string {
    return this.options.incarnation;
  }

  /** The run's BullMQ queue (for queue metrics); valid after `connect()`. */
  get jobQueue(): Queue {
    return this.queue;
  }

  /** A stop was requested: a start-up wait ends, and connections stop retrying a Redis that is gone. */
  requestStop(): void {
    this.stopRequested = true;
  }

  async connect(): Promise<void> {
    const endpoint = queueEndpoint(this.config);
    // A deadline at start-up (one line naming the cause), and a stop request ends the wait.
    const shouldStop = (): boolean => this.stopRequested;
    for (const e of [endpoint, ...blobEndpoints(this.config).filter((b) => b.url !== endpoint.url)]) {
      await waitForRedis(e, { timeoutSeconds: this.config.redis.connectTimeoutSeconds, shouldStop });
    }
    // During the run, connections retry across a Redis restart; once a stop is requested, a Redis that is gone
    // fails the pending commands instead (the step is abandoned and the checkpoint written anyway).
    const retryStrategy = (times: number): number | null => (this.stopRequested ? null : Math.min(times * 50, 2000));
    this.redis = connectRedis(endpoint, { connectionName: 'm3ae-coordinator', retryStrategy });
    this.blocking = connectRedis(endpoint, { connectionName: 'm3ae-coordinator-results', retryStrategy });
    this.blobs = BlobStore.connect(blobEndpoints(this.config), { chunkBytes: this.config.redis.chunkBytes, checksum: this.config.redis.checksum }, { retryStrategy });
    for (const c of [this.redis, this.blocking, ...this.blobs.stores]) c.on('error', (e: Error) => this.log.warn({ err: e.message }, 'redis connection error (retrying)'));
    await assertNoEviction(this.redis);
    for (const s of this.blobs.stores) await assertNoEviction(s);
    this.queue = new Queue(JOB_QUEUE_NAME, {
      connection: redisOptions(endpoint, { maxRetriesPerRequest: null, connectionName: 'm3ae-coordinator-queue', retryStrategy }),
      prefix: this.keys.bullPrefix,
      streams: { events: { maxLen: 200 } },
      // Failed jobs are kept (at most 1,000; `close` clears the run) so that their reason reaches the log and the error.
      defaultJobOptions: { removeOnComplete: true, removeOnFail: { count: 1000 }, attempts: 3, backoff: { type: 'fixed', delay: 250 } },
    });
    this.queue.on('error', (e) => this.log.warn({ err: e.message }, 'queue connection error (retrying)'));
    const onRedeliver = this.options.events?.onRedeliver;
    if (onRedeliver) {
      this.queueEvents = new QueueEvents(JOB_QUEUE_NAME, {
        connection: redisOptions(endpoint, { maxRetriesPerRequest: null, connectionName: 'm3ae-coordinator-events', retryStrategy }),
        prefix: this.keys.bullPrefix,
      });
      this.queueEvents.on('error', (e) => this.log.warn({ err: e.message }, 'queue events connection error (retrying)'));
      this.queueEvents.on('stalled', ({ jobId }) => {
        this.log.warn({ job: jobId }, 'a job was redelivered (its worker stopped renewing the lock)');
        onRedeliver({ jobId });
      });
    }
  }

  private async disconnect(): Promise<void> {
    const closing = (async () => {
      await this.queueEvents?.close().catch(() => undefined);
      await this.queue?.close().catch(() => undefined);
      await this.blobs?.close();
      for (const c of [this.redis, this.blocking]) await c?.quit().catch(() => c.disconnect());
    })();
    // A graceful QUIT needs an answer; without Redis, drop the connections after a while.
    const done = await Promise.race([closing.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 5_000).unref())]);
    if (!done) for (const c of [this.redis, this.blocking, ...(this.blobs?.stores ?? [])]) c?.disconnect();
  }

  async start(info: { startStep: number }): Promise<void> {
    await this.clearRun();
    await this.writeSentinel(info.startStep);
  }

  /** Clears the run from Redis (bounded: a Redis that is gone for good must not keep us here) and disconnects. */
  async close(): Promise<void> {
    if (!this.redis) return;
    const cleared = await Promise.race([
      this.clearRun().then(
        () => true,
        (e: unknown) => (this.log.warn({ err: String(e) }, 'could not clear the run from Redis'), true),
      ),
      new Promise<false>((r) => setTimeout(() => r(false), 15_000).unref()),
    ]);
    if (!cleared) this.log.warn('Redis did not answer within 15 s: the run was not cleared from it (gradient blobs expire on their own)');
    await this.disconnect();
  }

  /** Removes everything of this run from Redis (what an earlier incarnation left, or this one at the end). */
  private async clearRun(): Promise<void> {
    await new BlobStore([this.redis]).deletePattern(this.keys.allPattern);
    if (this.blobs.stores.some((s) => s !== this.redis)) await this.blobs.deletePattern(this.keys.allPattern);
  }

  private async writeSentinel(step: number): Promise<void> {
    await this.redis.hset(this.keys.coordinator, {
      incarnation: this.incarnation,
      manifestHash: this.options.manifestHash,
      step: String(step),
      jobsPerStep: String(this.options.jobsPerFullStep),
      startedAt: new Date().toISOString(),
    });
  }

  /** Version v of the parameters, one blob per shard, each written by its shard. */
  private async publishParams(reducer: StepReduction, version: number): Promise<BlobRef[]> {
    return await reducer.publish(this.keys.params(version));
  }

  private async enqueue(state: StepState, jobIndex: number, kind: JobCopy['kind']): Promise<boolean> {
    const copies = state.copies[jobIndex] as JobCopy[];
    if (copies.length >= this.config.coordinator.maxCopies) return false;
    const copy = copies.length;
    const id = `s${state.step}-j${jobIndex}-c${copy}`;
    const data: MicroBatchJob = { ...(state.jobs[jobIndex] as PlannedJob), copy, params: state.paramsRefs };
    await this.queue.add('microbatch', data, { jobId: id, ...(kind === 'backup' ? { lifo: true } : {}) });
    copies.push({ id, copy, kind, enqueuedAt: Date.now(), goneChecks: 0 });
    state.tally.enqueued++;
    if (kind === 'backup') state.tally.backups++;
    if (kind === 'retry') state.tally.retried++;
    this.options.events?.onEnqueue?.({ step: state.step, jobIndex, copy, kind, job: data });
    return true;
  }

  async gather(work: StepWork, reducer: StepReduction, shouldStop: () => boolean): Promise<GatherStats> {
    const t0 = performance.now();
    await this.redis.hset(this.keys.coordinator, 'step', String(work.step));
    const paramsRefs = await this.publishParams(reducer, work.version);
    const tPublished = performance.now();
    const state: StepState = {
      step: work.step,
      version: work.version,
      paramsRefs,
      jobs: work.jobs,
      jobCount: work.jobs.length,
      expected: work.expected,
      copies: work.jobs.map(() => []),
      reducer,
      acceptedTimings: [],
      workers: new Set(),
      tally: { enqueued: 0, rejected: 0, duplicates: 0, backups: 0, retried: 0 },
      bytes: { params: paramsRefs.reduce((a, r) => a + r.bytes, 0), grads: 0 },
      transfers: new Map(),
      backupsOf: new Set(),
      recoveries: 0,
      startedAt: Date.now(),
    };
    this.current = state;
    for (let k = 0; k < state.jobCount; k++) await this.enqueue(state, k, 'original');
    const tEnqueued = performance.now();

    let idleMs = 0;
    let lastCheck = performance.now();
    const interval = this.config.coordinator.checkIntervalMs;
    while (!reducer.complete) {
      if (shouldStop()) throw new StopRequested('stop requested');
      const tw = performance.now();
      const popped = await this.blocking.blpop(this.keys.results, Math.max(0.05, interval / 1000));
      idleMs += performance.now() - tw;
      if (popped) await this.handle(state, popped[1]);
      if (performance.now() - lastCheck >= interval) {
        await this.periodicCheck(state);
        lastCheck = performance.now();
      }
    }
    const tReduced = performance.now();
    const mean = (f: (t: Contribution['timings']) => number): number => state.acceptedTimings.reduce((a, t) => a + f(t), 0) / Math.max(1, state.acceptedTimings.length);
    return {
      phases: { publishMs: tPublished - t0, enqueueMs: tEnqueued - tPublished, idleMs: Math.max(0, idleMs), reduceMs: tReduced - tEnqueued - idleMs },
      worker: { fetchMs: mean((t) => t.fetchMs), computeMs: mean((t) => t.computeMs), encodeMs: mean((t) => t.encodeMs), uploadMs: mean((t) => t.uploadMs), totalMs: mean((t) => t.totalMs) },
      bytes: state.bytes,
      workerTransfers: [...state.transfers.values()].sort((a, b) => a.id.localeCompare(b.id)),
      jobs: state.tally,
      workers: [...state.workers],
      recoveries: state.recoveries,
    };
  }

  /** Everything of the step is counted: the remaining copies are obsolete, and so is version v. */
  async finishStep(): Promise<void> {
    const state = this.current;
    if (!state) return;
    await this.queue.drain(true);
    for (const ref of state.paramsRefs) await this.blobs.delete(ref);
    this.current = undefined;
  }

  private reject(state: StepState, reason: RejectReason, message: string, c?: { jobIndex: number; workerId: string }): void {
    state.tally.rejected++;
    this.log.warn({ step: state.step, job: c?.jobIndex, worker: c?.workerId, reason }, `rejected a contribution: ${message}`);
    this.options.events?.onReject?.(reason, { step: state.step, ...(c ? { jobIndex: c.jobIndex, workerId: c.workerId } : {}), message });
  }

  /** Deletes a contribution's gradient blobs that lie in this run's blob space (never trust a foreign key). */
  private async discard(refs: unknown): Promise<void> {
    if (!Array.isArray(refs)) return;
    for (const ref of refs.slice(0, 64) as unknown[]) {
      const r = ref as Partial<BlobRef> | undefined;
      if (r && typeof r.key === 'string' && typeof r.chunks === 'number' && this.keys.ownsBlob(r.key) && r.chunks >= 0 && r.chunks < 1_000_000) {
        await this.blobs.delete({ key: r.key, chunks: r.chunks }).catch(() => undefined);
      }
    }
  }

  private async handle(state: StepState, raw: string): Promise<void> {
    let data: unknown;
    try {
      data = JSON.parse(raw);
    } catch {
      this.reject(state, 'malformed', 'not JSON');
      return;
    }
    let c: Contribution;
    try {
      c = parseContribution(data);
    } catch (e) {
      this.reject(state, 'malformed', (e as Error).message);
      await this.discard((data as { grads?: unknown } | null)?.grads);
      return;
    }
    const who = { jobIndex: c.jobIndex, workerId: c.workerId };
    if (c.step === state.step) {
      // What the worker moved for this step, whatever becomes of the contribution.
      const t = state.transfers.get(c.workerId) ?? { id: c.workerId, role: 'worker' as const, readBytes: 0, writtenBytes: 0, jobs: 0 };
      t.readBytes += c.transfer.readBytes;
      t.writtenBytes += c.transfer.writtenBytes;
      t.jobs++;
      state.transfers.set(c.workerId, t);
    }
    try {
      if (c.runId !== this.config.runId) return this.reject(state, 'other-run', `run ${c.runId}`, who);
      if (c.incarnation !== this.incarnation) return this.reject(state, 'stale-incarnation', `incarnation ${c.incarnation}`, who);
      if (c.step !== state.step) return this.reject(state, 'stale-step', `step ${c.step} while reducing step ${state.step}`, who);
      if (c.version !== state.version) return this.reject(state, 'stale-version', `parameter version ${c.version}; expected ${state.version}`, who);
      if (c.jobIndex >= state.jobCount) return this.reject(state, 'bad-job-index', `job index ${c.jobIndex} of ${state.jobCount}`, who);
      if (state.reducer.has(c.jobIndex)) {
        state.tally.duplicates++;
        this.options.events?.onDuplicate?.({ step: state.step, jobIndex: c.jobIndex, workerId: c.workerId });
        return;
      }
      const bad = (reason: RejectReason, message: string): Promise<void> => this.rejectAndRecompute(state, reason, message, who);
      if (c.manifestHash !== this.options.manifestHash) return await bad('manifest', `model manifest ${c.manifestHash.slice(0, 16)}…; expected ${this.options.manifestHash.slice(0, 16)}…`);
      const want = state.expected[c.jobIndex] as ObjectiveTotals;
      if (!sameTotals(c.counts, want)) {
        return await bad('counts', `counts ${JSON.stringify(c.counts)}; expected ${JSON.stringify(want)} (different data or masking?)`);
      }
      if (![...Object.values(c.sums), ...Object.values(c.correct)].every(Number.isFinite)) return await bad('non-finite-loss', `loss sums ${JSON.stringify(c.sums)}`);
      // A step's contributions are summed in one encoding (fx53 exactly, the others in job order).
      const wrongEncoding = c.grads.find((g) => g.encoding !== this.config.training.gradEncoding);
      if (wrongEncoding) return await bad('encoding', `gradient encoded ${wrongEncoding.encoding}; expected ${this.config.training.gradEncoding} (training.gradEncoding)`);
      const shards = state.reducer.shards.length;
      if (c.grads.length !== shards) return await bad('layout', `gradient in ${c.grads.length} shard blob(s); this run has ${shards} (training.shards)`);
      const readBefore = state.reducer.stats.readBytes;
      try {
        // Every shard reads and verifies its own blob (length, checksum, finite values); the job counts in all or none.
        await state.reducer.add(c.jobIndex, { gradient: { refs: c.grads }, sums: c.sums, counts: c.counts, correct: c.correct, tokens: c.tokens });
      } catch (e) {
        // An fx53 sum out of range, or a shard thread that died: no recomputation helps — the step fails with the cause.
        if (e instanceof FixedPointError || e instanceof ShardThreadError) throw e;
        if (e instanceof BlobError) return await bad(e.fault, e.message);
        // A read that failed for another reason (a connection dropped mid-transfer): compute it again.
        return await bad('unreadable', e instanceof Error ? e.message : String(e));
      }
      state.bytes.grads += state.reducer.stats.readBytes - readBefore;
      const copy = state.copies[c.jobIndex]?.[c.copy];
      if (copy?.kind === 'backup') this.options.events?.onBackupWon?.({ step: state.step, jobIndex: c.jobIndex });
      state.acceptedTimings.push(c.timings);
      state.workers.add(c.workerId);
    } finally {
      await this.discard(c.grads);
    }
  }

  private async rejectAndRecompute(state: StepState, reason: RejectReason, message: string, who: { jobIndex: number; workerId: string }): Promise<void> {
    this.reject(state, reason, message, who);
    // Recompute unless another copy is still on its way.
    const pending = await this.pendingCopies(state, who.jobIndex);
    if (pending === 0 && !(await this.enqueue(state, who.jobIndex, 'retry'))) {
      throw new CoordinatorError(`step ${state.step}: micro-batch ${who.jobIndex} was rejected ${this.config.coordinator.maxCopies} times (last: ${reason}: ${message})`);
    }
  }

  /** Copies of a micro-batch still waiting, delayed or running in the queue. */
  private async pendingCopies(state: StepState, jobIndex: number): Promise<number> {
    let n = 0;
    for (const c of state.copies[jobIndex] ?? []) {
      const s = await this.queue.getJobState(c.id);
      if (s !== undefined && LIVE_JOB_STATES.has(s)) n++;
    }
    return n;
  }

  /**
   * Every `checkIntervalMs`: is Redis still holding our run (else repopulate and redo), are missing
   * micro-batches still in the queue (else enqueue again), and is any running one a straggler (backup)?
   */
  private async periodicCheck(state: StepState): Promise<void> {
    const owner = await this.redis.hget(this.keys.coordinator, 'incarnation');
    if (owner === null) return await this.recover(state, 'the run state is gone from Redis (restarted or flushed)');
    if (owner !== this.incarnation) throw new CoordinatorError(`another coordinator (incarnation ${owner}) took over run ${this.config.runId}; this one stops`);
    if ((await this.redis.llen(this.keys.results)) > 0) return; // results first; they may account for "gone" copies
    const now = Date.now();
    const durations = state.acceptedTimings.map((t) => t.totalMs).sort((a, b) => a - b);
    const median = durations.length ? (durations[Math.floor(durations.length / 2)] as number) : undefined;
    // All copies' states at once (concurrent commands share one round trip), then the running ones' start times.
    const missing = state.reducer.missing();
    const copies = missing.flatMap((k) => (state.copies[k] as JobCopy[]).map((c) => ({ k, c })));
    const states = await Promise.all(copies.map(async ({ c }) => this.queue.getJobState(c.id)));
    const activeIds = copies.filter((_, i) => states[i] === 'active').map(({ c }) => c.id);
    if (activeIds.length === 0) await this.warnWithoutWorkers(state, now, missing.length);
    const startedAt = new Map<string, number>();
    if (median !== undefined && activeIds.length > 0) {
      const jobs = await Promise.all(activeIds.map(async (id) => this.queue.getJob(id)));
      for (const j of jobs) if (j?.id && j.processedOn) startedAt.set(j.id, j.processedOn);
    }
    // Why failed copies failed (a worker's UnrecoverableError: a malformed payload, another run's job): said when the
    // micro-batch is enqueued again, and in the error that ends the run when it keeps failing.
    const failedIds = copies.filter((_, i) => states[i] === 'failed').map(({ c }) => c.id);
    const failedReason = new Map<string, string>();
    for (const j of await Promise.all(failedIds.map(async (id) => this.queue.getJob(id)))) if (j?.id && j.failedReason) failedReason.set(j.id, j.failedReason);
    for (const k of missing) {
      let live = 0;
      let oldestActiveStart: number | undefined;
      copies.forEach(({ k: kk, c }, i) => {
        if (kk !== k) return;
        const s = states[i];
        if (s !== undefined && LIVE_JOB_STATES.has(s)) {
          live++;
          c.goneChecks = 0;
          const t = startedAt.get(c.id);
          if (t !== undefined) oldestActiveStart = Math.min(oldestActiveStart ?? Infinity, t);
        } else {
          c.goneChecks++;
        }
      });
      const own = state.copies[k] as JobCopy[];
      if (live === 0 && own.every((c) => c.goneChecks >= 2)) {
        // Failed, removed, or completed without a result reaching us: compute it again.
        const reason = own.map((c) => failedReason.get(c.id)).find((r) => r !== undefined);
        this.log.warn({ step: state.step, job: k, ...(reason ? { reason } : {}) }, 'micro-batch lost from the queue; enqueueing it again');
        if (!(await this.enqueue(state, k, 'retry'))) {
          throw new CoordinatorError(`step ${state.step}: micro-batch ${k} was lost ${this.config.coordinator.maxCopies} times${reason ? ` (a worker failed it: ${reason})` : ''}`);
        }
        continue;
      }
      if (median !== undefined && oldestActiveStart !== undefined && live === 1 && !state.backupsOf.has(k)) {
        const running = now - oldestActiveStart;
        if (running > Math.max(this.config.coordinator.backupMinMs, this.config.coordinator.backupFactor * median)) {
          this.log.info({ step: state.step, job: k, runningMs: running, medianMs: Math.round(median) }, 'straggler: enqueueing a backup copy');
          state.backupsOf.add(k);
          await this.enqueue(state, k, 'backup');
        }
      }
    }
  }

  /**
   * Jobs wait and no worker is alive (no heartbeat in Redis): said every `coordinator.noWorkerWarnMs`, so that whoever
   * watches the log sees why nothing moves. The run keeps waiting: workers may join at any time (a scaled deployment).
   */
  private async warnWithoutWorkers(state: StepState, now: number, waiting: number): Promise<void> {
    if (now - (state.noWorkerWarnedAt ?? state.startedAt) < this.config.coordinator.noWorkerWarnMs) return;
    if ((await new BlobStore([this.redis]).scan(this.keys.workersPattern)).length > 0) return;
    state.noWorkerWarnedAt = now;
    const seconds = Math.round((now - state.startedAt) / 1000);
    this.log.warn(
      { step: state.step, waiting, seconds },
      `no worker is alive: ${waiting} job(s) of step ${state.step} have waited ${seconds} s; start m3ae worker with this run's configuration (run ${this.config.runId}, the same Redis and data)`,
    );
    this.options.events?.onNoWorkers?.({ step: state.step, waiting, seconds });
  }

  /** Redis lost our keys: write them again, republish version v and recompute what is not yet counted. */
  private async recover(state: StepState, reason: string): Promise<void> {
    state.recoveries++;
    this.log.warn({ step: state.step, missing: state.reducer.missing().length }, `${reason}; redoing the step's missing micro-batches`);
    this.options.events?.onRecover?.({ step: state.step, reason });
    await assertNoEviction(this.redis);
    await this.writeSentinel(state.step);
    state.paramsRefs = await this.publishParams(state.reducer, state.version);
    for (const k of state.reducer.missing()) {
      for (const c of state.copies[k] as JobCopy[]) c.goneChecks = 0;
      if (!(await this.enqueue(state, k, 'retry'))) throw new CoordinatorError(`step ${state.step}: micro-batch ${k} exceeded ${this.config.coordinator.maxCopies} copies while recovering`);
    }
  }
}
