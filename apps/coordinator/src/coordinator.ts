import { randomUUID } from 'node:crypto';
import { Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { pino, type Logger } from 'pino';
import { EpochSampler } from '@m3ae/data';
import { latestCheckpoint, loadCheckpoint, saveCheckpoint } from '@m3ae/model';
import {
  BlobError,
  BlobStore,
  blobEndpoints,
  connectRedis,
  JOB_QUEUE_NAME,
  addTotals,
  objectivesOf,
  parseContribution,
  sameTotals,
  PROTOCOL_VERSION,
  queueEndpoint,
  waitForRedis,
  redactConfig,
  redisOptions,
  RunKeys,
  sha256OfFloats,
  type BlobRef,
  type Contribution,
  type MicroBatchJob,
  type ObjectiveTotals,
  type RunConfig,
} from '@m3ae/protocol';
import type { FlatOptimizer } from './optimizer.js';
import { assertNoEviction } from './redis-policy.js';
import { OrderedReducer } from './step-reducer.js';
import type { TrainingSetup } from './training-setup.js';

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
  | 'non-finite-loss'
  | 'missing'
  | 'truncated'
  | 'checksum'
  | 'layout'
  | 'non-finite'
  | 'length'
  | 'unreadable';

/** Milliseconds of one step by phase (the breakdown of `m3ae bench training`). */
export interface StepPhases {
  /** Encode and upload the parameters of version v. */
  publishMs: number;
  /** Build and enqueue the step's jobs (includes computing the normalizers). */
  enqueueMs: number;
  /** Waiting for results with nothing to do. */
  idleMs: number;
  /** Download, verify and add gradients (overlaps the wait). */
  reduceMs: number;
  /** Norm, clipping and the optimizer update. */
  optimizerMs: number;
  /** Checkpoint written after this step, if any. */
  checkpointMs: number;
}

export interface StepReport {
  step: number;
  /** Normalised global-batch losses per trained objective and the weighted total. */
  losses: { total: number } & ObjectiveTotals;
  /** Correct predictions / items, per objective that predicts (mlm, itm, a task's). */
  accuracy: ObjectiveTotals;
  learningRate: number;
  gradientNorm: number;
  samples: number;
  /** Real (non-padding) text tokens of the step, when the workers count them (not the synthetic workload). */
  tokens?: number;
  durationMs: number;
  phases: StepPhases;
  /** Mean milliseconds the accepted contributions reported (parameter fetch, compute, encode, upload). */
  worker: { fetchMs: number; computeMs: number; encodeMs: number; uploadMs: number; totalMs: number };
  /** Bytes moved through Redis for this step by the coordinator (published parameters, gradients read). */
  bytes: { params: number; grads: number };
  jobs: { count: number; enqueued: number; rejected: number; duplicates: number; backups: number; retried: number };
  workers: string[];
}

export interface CoordinatorEvents {
  /** Connected, state loaded (fresh or from a checkpoint), Redis cleared: training starts at `startStep`. */
  onStart?(info: { startStep: number; queue: Queue }): void;
  /** A step was reduced and applied. */
  onStep?(report: StepReport): void;
  onReject?(reason: RejectReason, detail: { step: number; jobIndex?: number; workerId?: string; message: string }): void;
  onDuplicate?(detail: { step: number; jobIndex: number; workerId: string }): void;
  onEnqueue?(detail: { step: number; jobIndex: number; copy: number; kind: 'original' | 'retry' | 'backup'; job: MicroBatchJob }): void;
  onBackupWon?(detail: { step: number; jobIndex: number }): void;
  onCheckpoint?(detail: { step: number; path: string; durationMs: number; bytes: number }): void;
  onRecover?(detail: { step: number; reason: string }): void;
  /** BullMQ found a job whose lock expired (its worker died or stalled) and put it back: it runs again. */
  onRedeliver?(detail: { jobId: string }): void;
}

export interface CoordinatorOptions {
  config: RunConfig;
  setup: TrainingSetup;
  /** Continue from the latest checkpoint of `checkpoint.dir` (starts fresh when there is none). */
  resume?: boolean;
  logger?: Logger;
  events?: CoordinatorEvents;
}

export interface RunSummary {
  runId: string;
  startStep: number;
  steps: number;
  paramsSha256: string;
  lastLosses: StepReport['losses'] | undefined;
  firstLosses: StepReport['losses'] | undefined;
  checkpoint: string | undefined;
  durationMs: number;
  samplesPerSecond: number;
  /** True when stopped early (SIGTERM) after writing a checkpoint. */
  stopped: boolean;
  rejected: number;
  duplicates: number;
  backups: number;
  recoveries: number;
}

export class CoordinatorError extends Error {
  override readonly name = 'CoordinatorError';
}

class StopRequested extends Error {}

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
  paramsRef: BlobRef;
  jobs: Omit<MicroBatchJob, 'copy'>[];
  jobCount: number;
  expected: ObjectiveTotals[];
  copies: JobCopy[][];
  reducer: OrderedReducer;
  acceptedTimings: Contribution['timings'][];
  workers: Set<string>;
  tally: { enqueued: number; rejected: number; duplicates: number; backups: number; retried: number };
  bytes: { params: number; grads: number };
  backupsOf: Set<number>;
}

/**
 * The coordinator of one run: owns parameters, optimizer state, the sampler and checkpoints. Each step it
 * publishes parameter version v, enqueues a fixed number of micro-batch jobs, counts each micro-batch's first
 * valid contribution (verified: run, incarnation, step, version, manifest, counts, length, checksum, finite
 * values), sums them in micro-batch order, clips, applies the optimizer and moves to v + 1. Stragglers get
 * backup copies; lost or failed jobs are enqueued again; a Redis that lost everything is repopulated and the
 * step's missing micro-batches are redone.
 */
export class Coordinator {
  readonly incarnation = randomUUID();
  readonly keys: RunKeys;
  private readonly log: Logger;
  private readonly config: RunConfig;
  private readonly setup: TrainingSetup;
  private redis!: Redis;
  private blocking!: Redis;
  private blobs!: BlobStore;
  private queue!: Queue;
  private queueEvents: QueueEvents | undefined;
  private optimizer!: FlatOptimizer;
  private sampler!: EpochSampler;
  private params!: Float32Array;
  private stopRequested = false;
  private recoveries = 0;
  private totals = { rejected: 0, duplicates: 0, backups: 0 };

  constructor(private readonly options: CoordinatorOptions) {
    this.config = options.config;
    this.setup = options.setup;
    this.keys = new RunKeys(this.config.runId);
    const base = options.logger ?? pino({ level: 'silent' });
    this.log = base.child({ ...('run' in base.bindings() ? {} : { run: this.config.runId }), incarnation: this.incarnation.slice(0, 8) });
  }

  /** Jobs of a full step (an epoch's last, smaller batch may have fewer). */
  private get jobsPerFullStep(): number {
    return Math.ceil(this.setup.schedule.globalBatch / this.setup.schedule.microBatch);
  }

  /** Asks the run to stop: the current step is abandoned, a checkpoint written, Redis cleaned. */
  stop(): void {
    this.stopRequested = true;
  }

  /** Current parameters (a live view; copy it to keep it). */
  get parameters(): Float32Array {
    return this.params;
  }

  async run(): Promise<RunSummary> {
    const started = performance.now();
    await this.connect();
    let step = 0;
    let reports: StepReport[] = [];
    let lastCheckpoint: string | undefined;
    let stopped = false;
    let lastSavedStep = -1;
    let samples = 0;
    try {
      step = await this.initState();
      const startStep = step;
      await this.clearRun();
      await this.writeSentinel(step);
      this.options.events?.onStart?.({ startStep, queue: this.queue });
      this.log.info({ startStep, steps: this.setup.schedule.steps, jobsPerStep: this.jobsPerFullStep, params: this.setup.manifest.size, manifest: this.setup.manifest.hash.slice(0, 16) }, 'coordinator ready');
      const every = this.config.checkpoint.every;
      const { steps: totalSteps } = this.setup.schedule;
      for (; step < totalSteps; step++) {
        let report: StepReport;
        try {
          report = await this.runStep(step);
        } catch (e) {
          if (e instanceof StopRequested || this.stopRequested) {
            stopped = true;
            break;
          }
          throw e;
        }
        await this.setup.afterStep?.(step + 1, this.params, report);
        if (every > 0 && (step + 1) % every === 0 && step + 1 < totalSteps) {
          const t = performance.now();
          lastCheckpoint = await this.checkpoint(step + 1);
          lastSavedStep = step + 1;
          report.phases.checkpointMs = performance.now() - t;
        }
        samples += report.samples;
        reports.push(report);
        if (reports.length > 2) reports = [reports[0] as StepReport, report];
        this.options.events?.onStep?.(report);
        if (this.stopRequested) {
          step++;
          stopped = true;
          break;
        }
      }
      if (lastSavedStep !== step) lastCheckpoint = await this.checkpoint(step);
      const steps = step - startStep;
      const durationMs = performance.now() - started;
      return {
        runId: this.config.runId,
        startStep,
        steps,
        paramsSha256: sha256OfFloats(this.params),
        firstLosses: reports[0]?.losses,
        lastLosses: reports[reports.length - 1]?.losses,
        checkpoint: lastCheckpoint,
        durationMs,
        samplesPerSecond: samples / (durationMs / 1000),
        stopped,
        ...this.totals,
        recoveries: this.recoveries,
      };
    } finally {
      // Bounded: commands wait across reconnects, and a Redis that is gone for good must not keep us here.
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
  }

  private async connect(): Promise<void> {
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
      defaultJobOptions: { removeOnComplete: true, removeOnFail: true, attempts: 3, backoff: { type: 'fixed', delay: 250 } },
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
    await this.setup.close?.();
  }

  /** Parameters, optimizer and sampler: fresh, or from the latest checkpoint. Returns the first step to run. */
  private async initState(): Promise<number> {
    const { config, setup } = this;
    this.optimizer = setup.createOptimizer();
    this.sampler = new EpochSampler({ size: setup.datasetSize, seed: config.seed, globalBatchSize: setup.schedule.globalBatch, dropLast: setup.schedule.dropLast });
    const latest = this.options.resume ? await latestCheckpoint(config.checkpoint.dir) : undefined;
    if (!latest) {
      this.params = setup.initialParams();
      if (this.params.length !== setup.manifest.size) throw new CoordinatorError(`initial parameters have ${this.params.length} values; the manifest has ${setup.manifest.size}`);
      return 0;
    }
    const loaded = await loadCheckpoint(latest.path, setup.manifest);
    const meta = loaded.metadata;
    if (meta['dataset_hash'] !== undefined && meta['dataset_hash'] !== setup.datasetHash) {
      throw new CoordinatorError(`checkpoint ${latest.path} was trained on dataset ${meta['dataset_hash']}; this run's dataset is ${setup.datasetHash}`);
    }
    if (meta['sampler']) this.sampler.restore(JSON.parse(meta['sampler']) as { step: number });
    setup.restore?.(meta);
    this.params = loaded.params;
    if (loaded.optimizer) this.optimizer.setState({ step: loaded.optimizer.step, m: loaded.optimizer.m, v: loaded.optimizer.v });
    this.log.info({ checkpoint: latest.path, step: loaded.step }, 'resuming from checkpoint');
    return loaded.step;
  }

  private async checkpoint(step: number): Promise<string> {
    const t = performance.now();
    const opt = this.optimizer.getState();
    this.sampler.restore({ step });
    const saved = await saveCheckpoint(
      this.config.checkpoint.dir,
      {
        step,
        manifest: this.setup.manifest,
        params: this.params,
        ...(this.setup.fixedParams ? { fixedParams: this.setup.fixedParams } : {}),
        ...(opt ? { optimizer: opt } : {}),
        config: this.setup.modelConfig,
        metadata: {
          run_id: this.config.runId,
          sampler: JSON.stringify(this.sampler.state()),
          dataset_hash: this.setup.datasetHash,
          run_config: JSON.stringify(redactConfig(this.config)),
          optimizer: this.optimizer.name,
          ...this.setup.checkpointMetadata?.(),
        },
      },
      { keepLast: this.config.checkpoint.keep },
    );
    const durationMs = performance.now() - t;
    this.log.info({ step, path: saved.path, ms: Math.round(durationMs) }, 'checkpoint written');
    this.options.events?.onCheckpoint?.({ step, path: saved.path, durationMs, bytes: saved.bytes });
    return saved.path;
  }

  /** Removes everything of this run from Redis (what an earlier incarnation left, or this one at the end). */
  private async clearRun(): Promise<void> {
    await new BlobStore([this.redis]).deletePattern(this.keys.allPattern);
    if (this.blobs.stores.some((s) => s !== this.redis)) await this.blobs.deletePattern(this.keys.allPattern);
  }

  private async writeSentinel(step: number): Promise<void> {
    await this.redis.hset(this.keys.coordinator, {
      incarnation: this.incarnation,
      manifestHash: this.setup.manifest.hash,
      step: String(step),
      jobsPerStep: String(this.jobsPerFullStep),
      startedAt: new Date().toISOString(),
    });
  }

  private async publishParams(version: number): Promise<BlobRef> {
    return await this.blobs.putTensor(this.keys.params(version), this.params, 'f32');
  }

  private async enqueue(state: StepState, jobIndex: number, kind: JobCopy['kind']): Promise<boolean> {
    const copies = state.copies[jobIndex] as JobCopy[];
    if (copies.length >= this.config.coordinator.maxCopies) return false;
    const copy = copies.length;
    const id = `s${state.step}-j${jobIndex}-c${copy}`;
    const data: MicroBatchJob = { ...(state.jobs[jobIndex] as Omit<MicroBatchJob, 'copy'>), copy, params: state.paramsRef };
    await this.queue.add('microbatch', data, { jobId: id, ...(kind === 'backup' ? { lifo: true } : {}) });
    copies.push({ id, copy, kind, enqueuedAt: Date.now(), goneChecks: 0 });
    state.tally.enqueued++;
    if (kind === 'backup') state.tally.backups++;
    if (kind === 'retry') state.tally.retried++;
    this.options.events?.onEnqueue?.({ step: state.step, jobIndex, copy, kind, job: data });
    return true;
  }

  private async runStep(step: number): Promise<StepReport> {
    const t0 = performance.now();
    const version = step;
    const { config, setup } = this;
    await this.redis.hset(this.keys.coordinator, 'step', String(step));
    const paramsRef = await this.publishParams(version);
    const tPublished = performance.now();

    const batch = this.sampler.batchAt(step);
    const m = setup.schedule.microBatch;
    // The step's samples (fewer than the global batch at an epoch's end when the schedule keeps the last batch).
    const G = batch.indices.length;
    const jobCount = Math.ceil(G / m);
    const slices = Array.from({ length: jobCount }, (_, k) => ({
      indices: Array.from(batch.indices.subarray(k * m, (k + 1) * m)),
      positions: Array.from(batch.positions.subarray(k * m, (k + 1) * m)),
    }));
    const expected = await Promise.all(slices.map((s) => setup.counts({ step, seed: config.seed, globalBatchSize: G, ...s })));
    const normalizers: ObjectiveTotals = {};
    for (const c of expected) addTotals(normalizers, c);
    const state: StepState = {
      jobCount,
      step,
      version,
      paramsRef,
      expected,
      jobs: slices.map((s, k) => ({
        protocol: PROTOCOL_VERSION,
        runId: config.runId,
        incarnation: this.incarnation,
        step,
        version,
        jobIndex: k,
        jobCount,
        seed: config.seed,
        globalBatchSize: G,
        indices: s.indices,
        positions: s.positions,
        normalizers,
        manifestHash: setup.manifest.hash,
        datasetHash: setup.datasetHash,
        params: paramsRef,
        gradEncoding: config.training.gradEncoding,
      })),
      copies: slices.map(() => []),
      reducer: new OrderedReducer(jobCount, setup.manifest.size),
      acceptedTimings: [],
      workers: new Set(),
      tally: { enqueued: 0, rejected: 0, duplicates: 0, backups: 0, retried: 0 },
      bytes: { params: paramsRef.bytes, grads: 0 },
      backupsOf: new Set(),
    };
    for (let k = 0; k < jobCount; k++) await this.enqueue(state, k, 'original');
    const tEnqueued = performance.now();

    let idleMs = 0;
    let lastCheck = performance.now();
    const interval = this.config.coordinator.checkIntervalMs;
    while (!state.reducer.complete) {
      if (this.stopRequested) throw new StopRequested();
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

    // Everything of this step is counted: the remaining copies are obsolete.
    await this.queue.drain(true);
    const { learningRate: lr, gradientNorm } = this.optimizer.update(this.params, state.reducer.sum, step);
    const tOptimized = performance.now();
    await this.blobs.delete(paramsRef);

    const r = state.reducer;
    const losses: StepReport['losses'] = { total: 0 };
    const accuracy: ObjectiveTotals = {};
    for (const o of objectivesOf(normalizers)) {
      const weight = setup.objectiveWeights[o] ?? 0;
      const n = normalizers[o] ?? 0;
      if (weight > 0 && n > 0) {
        const loss = (r.sums[o] ?? 0) / n;
        losses[o] = loss;
        losses.total += weight * loss;
        // Masked image modelling is a regression: no accuracy.
        if (o !== 'mim') accuracy[o] = (r.correct[o] ?? 0) / n;
      }
    }
    const mean = (f: (t: Contribution['timings']) => number): number => state.acceptedTimings.reduce((a, t) => a + f(t), 0) / Math.max(1, state.acceptedTimings.length);
    const report: StepReport = {
      step,
      losses,
      accuracy,
      learningRate: lr,
      gradientNorm,
      samples: G,
      ...(r.tokens !== undefined ? { tokens: r.tokens } : {}),
      durationMs: tOptimized - t0,
      phases: {
        publishMs: tPublished - t0,
        enqueueMs: tEnqueued - tPublished,
        idleMs: Math.max(0, idleMs),
        reduceMs: tReduced - tEnqueued - idleMs,
        optimizerMs: tOptimized - tReduced,
        checkpointMs: 0,
      },
      worker: {
        fetchMs: mean((t) => t.fetchMs),
        computeMs: mean((t) => t.computeMs),
        encodeMs: mean((t) => t.encodeMs),
        uploadMs: mean((t) => t.uploadMs),
        totalMs: mean((t) => t.totalMs),
      },
      bytes: state.bytes,
      jobs: { count: state.jobCount, ...state.tally },
      workers: [...state.workers].sort(),
    };
    this.log.info(
      { step, loss: Number(losses.total.toFixed(5)), lr, gradNorm: Number(gradientNorm.toFixed(4)), ms: Math.round(report.durationMs), rejected: state.tally.rejected, backups: state.tally.backups },
      'step done',
    );
    return report;
  }

  private reject(state: StepState, reason: RejectReason, message: string, c?: { jobIndex: number; workerId: string }): void {
    state.tally.rejected++;
    this.totals.rejected++;
    this.log.warn({ step: state.step, job: c?.jobIndex, worker: c?.workerId, reason }, `rejected a contribution: ${message}`);
    this.options.events?.onReject?.(reason, { step: state.step, ...(c ? { jobIndex: c.jobIndex, workerId: c.workerId } : {}), message });
  }

  /** Deletes a contribution's gradient blob if it lies in this run's blob space (never trust a foreign key). */
  private async discard(ref: unknown): Promise<void> {
    const r = ref as Partial<BlobRef> | undefined;
    if (r && typeof r.key === 'string' && typeof r.chunks === 'number' && this.keys.ownsBlob(r.key) && r.chunks >= 0 && r.chunks < 1_000_000) {
      await this.blobs.delete({ key: r.key, chunks: r.chunks }).catch(() => undefined);
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
      await this.discard((data as { grad?: unknown } | null)?.grad);
      return;
    }
    const who = { jobIndex: c.jobIndex, workerId: c.workerId };
    try {
      if (c.runId !== this.config.runId) return this.reject(state, 'other-run', `run ${c.runId}`, who);
      if (c.incarnation !== this.incarnation) return this.reject(state, 'stale-incarnation', `incarnation ${c.incarnation}`, who);
      if (c.step !== state.step) return this.reject(state, 'stale-step', `step ${c.step} while reducing step ${state.step}`, who);
      if (c.version !== state.version) return this.reject(state, 'stale-version', `parameter version ${c.version}; expected ${state.version}`, who);
      if (c.jobIndex >= state.jobCount) return this.reject(state, 'bad-job-index', `job index ${c.jobIndex} of ${state.jobCount}`, who);
      if (state.reducer.has(c.jobIndex)) {
        state.tally.duplicates++;
        this.totals.duplicates++;
        this.options.events?.onDuplicate?.({ step: state.step, jobIndex: c.jobIndex, workerId: c.workerId });
        return;
      }
      const bad = (reason: RejectReason, message: string): Promise<void> => this.rejectAndRecompute(state, reason, message, who);
      if (c.manifestHash !== this.setup.manifest.hash) return await bad('manifest', `model manifest ${c.manifestHash.slice(0, 16)}…; expected ${this.setup.manifest.hash.slice(0, 16)}…`);
      const want = state.expected[c.jobIndex] as ObjectiveTotals;
      if (!sameTotals(c.counts, want)) {
        return await bad('counts', `counts ${JSON.stringify(c.counts)}; expected ${JSON.stringify(want)} (different data or masking?)`);
      }
      if (![...Object.values(c.sums), ...Object.values(c.correct)].every(Number.isFinite)) return await bad('non-finite-loss', `loss sums ${JSON.stringify(c.sums)}`);
      let bytes: Uint8Array;
      try {
        bytes = await this.blobs.getEncoded(c.grad, { expectElements: this.setup.manifest.size, requireFinite: true });
      } catch (e) {
        if (e instanceof BlobError) return await bad(e.fault, e.message);
        // A read that failed for another reason (a connection dropped mid-transfer): compute it again.
        return await bad('unreadable', e instanceof Error ? e.message : String(e));
      }
      state.bytes.grads += bytes.byteLength;
      const copy = state.copies[c.jobIndex]?.[c.copy];
      if (copy?.kind === 'backup') this.options.events?.onBackupWon?.({ step: state.step, jobIndex: c.jobIndex });
      state.reducer.add(c.jobIndex, { bytes, encoding: c.grad.encoding, sums: c.sums, counts: c.counts, correct: c.correct, tokens: c.tokens });
      state.acceptedTimings.push(c.timings);
      state.workers.add(c.workerId);
    } finally {
      await this.discard(c.grad);
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
      if (s === 'waiting' || s === 'active' || s === 'delayed' || s === 'prioritized' || s === 'waiting-children') n++;
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
    const startedAt = new Map<string, number>();
    if (median !== undefined && activeIds.length > 0) {
      const jobs = await Promise.all(activeIds.map(async (id) => this.queue.getJob(id)));
      for (const j of jobs) if (j?.id && j.processedOn) startedAt.set(j.id, j.processedOn);
    }
    for (const k of missing) {
      let live = 0;
      let oldestActiveStart: number | undefined;
      copies.forEach(({ k: kk, c }, i) => {
        if (kk !== k) return;
        const s = states[i];
        if (s === 'waiting' || s === 'delayed' || s === 'prioritized' || s === 'active' || s === 'waiting-children') {
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
        this.log.warn({ step: state.step, job: k }, 'micro-batch lost from the queue; enqueueing it again');
        if (!(await this.enqueue(state, k, 'retry'))) throw new CoordinatorError(`step ${state.step}: micro-batch ${k} was lost ${this.config.coordinator.maxCopies} times`);
        continue;
      }
      if (median !== undefined && oldestActiveStart !== undefined && live === 1 && !state.backupsOf.has(k)) {
        const running = now - oldestActiveStart;
        if (running > Math.max(this.config.coordinator.backupMinMs, this.config.coordinator.backupFactor * median)) {
          this.log.info({ step: state.step, job: k, runningMs: running, medianMs: Math.round(median) }, 'straggler: enqueueing a backup copy');
          state.backupsOf.add(k);
          if (await this.enqueue(state, k, 'backup')) this.totals.backups++;
        }
      }
    }
  }

  /** Redis lost our keys: write them again, republish version v and recompute what is not yet counted. */
  private async recover(state: StepState, reason: string): Promise<void> {
    this.recoveries++;
    this.log.warn({ step: state.step, missing: state.reducer.missing().length }, `${reason}; redoing the step's missing micro-batches`);
    this.options.events?.onRecover?.({ step: state.step, reason });
    await assertNoEviction(this.redis);
    await this.writeSentinel(state.step);
    state.paramsRef = await this.publishParams(state.version);
    for (const k of state.reducer.missing()) {
      for (const c of state.copies[k] as JobCopy[]) c.goneChecks = 0;
      if (!(await this.enqueue(state, k, 'retry'))) throw new CoordinatorError(`step ${state.step}: micro-batch ${k} exceeded ${this.config.coordinator.maxCopies} copies while recovering`);
    }
  }
}
