import { pino, type Logger } from 'pino';
import { EpochSampler } from '@m3ae/data';
import { latestCheckpoint, loadCheckpoint, saveCheckpoint } from '@m3ae/model';
import { addTotals, jobsPerStep, objectivesOf, samplesPerJob, PROTOCOL_VERSION, redactConfig, sha256OfFloats, type ObjectiveTotals, type ProcessTransfer, type RunConfig, type StepReport } from '@m3ae/protocol';
import { StopRequested, type GradientSource, type PlannedJob, type StepWork } from './gradient-source.js';
import { ShardedReduction, type ReductionStats, type ShardHosting, type StepReduction } from './reduction/sharded-reduction.js';
import type { TrainingSetup } from './setup/training-setup.js';

export interface TrainerEvents {
  /** State loaded (fresh or from a checkpoint), the source started: training starts at `startStep`. */
  onStart?(info: { startStep: number }): void;
  /** A step was reduced and applied. */
  onStep?(report: StepReport): void;
  onCheckpoint?(detail: { step: number; path: string; durationMs: number; bytes: number }): void;
}

export interface TrainerOptions {
  config: RunConfig;
  setup: TrainingSetup;
  source: GradientSource;
  /** Identifies this run of the trainer (jobs of another incarnation are refused by the workers' coordinator). */
  incarnation: string;
  /** Continue from the latest checkpoint of `checkpoint.dir` (starts fresh when there is none). */
  resume?: boolean | undefined;
  logger?: Logger | undefined;
  events?: TrainerEvents | undefined;
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

export class TrainerError extends Error {
  override readonly name = 'TrainerError';
}

/**
 * The training loop — the one place a step happens, for pre-training and fine-tuning, on a cluster or in one
 * process. Each step: draw the global batch from the sampler, cut it into micro-batch jobs with their exact item
 * counts, let the {@link GradientSource} compute and add every job's contribution in job order, clip and apply the
 * optimizer, let the setup act on the new parameters (validation, selection), write checkpoints. Every random
 * choice is a function of (seed, step, sample), so the parameters are the same whatever computed the gradients.
 */
export class Trainer {
  private readonly log: Logger;
  private readonly config: RunConfig;
  private readonly setup: TrainingSetup;
  private reduction: ShardedReduction | undefined;
  private sampler!: EpochSampler;
  private params!: Float32Array;
  private stopRequested = false;

  constructor(private readonly options: TrainerOptions) {
    this.config = options.config;
    this.setup = options.setup;
    this.log = options.logger ?? pino({ level: 'silent' });
  }

  /** Jobs of a full step (an epoch's last, smaller batch may have fewer). */
  get jobsPerFullStep(): number {
    return jobsPerStep(this.setup.schedule.globalBatch, this.setup.schedule);
  }

  /** Asks the run to stop: the current step is abandoned, a checkpoint of the last completed step written. */
  stop(): void {
    this.stopRequested = true;
  }

  /** Current parameters (a live view; copy it to keep it). */
  get parameters(): Float32Array {
    return this.params;
  }

  async run(): Promise<RunSummary> {
    try {
      return await this.train();
    } finally {
      await this.reduction?.close();
      this.reduction = undefined;
    }
  }

  private async train(): Promise<RunSummary> {
    const started = performance.now();
    const { setup, options } = this;
    let step = await this.initState();
    const startStep = step;
    await options.source.start({ startStep });
    options.events?.onStart?.({ startStep });
    this.log.info({ startStep, steps: setup.schedule.steps, jobsPerStep: this.jobsPerFullStep, params: setup.manifest.size, manifest: setup.manifest.hash.slice(0, 16) }, 'trainer ready');
    const every = this.config.checkpoint.every;
    const totalSteps = setup.schedule.steps;
    const totals = { rejected: 0, duplicates: 0, backups: 0, recoveries: 0, samples: 0 };
    let first: StepReport | undefined;
    let last: StepReport | undefined;
    let lastCheckpoint: string | undefined;
    let lastSavedStep = -1;
    let stopped = false;
    for (; step < totalSteps; step++) {
      let report: StepReport & { recoveries: number };
      try {
        report = await this.runStep(step);
      } catch (e) {
        // A stop abandons the step; a Redis that went away after the stop fails it another way: either keeps the
        // checkpoint of the last completed step.
        if (!(e instanceof StopRequested || this.stopRequested)) throw e;
        stopped = true;
        break;
      }
      if (setup.afterStep) {
        await this.requireReduction().sync();
        await setup.afterStep(step + 1, this.params, report);
      }
      if (every > 0 && (step + 1) % every === 0 && step + 1 < totalSteps) {
        const t = performance.now();
        lastCheckpoint = await this.checkpoint(step + 1);
        lastSavedStep = step + 1;
        report.phases.checkpointMs = performance.now() - t;
      }
      totals.samples += report.samples;
      totals.rejected += report.jobs.rejected;
      totals.duplicates += report.jobs.duplicates;
      totals.backups += report.jobs.backups;
      totals.recoveries += report.recoveries;
      first ??= report;
      last = report;
      this.logStep(report);
      options.events?.onStep?.(report);
      if (this.stopRequested) {
        step++;
        stopped = true;
        break;
      }
    }
    if (lastSavedStep !== step) lastCheckpoint = await this.checkpoint(step);
    await this.requireReduction().sync();
    const durationMs = performance.now() - started;
    return {
      runId: this.config.runId,
      startStep,
      steps: step - startStep,
      paramsSha256: sha256OfFloats(this.params),
      firstLosses: first?.losses,
      lastLosses: last?.losses,
      checkpoint: lastCheckpoint,
      durationMs,
      samplesPerSecond: totals.samples / (durationMs / 1000),
      stopped,
      rejected: totals.rejected,
      duplicates: totals.duplicates,
      backups: totals.backups,
      recoveries: totals.recoveries,
    };
  }

  /** Parameters, optimizer and sampler: fresh, or from the latest checkpoint. Returns the first step to run. */
  private async initState(): Promise<number> {
    const { config, setup } = this;
    this.sampler = new EpochSampler({ size: setup.datasetSize, seed: config.seed, globalBatchSize: setup.schedule.globalBatch, dropLast: setup.schedule.dropLast });
    const latest = this.options.resume ? await latestCheckpoint(config.checkpoint.dir) : undefined;
    if (!latest) {
      const initial = setup.initialParams();
      if (initial.length !== setup.manifest.size) throw new TrainerError(`initial parameters have ${initial.length} values; the manifest has ${setup.manifest.size}`);
      await this.startReduction(initial);
      return 0;
    }
    const loaded = await loadCheckpoint(latest.path, setup.manifest);
    const meta = loaded.metadata;
    if (meta['dataset_hash'] !== undefined && meta['dataset_hash'] !== setup.datasetHash) {
      throw new TrainerError(`checkpoint ${latest.path} was trained on dataset ${meta['dataset_hash']}; this run's dataset is ${setup.datasetHash}`);
    }
    if (meta['sampler']) this.sampler.restore(JSON.parse(meta['sampler']) as { step: number });
    setup.restore?.(meta);
    const reduction = await this.startReduction(loaded.params);
    if (loaded.optimizer) await reduction.setOptimizerState(loaded.optimizer);
    this.log.info({ checkpoint: latest.path, step: loaded.step }, 'resuming from checkpoint');
    return loaded.step;
  }

  /** The sharded reduction over `initial` (`training.shards` shards): from now on it holds the parameters. */
  private async startReduction(initial: Float32Array): Promise<ShardedReduction> {
    const { config } = this;
    const hosting = config.coordinator.reducers === 'processes' ? ('processes' as const) : undefined;
    const reduction = await ShardedReduction.create({ spec: this.setup.optimizer, shards: config.training.shards, initial, blobs: this.options.source.blobTransport, hosting });
    this.reduction = reduction;
    this.params = reduction.params;
    return reduction;
  }

  private async checkpoint(step: number): Promise<string> {
    const t = performance.now();
    const reduction = this.requireReduction();
    await reduction.sync();
    const opt = reduction.getOptimizerState();
    this.sampler.restore({ step });
    const saved = await saveCheckpoint(
      this.config.checkpoint.dir,
      {
        step,
        manifest: this.setup.manifest,
        params: this.params,
        ...(this.setup.fixedParams ? { fixedParams: this.setup.fixedParams } : {}),
        optimizer: opt,
        config: this.setup.modelConfig,
        metadata: {
          run_id: this.config.runId,
          sampler: JSON.stringify(this.sampler.state()),
          dataset_hash: this.setup.datasetHash,
          run_config: JSON.stringify(redactConfig(this.config)),
          optimizer: 'adamw',
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

  private requireReduction(): ShardedReduction {
    if (!this.reduction) throw new TrainerError('the trainer is not running');
    return this.reduction;
  }

  /** One line per step, once the step is applied and its checkpoint (if one was due) written. */
  private logStep(r: StepReport): void {
    this.log.info(
      {
        step: r.step,
        of: this.setup.schedule.steps,
        loss: Number(r.losses.total.toFixed(5)),
        lr: r.learningRate,
        gradNorm: Number(r.gradientNorm.toFixed(4)),
        samplesPerSecond: Number(((1000 * r.samples) / r.durationMs).toFixed(2)),
        ms: Math.round(r.durationMs),
        rejected: r.jobs.rejected,
        backups: r.jobs.backups,
      },
      'step done',
    );
  }

  /**
   * The step's jobs: the sampler's global batch cut into slices of `microBatch × microBatchesPerJob` samples, with
   * exact counts; a job of several micro-batches says how big each is (`microBatch`).
   */
  async planStep(step: number): Promise<StepWork> {
    const { config, setup } = this;
    const batch = this.sampler.batchAt(step);
    const m = samplesPerJob(setup.schedule);
    const several = setup.schedule.microBatchesPerJob > 1 ? { microBatch: setup.schedule.microBatch } : {};
    // The step's samples (fewer than the global batch at an epoch's end when the schedule keeps the last batch).
    const G = batch.indices.length;
    const jobCount = jobsPerStep(G, setup.schedule);
    const slices = Array.from({ length: jobCount }, (_, k) => ({
      indices: Array.from(batch.indices.subarray(k * m, (k + 1) * m)),
      positions: Array.from(batch.positions.subarray(k * m, (k + 1) * m)),
    }));
    const expected = await Promise.all(slices.map((s) => setup.counts({ step, seed: config.seed, globalBatchSize: G, ...s })));
    const normalizers: ObjectiveTotals = {};
    for (const c of expected) addTotals(normalizers, c);
    const jobs = slices.map((s, k): PlannedJob => ({
      protocol: PROTOCOL_VERSION,
      runId: config.runId,
      incarnation: this.options.incarnation,
      step,
      version: step,
      jobIndex: k,
      jobCount,
      seed: config.seed,
      globalBatchSize: G,
      indices: s.indices,
      positions: s.positions,
      normalizers,
      manifestHash: setup.manifest.hash,
      datasetHash: setup.datasetHash,
      gradEncoding: config.training.gradEncoding,
      ...several,
    }));
    return { step, version: step, jobs, expected, normalizers, samples: G };
  }

  private async runStep(step: number): Promise<StepReport & { recoveries: number }> {
    const t0 = performance.now();
    const work = await this.planStep(step);
    const tPlanned = performance.now();
    const reduction = this.requireReduction();
    const reducer = await reduction.begin(work.jobs.length);
    const stats = await this.options.source.gather(work, reducer, () => this.stopRequested);
    const tReduced = performance.now();
    const { learningRate, gradientNorm } = await reduction.update(step, reducer.stats);
    const tOptimized = performance.now();
    await this.options.source.finishStep(work);
    const { losses, accuracy } = stepLosses(this.setup.objectiveWeights, work.normalizers, reducer);
    const report = {
      step,
      losses,
      accuracy,
      learningRate,
      gradientNorm,
      samples: work.samples,
      ...(reducer.tokens !== undefined ? { tokens: reducer.tokens } : {}),
      durationMs: tOptimized - t0,
      phases: { ...stats.phases, enqueueMs: stats.phases.enqueueMs + (tPlanned - t0), optimizerMs: tOptimized - tReduced, checkpointMs: 0 },
      worker: stats.worker,
      bytes: stats.bytes,
      processes: [...reductionTransfers(reduction.hosting, reducer.stats), ...stats.workerTransfers],
      reduction: { fetchMs: reducer.stats.fetchMs, addMs: reducer.stats.addMs, applyMs: reducer.stats.applyMs },
      jobs: { count: work.jobs.length, ...stats.jobs },
      workers: [...stats.workers].sort(),
      recoveries: stats.recoveries,
    };
    return report;
  }
}

/**
 * Who moved the reduction's bytes: the coordinator's process (its shard threads), or — with reducer processes — each
 * reducer, the coordinator moving no gradient byte through Redis.
 */
function reductionTransfers(hosting: ShardHosting, stats: ReductionStats): ProcessTransfer[] {
  if (hosting !== 'processes') return [{ id: 'coordinator', role: 'coordinator', readBytes: stats.readBytes, writtenBytes: stats.writtenBytes, jobs: 0 }];
  return [{ id: 'coordinator', role: 'coordinator', readBytes: 0, writtenBytes: 0, jobs: 0 }, ...stats.shards.map((x, s): ProcessTransfer => ({ id: `reducer-${s}`, role: 'reducer', readBytes: x.readBytes, writtenBytes: x.writtenBytes, jobs: 0 }))];
}

/** The step's normalised losses per trained objective, their weighted total, and accuracies (not for MIM, a regression). */
export function stepLosses(weights: ObjectiveTotals, normalizers: ObjectiveTotals, r: Pick<StepReduction, 'sums' | 'correct'>): Pick<StepReport, 'losses' | 'accuracy'> {
  const losses: StepReport['losses'] = { total: 0 };
  const accuracy: ObjectiveTotals = {};
  for (const o of objectivesOf(normalizers)) {
    const weight = weights[o] ?? 0;
    const n = normalizers[o] ?? 0;
    if (weight > 0 && n > 0) {
      const loss = (r.sums[o] ?? 0) / n;
      losses[o] = loss;
      losses.total += weight * loss;
      if (o !== 'mim') accuracy[o] = (r.correct[o] ?? 0) / n;
    }
  }
  return { losses, accuracy };
}
