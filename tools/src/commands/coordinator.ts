import type { Command } from 'commander';
import { Coordinator, createSetup, type RunSummary } from '@m3ae/coordinator';
import { loadRunConfig, redactConfig, type RunConfig } from '@m3ae/protocol';
import { createLogger, type Logger } from '@m3ae/telemetry';

/** Flags shared by `m3ae coordinator`, `m3ae worker` and `m3ae train`, mapped to run-configuration fields. */
export interface RunFlags {
  config?: string;
  runId?: string;
  redisUrl?: string;
  steps?: string;
  seed?: string;
  preset?: string;
  globalBatch?: string;
  microBatch?: string;
  checkpointDir?: string;
  data?: string;
}

const FLAG_FIELDS: readonly [keyof RunFlags, string, string, 'int' | 'string'][] = [
  ['runId', 'runId', '--run-id', 'string'],
  ['redisUrl', 'redis.url', '--redis-url', 'string'],
  ['steps', 'training.steps', '--steps', 'int'],
  ['seed', 'seed', '--seed', 'int'],
  ['preset', 'model.preset', '--preset', 'string'],
  ['globalBatch', 'training.globalBatch', '--global-batch', 'int'],
  ['microBatch', 'training.microBatch', '--micro-batch', 'int'],
  ['checkpointDir', 'checkpoint.dir', '--checkpoint-dir', 'string'],
  ['data', 'data.dir', '--data', 'string'],
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
    .option('--steps <n>', 'optimizer steps')
    .option('--seed <n>', 'run seed')
    .option('--preset <name>', 'model preset (tiny, small, base)')
    .option('--global-batch <n>', 'samples per step over all workers')
    .option('--micro-batch <n>', 'samples per job')
    .option('--checkpoint-dir <dir>', 'checkpoint directory')
    .option('--data <dir>', 'shard dataset directory (m3ae prepare output)');
}

/** Runs a coordinator to the end (or to SIGTERM/SIGINT, after which it writes a checkpoint). */
export async function runCoordinator(config: RunConfig, options: { resume: boolean; logger: Logger; onStep?: ConstructorParameters<typeof Coordinator>[0]['events'] }): Promise<RunSummary> {
  const setup = await createSetup(config);
  const coordinator = new Coordinator({ config, setup, resume: options.resume, logger: options.logger, ...(options.onStep ? { events: options.onStep } : {}) });
  const stop = (signal: string): void => {
    options.logger.info({ signal }, 'stopping: the current step is abandoned, a checkpoint is written');
    coordinator.stop();
  };
  const onTerm = (): void => stop('SIGTERM');
  const onInt = (): void => stop('SIGINT');
  process.on('SIGTERM', onTerm);
  process.on('SIGINT', onInt);
  try {
    return await coordinator.run();
  } finally {
    process.off('SIGTERM', onTerm);
    process.off('SIGINT', onInt);
  }
}

export function registerCoordinator(program: Command): void {
  addRunFlags(
    program
      .command('coordinator')
      .description('run the coordinator of a training run (one per run): publishes parameters, enqueues micro-batches, reduces, applies the optimizer, checkpoints'),
  )
    .option('--resume', 'continue from the latest checkpoint in the checkpoint directory', false)
    .action(async (opts: RunFlags & { resume: boolean }) => {
      const config = runConfigFrom(opts);
      const logger = createLogger({ name: 'coordinator', bindings: { run: config.runId } });
      logger.info({ config: redactConfig(config) }, 'run configuration');
      const summary = await runCoordinator(config, { resume: opts.resume, logger });
      logger.info({ summary }, summary.stopped ? 'run stopped' : 'run finished');
    });
}
