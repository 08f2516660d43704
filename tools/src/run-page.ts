import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadTokenizer, openShardDataset, shardTokenizer, validationSamples } from '@m3ae/data';
import { chooseBackend, latestCheckpoint, resolveConfig } from '@m3ae/model';
import { connectRedis, jobsPerStep, pretrainTraining, queueEndpoint, redactConfig, RunKeys, type RunConfig } from '@m3ae/protocol';
import { ValidationGridRenderer } from '@m3ae/qualitative';
import { createRunPageHandler, readWorkerHeartbeats, RunHistory, type RunPageHandler } from '@m3ae/telemetry';

export interface RunPageWiringOptions {
  /** The `/status` document to include (`() => metrics.status()`). */
  status?: () => unknown;
  /** The run resumes from the latest checkpoint of `checkpoint.dir` (its step starts the page's count). */
  resume?: boolean;
  /** Validation images per reconstruction grid (a grid is rendered at every checkpoint); 0: no grids. @defaultValue 4 */
  gridImages?: number;
  /** Grids kept next to the checkpoints. @defaultValue 3 */
  keepGrids?: number;
  /** Milliseconds between reads of the workers' heartbeats from Redis. @defaultValue 2000 */
  heartbeatMs?: number;
  logger?: { warn(obj: object, msg?: string): void };
  /** Steps, samples and jobs per step when they are not `training`'s (a fine-tuning run's plan). */
  schedule?: { steps: number; globalBatch: number; microBatch: number; microBatchesPerJob: number };
}

/** Handlers for the coordinator's `events` (structurally part of its `CoordinatorEvents`). */
export type RunPageEvents = ReturnType<RunHistory['coordinatorEvents']>;

export interface RunPageWiring {
  history: RunHistory;
  /** Mount it on the coordinator's telemetry server: `startTelemetryServer({ …, routes: page.handler })`. */
  handler: RunPageHandler;
  /** Pass (or merge, `mergeEventHandlers`) into the coordinator's `events`; checkpoints also render a grid. */
  events: RunPageEvents;
  /** The reconstruction grid renderer (model runs with a dataset only). */
  grids: ValidationGridRenderer | undefined;
  /** Records how the run ended: its summary (`stopped` after SIGTERM) or the error it failed with. */
  ended(outcome: { stopped: boolean } | { error: unknown }): void;
  /** Resolves when the grids asked for so far are written. */
  idle(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Everything the coordinator's run page needs besides the server: a `RunHistory` fed by the coordinator's
 * events, worker heartbeats read from Redis, and — for a model run — a reconstruction grid of fixed
 * validation images rendered into the checkpoint directory after every checkpoint (on the coordinator's
 * thread, with the configured tfjs backend; failures are logged, never fatal to training).
 */
export async function prepareRunPage(config: RunConfig, options: RunPageWiringOptions = {}): Promise<RunPageWiring> {
  const log = options.logger;
  const history = new RunHistory();
  const startStep = options.resume ? ((await latestCheckpoint(config.checkpoint.dir))?.step ?? 0) : 0;
  // A fine-tuning run's steps and batch come from its plan (options.schedule); pre-training's from `training`.
  const schedule = options.schedule ?? pretrainTraining(config);
  history.setRun({ runId: config.runId, totalSteps: schedule.steps, startStep, globalBatch: schedule.globalBatch, jobsPerStep: jobsPerStep(schedule.globalBatch, schedule), config: redactConfig(config) });

  let grids: ValidationGridRenderer | undefined;
  const gridImages = options.gridImages ?? 4;
  if (config.compute.kind === 'model' && config.task.name === 'pretrain' && config.data.dir && gridImages > 0) {
    try {
      grids = await gridRenderer(config, gridImages, options.keepGrids ?? 3);
      const last = await grids.loadLatest();
      if (last) history.recordGrid(last.step);
    } catch (e) {
      log?.warn({ err: (e as Error).message }, 'run page: no reconstruction grids (validation images could not be prepared)');
    }
  }
  let pending: Promise<unknown> = Promise.resolve();
  const base = history.coordinatorEvents();
  const events: RunPageEvents = {
    ...base,
    onCheckpoint(detail) {
      base.onCheckpoint(detail);
      const renderer = grids;
      if (!renderer) return;
      pending = pending
        .then(() => renderer.renderCheckpoint(detail.path))
        .then(
          (g) => history.recordGrid(g.step),
          (e: unknown) => log?.warn({ err: (e as Error).message, checkpoint: detail.path }, 'run page: reconstruction grid failed'),
        );
    },
  };

  const redis = connectRedis(queueEndpoint(config), { connectionName: 'm3ae-run-page', maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined); // the coordinator reports Redis trouble; heartbeats just pause
  const pattern = new RunKeys(config.runId).workersPattern;
  const beats = setInterval(() => {
    readWorkerHeartbeats(redis, pattern).then(
      (b) => history.recordHeartbeats(b),
      () => undefined,
    );
  }, options.heartbeatMs ?? 2000);
  beats.unref();

  let closing: Promise<void> | undefined;
  return {
    history,
    handler: createRunPageHandler({ history, ...(options.status ? { status: options.status } : {}), latestGrid: () => grids?.latest() }),
    events,
    get grids() {
      return grids;
    },
    ended(outcome) {
      if ('error' in outcome) history.fail(outcome.error);
      else if (outcome.stopped) history.stop('stopped on request; a checkpoint was written');
      else history.finish();
    },
    async idle() {
      await pending;
    },
    close() {
      closing ??= (async () => {
        clearInterval(beats);
        await pending;
        redis.disconnect();
        grids?.dispose();
      })();
      return closing;
    },
  };
}

async function gridRenderer(config: RunConfig, count: number, keep: number): Promise<ValidationGridRenderer> {
  const dir = config.data.dir as string;
  const tokenizerPath = config.data.tokenizer ?? shardTokenizer(dir) ?? join(dir, 'tokenizer.json');
  if (!existsSync(tokenizerPath)) throw new Error(`tokenizer ${tokenizerPath} does not exist`);
  await chooseBackend({ backend: config.compute.backend });
  const model = resolveConfig({ preset: config.model.preset, ...config.model.overrides }, 'model');
  const [dataset, tokenizer] = await Promise.all([openShardDataset(dir), loadTokenizer(tokenizerPath)]);
  try {
    const samples = await validationSamples({ dataset, tokenizer, imageSize: model.imageSize, maxTextLength: model.maxTextLength, count });
    return new ValidationGridRenderer({ config: model, samples, dir: config.checkpoint.dir, keep, seed: config.seed });
  } finally {
    await dataset.close();
  }
}
