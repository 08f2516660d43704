import type { Command } from 'commander';
import { Coordinator, type CoordinatorEvents } from '@m3ae/coordinator';
import { createSetup, type EvaluationEntry, type RunSummary, type StepSchedule } from '@m3ae/training';
import { connectRedis, jobsPerStep, loadRunConfig, queueEndpoint, redactConfig, type RunConfig } from '@m3ae/protocol';
import { coordinatorEvents, CoordinatorMetrics, createLogger, mergeEventHandlers, metricsPortFromEnv, startTelemetryServer, type Logger } from '@m3ae/telemetry';
import { prepareRunPage } from '../run-page.js';
import { BACKEND_HELP } from '../flags.js';
import { signalExitCode } from '../signals.js';

/** Flags shared by `m3ae coordinator`, `m3ae worker` and `m3ae train`, mapped to run-configuration fields. */
export interface RunFlags {
  config?: string;
  runId?: string;
  redisUrl?: string;
  redisTimeout?: string;
  steps?: string;
  seed?: string;
  preset?: string;
  globalBatch?: string;
  microBatch?: string;
  microBatchesPerJob?: string;
  shards?: string;
  reducers?: string;
  checkpointDir?: string;
  data?: string;
  tokenizer?: string;
  evalEvery?: string;
  evalData?: string;
  evalSamples?: string;
  backend?: string;
}

const FLAG_FIELDS: readonly [keyof RunFlags, string, string, 'int' | 'string'][] = [
  ['runId', 'runId', '--run-id', 'string'],
  ['redisUrl', 'redis.url', '--redis-url', 'string'],
  ['redisTimeout', 'redis.connectTimeoutSeconds', '--redis-timeout', 'int'],
  ['steps', 'training.steps', '--steps', 'int'],
  ['seed', 'seed', '--seed', 'int'],
  ['preset', 'model.preset', '--preset', 'string'],
  ['globalBatch', 'training.globalBatch', '--global-batch', 'int'],
  ['microBatch', 'training.microBatch', '--micro-batch', 'int'],
  ['microBatchesPerJob', 'training.microBatchesPerJob', '--micro-batches-per-job', 'int'],
  ['shards', 'training.shards', '--shards', 'int'],
  ['reducers', 'coordinator.reducers', '--reducers', 'string'],
  ['checkpointDir', 'checkpoint.dir', '--checkpoint-dir', 'string'],
  ['data', 'data.dir', '--data', 'string'],
  ['tokenizer', 'data.tokenizer', '--tokenizer', 'string'],
  ['evalEvery', 'evaluation.every', '--eval-every', 'int'],
  ['evalData', 'evaluation.data', '--eval-data', 'string'],
  ['evalSamples', 'evaluation.samples', '--eval-samples', 'int'],
  ['backend', 'compute.backend', '--backend', 'string'],
];

/** The run configuration: file ← environment ← flags (errors name the flag a bad value came from). */
export function runConfigFrom(flags: RunFlags, env: NodeJS.ProcessEnv = process.env, base?: Record<string, unknown>): RunConfig {
  const overrides: Record<string, { value: unknown; source: string }> = {};
  for (const [key, field, flag, kind] of FLAG_FIELDS) {
    const raw = flags[key];
    if (raw === undefined) continue;
    const n = Number(raw);
    overrides[field] = { value: kind === 'int' && raw.trim() !== '' && Number.isFinite(n) ? n : raw, source: flag };
  }
  return loadRunConfig({ file: flags.config, env, overrides, ...(base ? { base } : {}) });
}

export function addRunFlags(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'run configuration (YAML or JSON); environment variables override it, flags override both')
    .option('--run-id <id>', 'run id (namespaces every Redis key)')
    .option('--redis-url <url>', 'Redis of the queue (default REDIS_URL or redis://127.0.0.1:6379)')
    .option('--redis-timeout <seconds>', 'give up when Redis has not answered within this at start-up (default M3AE_REDIS_TIMEOUT or 10)')
    .option('--steps <n>', 'optimizer steps')
    .option('--seed <n>', 'run seed')
    .option('--preset <name>', 'model preset (tiny, small, base)')
    .option('--global-batch <n>', 'samples per step over all workers')
    .option('--micro-batch <n>', 'samples per micro-batch (one forward/backward pass)')
    .option('--micro-batches-per-job <n>', 'micro-batches a job carries, summed on the worker (above 1: needs gradEncoding fx53)')
    .option('--shards <n>', 'shards of the parameter vector, reduced and updated in parallel coordinator threads (same parameters for any number)')
    .option('--reducers <where>', 'threads (default) or processes: reducer processes that read their own gradient blobs (no gradient byte through the coordinator)')
    .option('--checkpoint-dir <dir>', 'checkpoint directory')
    .option('--data <dir>', 'shard dataset directory (m3ae prepare output)')
    .option('--tokenizer <file>', 'tokenizer.json (default: the one m3ae prepare kept with the shards)')
    .option('--eval-every <n>', 'pre-training: held-out ITM/MLM accuracy and MIM loss every n steps and after the last (0: none; needs --eval-data)')
    .option('--eval-data <dir>', 'pre-training: held-out shard dataset, disjoint from --data (e.g. m3ae prepare --source medpix --split dev)')
    .option('--eval-samples <n>', 'pre-training: held-out pairs per evaluation (spread evenly over --eval-data; default 256)')
    .option('--backend <name>', `${BACKEND_HELP}; the workers' (a run keeps the kind of its first worker and refuses others)`);
}

/** The coordinator's observability: Prometheus metrics, /healthz /readyz /status, and the live run page. */
async function startCoordinatorTelemetry(
  config: RunConfig,
  schedule: StepSchedule,
  port: number,
  host: string | undefined,
  resume: boolean,
  logger: Logger,
): Promise<{
  events: CoordinatorEvents;
  metrics: CoordinatorMetrics;
  url: string;
  observeEvaluation(e: EvaluationEntry): void;
  ended(o: { stopped: boolean } | { error: unknown }): void;
  close(): Promise<void>;
}> {
  const metrics = new CoordinatorMetrics({ run: config.runId });
  metrics.setRunInfo({ totalSteps: schedule.steps, jobsPerStep: jobsPerStep(schedule.globalBatch, schedule), globalBatchSize: schedule.globalBatch });
  const page = await prepareRunPage(config, { status: () => metrics.status(), resume, logger, schedule });
  const redis = connectRedis(queueEndpoint(config), { connectionName: 'm3ae-coordinator-health', maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined); // the coordinator itself reports Redis trouble
  const server = await startTelemetryServer({ port, ...(host ? { host } : {}), metrics, readiness: { redis: () => redis.ping() }, status: () => metrics.status(), routes: page.handler, logger });
  logger.info({ url: server.url }, 'metrics, health, status and the run page are served');
  const started: CoordinatorEvents = {
    onStart: ({ startStep, queue }) => {
      metrics.setRunInfo({ startStep });
      metrics.addQueue(queue);
    },
    onRedeliver: () => metrics.jobRedelivered(),
  };
  return {
    events: mergeEventHandlers(mergeEventHandlers(started, coordinatorEvents(metrics)), page.events),
    metrics,
    url: server.url,
    observeEvaluation: (e) => {
      metrics.observeEvaluation(e);
      page.history.recordEvaluation(e);
    },
    ended: (o) => page.ended(o),
    close: async () => {
      await page.close();
      await server.close();
      redis.disconnect();
    },
  };
}

export interface CoordinatorRunOptions {
  resume: boolean;
  logger: Logger;
  events?: CoordinatorEvents;
  /** Port of /metrics, /healthz, /readyz, /status and the run page; false: none. @defaultValue M3AE_METRICS_PORT or 9400 */
  metricsPort?: number | false;
  /** Address of those endpoints. @defaultValue M3AE_METRICS_HOST or 127.0.0.1 */
  metricsHost?: string | undefined;
  /**
   * Stops the run when aborted (a checkpoint is written), instead of this process's SIGTERM/SIGINT: the local
   * cluster owns the signals and stops its workers, the coordinator and its Redis in order.
   */
  stopSignal?: AbortSignal;
  /** Receives the metrics registry once it exists (the local cluster adds its worker restarts to it). */
  onMetrics?: (metrics: CoordinatorMetrics) => void;
  /** Lines of a downstream task's setup (pre-trained weights loaded, validation after each epoch); default: the logger. */
  setupLog?: (line: string) => void;
}

/** Runs a coordinator to the end (or to SIGTERM/SIGINT, after which it writes a checkpoint). */
export async function runCoordinator(config: RunConfig, options: CoordinatorRunOptions): Promise<RunSummary> {
  // A fine-tuning run's validations go to the metrics (m3ae_validation_score) once they exist; a pre-training run's
  // held-out evaluations to the metrics (m3ae_heldout_*) and the run page.
  let onValidate: ((e: { step: number; score: number; best: { step: number; score: number } }) => void) | undefined;
  let onEvaluate: ((e: EvaluationEntry) => void) | undefined;
  const setup = await createSetup(config, { log: options.setupLog ?? ((line) => options.logger.info(line)), onValidate: (e) => onValidate?.(e), onEvaluate: (e) => onEvaluate?.(e) });
  const telemetry = options.metricsPort === false ? undefined : await startCoordinatorTelemetry(config, setup.schedule, options.metricsPort ?? metricsPortFromEnv(), options.metricsHost, options.resume, options.logger);
  if (telemetry) onValidate = (e) => telemetry.metrics.observeValidation(e);
  if (telemetry) onEvaluate = (e) => telemetry.observeEvaluation(e);
  if (telemetry) options.onMetrics?.(telemetry.metrics);
  const events = telemetry ? mergeEventHandlers(options.events ?? {}, telemetry.events) : (options.events ?? {});
  const coordinator = new Coordinator({ config, setup, resume: options.resume, logger: options.logger, events });
  let signals = 0;
  const stop = (signal: string): void => {
    if (++signals > 1) {
      // A second signal forces it: no checkpoint (the 'exit' listeners of a local cluster kill its processes).
      options.logger.warn({ signal }, 'second signal: exiting now without a checkpoint');
      process.exit(signalExitCode(signal));
    }
    options.logger.info({ signal }, 'stopping: the current step is abandoned, a checkpoint is written');
    coordinator.stop();
  };
  const onTerm = (): void => stop('SIGTERM');
  const onInt = (): void => stop('SIGINT');
  const onAbort = (): void => {
    options.logger.info('stopping: the current step is abandoned, a checkpoint is written');
    coordinator.stop();
  };
  if (options.stopSignal) {
    if (options.stopSignal.aborted) coordinator.stop();
    else options.stopSignal.addEventListener('abort', onAbort, { once: true });
  } else {
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
  }
  try {
    const summary = await coordinator.run();
    telemetry?.ended({ stopped: summary.stopped });
    return summary;
  } catch (e) {
    telemetry?.ended({ error: e });
    throw e;
  } finally {
    options.stopSignal?.removeEventListener('abort', onAbort);
    process.off('SIGTERM', onTerm);
    process.off('SIGINT', onInt);
    await telemetry?.close();
  }
}

/** `--metrics-host`: what it says in every command's help. */
export const METRICS_HOST_HELP = 'address the HTTP endpoints listen on (default M3AE_METRICS_HOST or 127.0.0.1: this machine only; 0.0.0.0 opens them)';

/** `--metrics-port N` / `--no-metrics` → the port, or false. */
export function metricsPortOption(opts: { metrics?: boolean; metricsPort?: string }): number | false | undefined {
  if (opts.metrics === false) return false;
  if (opts.metricsPort === undefined) return undefined;
  const n = Number(opts.metricsPort);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`--metrics-port must be a port number (0 picks a free one), got ${JSON.stringify(opts.metricsPort)}`);
  return n;
}

export function registerCoordinator(program: Command): void {
  addRunFlags(
    program
      .command('coordinator')
      .description('run the coordinator of a training run (one per run): publishes parameters, enqueues micro-batches, reduces, applies the optimizer, checkpoints'),
  )
    .option('--resume', 'continue from the latest checkpoint in the checkpoint directory', false)
    .option('--metrics-port <port>', 'port of /metrics, /healthz, /readyz, /status and the run page (default M3AE_METRICS_PORT or 9400; 0 picks a free one)')
    .option('--metrics-host <host>', METRICS_HOST_HELP)
    .option('--no-metrics', 'serve no metrics')
    .action(async (opts: RunFlags & { resume: boolean; metrics?: boolean; metricsPort?: string; metricsHost?: string }) => {
      const config = runConfigFrom(opts);
      const logger = createLogger({ name: 'coordinator', bindings: { run: config.runId } });
      logger.info({ config: redactConfig(config) }, 'run configuration');
      const metricsPort = metricsPortOption(opts);
      const summary = await runCoordinator(config, { resume: opts.resume, logger, metricsHost: opts.metricsHost, ...(metricsPort !== undefined ? { metricsPort } : {}) });
      logger.info({ summary }, summary.stopped ? 'run stopped' : 'run finished');
    });
}
