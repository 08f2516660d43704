import type { Command } from 'commander';
import { connectRedis, queueEndpoint, redactRedisUrl } from '@m3ae/protocol';
import { createComputer, ThreadedComputer, type GradientComputer } from '@m3ae/training';
import { ManifestMismatchError, TrainingWorker, workerId } from '@m3ae/worker';
import { createLogger, metricsPortFromEnv, startTelemetryServer, WorkerMetrics, workerJobListener, type TelemetryServer } from '@m3ae/telemetry';
import { addRunFlags, METRICS_HOST_HELP, metricsPortOption, runConfigFrom, type RunFlags } from './coordinator.js';
import { signalExitCode } from '../signals.js';

/** Set by the local cluster: a worker whose parent (`m3ae train --local`) is gone stops instead of running on as an orphan. */
export const PARENT_PID_ENV = 'M3AE_PARENT_PID';

export function registerWorker(program: Command): void {
  addRunFlags(
    program
      .command('worker')
      .description('run a training worker: takes micro-batch jobs, computes gradients in a compute thread, uploads them; SIGTERM finishes or hands back the current job'),
  )
    .option('--id <id>', 'worker id (default POD_NAME or hostname, plus the pid)')
    .option('--inline-compute', 'compute on the main thread instead of a compute thread (debugging only: blocks lock renewal)', false)
    .option('--metrics-port <port>', 'port of /metrics, /healthz and /readyz (default M3AE_METRICS_PORT or 9400; 0 picks a free one)')
    .option('--metrics-host <host>', METRICS_HOST_HELP)
    .option('--no-metrics', 'serve no metrics')
    .action(async (opts: RunFlags & { id?: string; inlineCompute: boolean; metrics?: boolean; metricsPort?: string; metricsHost?: string }) => {
      const config = runConfigFrom(opts);
      const id = opts.id ?? workerId();
      const logger = createLogger({ name: 'worker', bindings: { run: config.runId, worker: id } });
      const metricsPort = metricsPortOption(opts);
      const metrics = metricsPort === false ? undefined : new WorkerMetrics({ run: config.runId, worker: id });
      // Signals are honoured in every phase: while the model loads and while Redis is awaited, a stop ends the
      // start-up; once jobs flow, the current job finishes or is handed back. A second signal exits at once.
      let stopping = false;
      let worker: TrainingWorker | undefined;
      const stop = (signal: string): void => {
        if (stopping) {
          logger.warn({ signal }, 'second signal: exiting now');
          process.exit(signalExitCode(signal));
        }
        stopping = true;
        logger.info({ signal }, worker ? 'stopping: finishing or handing back the current job' : 'stopping during start-up');
        if (worker) void worker.close();
      };
      const onTerm = (): void => stop('SIGTERM');
      const onInt = (): void => stop('SIGINT');
      process.on('SIGTERM', onTerm);
      process.on('SIGINT', onInt);
      const parent = Number(process.env[PARENT_PID_ENV]);
      // Orphaned (the local cluster was SIGKILLed): exit at once; BullMQ hands the current job to another worker.
      const orphanWatch = Number.isInteger(parent) && parent > 0
        ? setInterval(() => {
            if (process.ppid === parent) return;
            logger.warn({ parent }, 'the local cluster that started this worker is gone: exiting');
            process.exit(1);
          }, 1000)
        : undefined;
      orphanWatch?.unref();

      let ready = false;
      let server: TelemetryServer | undefined;
      const health = connectRedis(queueEndpoint(config), { connectionName: 'm3ae-worker-health', maxRetriesPerRequest: 1 });
      health.on('error', () => undefined); // the worker itself reports Redis trouble
      let computer: GradientComputer | undefined;
      try {
        if (metrics) {
          // Up before the model loads: /healthz answers at once, /readyz once the computer is ready.
          const port = typeof metricsPort === 'number' ? metricsPort : metricsPortFromEnv();
          server = await startTelemetryServer({ port, ...(opts.metricsHost ? { host: opts.metricsHost } : {}), metrics, readiness: { redis: () => health.ping(), model: () => ready }, logger });
        }
        computer = opts.inlineCompute ? await createComputer(config) : await ThreadedComputer.start(config);
        metrics?.setBackend(computer.backend);
        logger.info({ redis: redactRedisUrl(config.redis.url), timeoutSeconds: config.redis.connectTimeoutSeconds }, 'connecting to Redis');
        worker = await TrainingWorker.start({ config, computer, workerId: id, logger, shouldStop: () => stopping, ...(metrics ? { onJob: workerJobListener(metrics) } : {}) });
        ready = true;
        if (stopping) void worker.close();
        await worker.done;
      } catch (e) {
        if (e instanceof ManifestMismatchError) {
          logger.error(e.message);
          process.exitCode = 2;
          return;
        }
        throw e;
      } finally {
        if (orphanWatch) clearInterval(orphanWatch);
        process.off('SIGTERM', onTerm);
        process.off('SIGINT', onInt);
        if (!worker) await computer?.dispose();
        await server?.close();
        health.disconnect();
      }
    });
}
