import { randomBytes } from 'node:crypto';
import { Worker as BullWorker, UnrecoverableError, WaitingError, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { pino, type Logger } from 'pino';
import {
  BlobStore,
  blobEndpoints,
  connectRedis,
  waitForRedis,
  JOB_QUEUE_NAME,
  parseMicroBatchJob,
  PayloadError,
  PROTOCOL_VERSION,
  paramsIdentity,
  shardRanges,
  queueEndpoint,
  redisOptions,
  RunKeys,
  type Contribution,
  type JobOutcome,
  type MicroBatchJob,
  type RunConfig,
  type WorkerJobEvent,
} from '@m3ae/protocol';
import { computeContribution, type GradientComputer } from '@m3ae/training';
import { workerId as defaultWorkerId } from './identity.js';

/** This worker's model differs from the run's: it must not compute (its gradients would be wrong). */
export class ManifestMismatchError extends Error {
  override readonly name = 'ManifestMismatchError';
}

export interface TrainingWorkerOptions {
  config: RunConfig;
  computer: GradientComputer;
  workerId?: string;
  logger?: Logger;
  onJob?: (event: WorkerJobEvent) => void;
  /** Polled while waiting for Redis at start-up: true ends the wait (SIGTERM while connecting). */
  shouldStop?: () => boolean;
}

export interface WorkerStats {
  completed: number;
  stale: number;
  failed: number;
  handedBack: number;
  paramFetches: number;
}

/**
 * A training worker: a BullMQ worker (one job at a time, `maxRetriesPerRequest: null`) that takes
 * micro-batch jobs, fetches the job's parameter version once, computes through its {@link GradientComputer},
 * uploads the gradient blob and pushes a contribution message for the coordinator. Jobs of an earlier
 * coordinator incarnation or an already finished step are completed without computing. `close()` (SIGTERM)
 * lets the current job finish within `worker.shutdownGraceMs`, otherwise hands it back to the queue.
 */
export class TrainingWorker {
  readonly id: string;
  readonly stats: WorkerStats = { completed: 0, stale: 0, failed: 0, handedBack: 0, paramFetches: 0 };
  readonly done: Promise<void>;
  private readonly keys: RunKeys;
  private readonly log: Logger;
  private bull: BullWorker | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  /** The last heartbeat's write (awaited before the key is removed, so that it cannot land after the removal). */
  private beating: Promise<unknown> = Promise.resolve();
  private params: Float32Array | undefined;
  private paramsVersion: { version: number; checksum: string } | undefined;
  private closing: Promise<void> | undefined;
  private fatal: Error | undefined;
  private handBack: (() => void) | undefined;
  private readonly handBackSignal: Promise<'hand-back'>;
  private resolveDone!: () => void;
  private rejectDone!: (e: Error) => void;

  private constructor(
    private readonly options: TrainingWorkerOptions,
    private readonly redis: Redis,
    private readonly blobs: BlobStore,
  ) {
    this.id = options.workerId ?? defaultWorkerId();
    this.keys = new RunKeys(options.config.runId);
    const base = options.logger ?? pino({ level: 'silent' });
    this.log = 'worker' in base.bindings() ? base : base.child({ worker: this.id });
    this.handBackSignal = new Promise((resolve) => (this.handBack = () => resolve('hand-back')));
    this.done = new Promise((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    this.done.catch(() => undefined); // observed by whoever awaits it
  }

  get computer(): GradientComputer {
    return this.options.computer;
  }

  /** Connects, checks the run's model manifest, and starts taking jobs. */
  static async start(options: TrainingWorkerOptions): Promise<TrainingWorker> {
    const { config } = options;
    // A deadline at start-up: a Redis that never answers ends the worker with one line, not a hang.
    await waitForRedis(queueEndpoint(config), { timeoutSeconds: config.redis.connectTimeoutSeconds, ...(options.shouldStop ? { shouldStop: options.shouldStop } : {}) });
    const redis = connectRedis(queueEndpoint(config), { connectionName: 'm3ae-worker' });
    const blobs = BlobStore.connect(blobEndpoints(config), { chunkBytes: config.redis.chunkBytes, checksum: config.redis.checksum });
    const w = new TrainingWorker(options, redis, blobs);
    // Error listeners before the first command (ioredis prints "Unhandled error event" otherwise).
    for (const c of [redis, ...blobs.stores]) c.on('error', (e: Error) => w.log.warn({ err: e.message }, 'redis connection error (retrying)'));
    try {
      await w.checkManifest();
    } catch (e) {
      await w.disconnect();
      throw e;
    }
    w.run();
    return w;
  }

  private async checkManifest(): Promise<void> {
    const published = await this.redis.hget(this.keys.coordinator, 'manifestHash');
    if (published && published !== this.computer.manifestHash) {
      throw new ManifestMismatchError(
        `worker ${this.id} refuses run ${this.options.config.runId}: its model manifest is ${this.computer.manifestHash.slice(0, 16)}… but the coordinator trains ${published.slice(0, 16)}… (different preset or overrides?)`,
      );
    }
    await this.pinBackend();
  }

  /**
   * A run computes on one backend kind: kinds differ in the last bits, so mixing them would break exactness
   * silently. The first worker records its kind in the run's coordinator hash (`backendKind`, next to the
   * manifest hash, once the coordinator has written it); a worker on another kind is refused, at start and on
   * every job (a restarted coordinator clears the hash: the next job records the kind again).
   */
  private async pinBackend(): Promise<void> {
    const mine = this.computer.backend;
    // Atomically, and only while the coordinator's hash exists (never recreate a cleared run's sentinel).
    const kind = (await this.redis.eval(
      "if redis.call('HEXISTS', KEYS[1], 'manifestHash') == 0 then return false end redis.call('HSETNX', KEYS[1], 'backendKind', ARGV[1]) return redis.call('HGET', KEYS[1], 'backendKind')",
      1,
      this.keys.coordinator,
      mine,
    )) as string | null;
    if (kind !== null && kind !== mine) {
      throw new ManifestMismatchError(
        `worker ${this.id} refuses run ${this.options.config.runId}: the run computes on the ${kind} backend but this worker runs ${mine}; ` +
          `backends differ in the last bits, so mixing them would break exactness (start it with --backend ${kind} or M3AE_BACKEND=${kind})`,
      );
    }
  }

  private run(): void {
    const { config } = this.options;
    const lockDuration = config.worker.lockDurationMs;
    this.bull = new BullWorker(JOB_QUEUE_NAME, async (job, token) => await this.process(job, token), {
      connection: redisOptions(queueEndpoint(config), { maxRetriesPerRequest: null, connectionName: 'm3ae-worker-bull' }),
      prefix: this.keys.bullPrefix,
      concurrency: 1,
      lockDuration,
      stalledInterval: Math.min(30_000, lockDuration),
      maxStalledCount: 2,
      name: this.id,
    });
    this.bull.on('error', (e) => this.log.warn({ err: e.message }, 'queue connection error (retrying)'));
    const beat = (): void => {
      this.beating = this.redis
        .set(this.keys.worker(this.id), JSON.stringify({ id: this.id, backend: this.computer.backend, pid: process.pid, at: Date.now() }), 'EX', config.worker.heartbeatSeconds * 3)
        .catch(() => undefined);
    };
    beat();
    this.heartbeat = setInterval(beat, config.worker.heartbeatSeconds * 1000);
    this.heartbeat.unref();
    this.log.info({ run: config.runId, backend: this.computer.backend, params: this.computer.paramCount }, 'worker ready');
  }

  private emit(event: WorkerJobEvent): void {
    this.options.onJob?.(event);
  }

  private async process(job: Job, token: string | undefined): Promise<{ outcome: JobOutcome }> {
    const t0 = performance.now();
    const timings = { fetchMs: 0, computeMs: 0, encodeMs: 0, uploadMs: 0, totalMs: 0 };
    let payload: MicroBatchJob;
    try {
      payload = parseMicroBatchJob(job.data);
    } catch (e) {
      // A malformed payload will not get better by retrying it.
      throw new UnrecoverableError(e instanceof PayloadError ? e.message : String(e));
    }
    const base = { jobId: String(job.id), step: payload.step, jobIndex: payload.jobIndex, copy: payload.copy, samples: payload.indices.length, paramBytes: 0, gradBytes: 0, paramCacheHit: false };
    if (payload.runId !== this.options.config.runId) throw new UnrecoverableError(`job of run ${payload.runId} on the queue of run ${this.options.config.runId}`);
    // Refused: the job goes back to the queue for another worker, and this one stops with the reason.
    const refuse = async (reason: Error): Promise<never> => {
      this.fatal = reason;
      this.log.error({ job: job.id }, reason.message);
      await job.moveToWait(token);
      this.emit({ ...base, outcome: 'refused', timings });
      void this.close();
      throw new WaitingError();
    };
    if (payload.manifestHash !== this.computer.manifestHash) {
      return await refuse(
        new ManifestMismatchError(
          `worker ${this.id} refuses job ${job.id}: it is for model manifest ${payload.manifestHash.slice(0, 16)}… but this worker holds ${this.computer.manifestHash.slice(0, 16)}…`,
        ),
      );
    }
    if (await this.isStale(payload)) {
      // Left over from an earlier coordinator or an already reduced step: nobody needs it.
      this.stats.stale++;
      this.emit({ ...base, outcome: 'stale', timings });
      return { outcome: 'stale' };
    }
    // Record or check the run's backend kind (a worker started before the coordinator has not yet).
    await this.pinBackend().catch(async (e: unknown) => await refuse(e instanceof Error ? e : new Error(String(e))));
    try {
      const tf = performance.now();
      const hit = this.paramsVersion?.version === payload.version && this.paramsVersion.checksum === paramsIdentity(payload.params);
      const params = hit ? (this.params as Float32Array) : await this.fetchParams(payload);
      timings.fetchMs = performance.now() - tf;

      const computed = await Promise.race([computeContribution(this.computer, payload, params), this.handBackSignal]);
      if (computed === 'hand-back') {
        await job.moveToWait(token);
        this.stats.handedBack++;
        this.emit({ ...base, outcome: 'handed-back', timings: { ...timings, totalMs: performance.now() - t0 } });
        this.log.info({ job: job.id, step: payload.step }, 'handed the job back (shutting down)');
        throw new WaitingError();
      }
      timings.computeMs = computed.computeMs;
      // Quantizing and summing a job's micro-batches (fx53), or encoding its one gradient.
      timings.encodeMs = computed.encodeMs;
      if (await this.isStale(payload)) {
        // The step was reduced without us (a backup won, or the run ended): do not leave a blob behind.
        this.stats.stale++;
        this.emit({ ...base, outcome: 'stale', timings: { ...timings, totalMs: performance.now() - t0 } });
        return { outcome: 'stale' };
      }

      const tu = performance.now();
      const nonce = randomBytes(4).toString('hex');
      // One blob per shard of the job's parameters: each coordinator shard reads only its own.
      const refs = await this.blobs.putShards(this.keys.grad(payload.step, payload.jobIndex, this.id, nonce), computed.bytes, computed.encoding, shardRanges(computed.elements, payload.params.length), {
        ttlSeconds: this.options.config.redis.gradTtlSeconds,
      });
      const gradBytes = refs.reduce((a, r) => a + r.bytes, 0);
      const paramBytes = hit ? 0 : payload.params.reduce((a, r) => a + r.bytes, 0);
      timings.uploadMs = performance.now() - tu;
      timings.totalMs = performance.now() - t0;
      const contribution: Contribution = {
        protocol: PROTOCOL_VERSION,
        runId: payload.runId,
        incarnation: payload.incarnation,
        step: payload.step,
        version: payload.version,
        jobIndex: payload.jobIndex,
        copy: payload.copy,
        workerId: this.id,
        manifestHash: this.computer.manifestHash,
        grads: refs,
        sums: computed.sums,
        counts: computed.counts,
        correct: computed.correct,
        ...(computed.tokens !== undefined ? { tokens: computed.tokens } : {}),
        timings,
        transfer: { readBytes: paramBytes, writtenBytes: gradBytes },
      };
      await this.redis.rpush(this.keys.results, JSON.stringify(contribution));
      this.stats.completed++;
      this.emit({ ...base, ...(computed.tokens !== undefined ? { tokens: computed.tokens } : {}), outcome: 'completed', timings, paramCacheHit: hit, paramBytes, gradBytes });
      return { outcome: 'completed' };
    } catch (e) {
      if (e instanceof WaitingError) throw e;
      this.stats.failed++;
      const message = e instanceof Error ? e.message : String(e);
      this.log.warn({ job: job.id, step: payload.step, err: message }, 'job failed');
      this.emit({ ...base, outcome: 'failed', timings: { ...timings, totalMs: performance.now() - t0 }, error: message });
      throw e;
    }
  }

  /** True when the job's coordinator is gone or has moved past its step. */
  private async isStale(payload: MicroBatchJob): Promise<boolean> {
    const [incarnation, stepText] = await this.redis.hmget(this.keys.coordinator, 'incarnation', 'step');
    return incarnation !== payload.incarnation || Number(stepText) > payload.step;
  }

  /** Fetches a version's parameters into the shared buffer the compute thread reads. */
  private async fetchParams(payload: MicroBatchJob): Promise<Float32Array> {
    const n = this.computer.paramCount;
    this.params ??= new Float32Array(new SharedArrayBuffer(n * 4));
    this.paramsVersion = undefined; // the buffer is being overwritten
    // Every shard's blob at its range, all in flight at once.
    await this.blobs.getShardsInto(payload.params, shardRanges(n, payload.params.length), new Uint8Array(this.params.buffer, this.params.byteOffset, this.params.byteLength));
    this.paramsVersion = { version: payload.version, checksum: paramsIdentity(payload.params) };
    this.stats.paramFetches++;
    return this.params;
  }

  /**
   * Stops taking jobs. The running job finishes if it can within `worker.shutdownGraceMs`; otherwise it
   * goes back to the queue for another worker. Resolves `done` (or rejects it after a refusal).
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const grace = setTimeout(() => this.handBack?.(), this.options.config.worker.shutdownGraceMs);
      try {
        await this.bull?.close();
      } finally {
        clearTimeout(grace);
      }
      // No heartbeat may land after the key is removed: stop them, let the last one finish, then remove it.
      if (this.heartbeat) clearInterval(this.heartbeat);
      await this.beating;
      await this.redis.del(this.keys.worker(this.id)).catch(() => undefined);
      await this.forgetEndedRun().catch(() => undefined);
      await this.disconnect();
      this.log.info({ stats: this.stats }, 'worker stopped');
      if (this.fatal) this.rejectDone(this.fatal);
      else this.resolveDone();
    })();
    return this.closing;
  }

  /**
   * A worker that outlives its run (the coordinator finished and cleared it from Redis) has been polling the queue:
   * BullMQ recreated its bookkeeping (`meta`, `stalled-check`). Remove it, so that nothing of an ended run remains.
   */
  private async forgetEndedRun(): Promise<void> {
    if ((await this.redis.exists(this.keys.coordinator)) !== 0) return;
    await new BlobStore([this.redis]).deletePattern(`${this.keys.bullPrefix}:*`);
  }

  private async disconnect(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    await this.computer.dispose().catch(() => undefined);
    await this.blobs.close();
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}
