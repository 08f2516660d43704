import type { Command } from 'commander';
import { connectRedis, queueEndpoint } from '@m3ae/protocol';
import { createComputer, ThreadedComputer } from '@m3ae/training';
import { ManifestMismatchError, TrainingWorker, workerId } from '@m3ae/worker';
import { createLogger, metricsPortFromEnv, startTelemetryServer, WorkerMetrics, workerJobListener, type TelemetryServer } from '@m3ae/telemetry';
import { addRunFlags, metricsPortOption, runConfigFrom, type RunFlags } from './coordinator.js';

export function registerWorker(program: Command): void {
  addRunFlags(
    program
      .command('worker')
      .description('run a training worker: takes micro-batch jobs, computes gradients in a compute thread, uploads them; SIGTERM finishes or hands back the current job'),
  )
    .option('--id <id>', 'worker id (default POD_NAME or hostname, plus the pid)')
    .option('--inline-compute', 'compute on the main thread instead of a compute thread (debugging only: blocks lock renewal)', false)
    .option('--metrics-port <port>', 'port of /metrics, /healthz and /readyz (default M3AE_METRICS_PORT or 9400; 0 picks a free one)')
    .option('--no-metrics', 'serve no metrics')
    .action(async (opts: RunFlags & { id?: string; inlineCompute: boolean; metrics?: boolean; metricsPort?: string }) => {
      const config = runConfigFrom(opts);
      const id = opts.id ?? workerId();
      const logger = createLogger({ name: 'worker', bindings: { run: config.runId, worker: id } });
      const metricsPort = metricsPortOption(opts);
      const metrics = metricsPort === false ? undefined : new WorkerMetrics({ run: config.runId, worker: id });
      let ready = false;
      let server: TelemetryServer | undefined;
      const health = connectRedis(queueEndpoint(config), { connectionName: 'm3ae-worker-health', maxRetriesPerRequest: 1 });
      health.on('error', () => undefined); // the worker itself reports Redis trouble
      if (metrics) {
        // Up before the model loads: /healthz answers at once, /readyz once the computer is ready.
        server = await startTelemetryServer({ port: typeof metricsPort === 'number' ? metricsPort : metricsPortFromEnv(), metrics, readiness: { redis: () => health.ping(), model: () => ready }, logger });
      }
      const shutdown = async (): Promise<void> => {
        await server?.close();
        health.disconnect();
      };
      const computer = opts.inlineCompute ? await createComputer(config) : await ThreadedComputer.start(config);
      metrics?.setBackend(computer.backend);
      let worker: TrainingWorker;
      try {
        worker = await TrainingWorker.start({ config, computer, workerId: id, logger, ...(metrics ? { onJob: workerJobListener(metrics) } : {}) });
        ready = true;
      } catch (e) {
        await computer.dispose();
        await shutdown();
        if (e instanceof ManifestMismatchError) {
          logger.error(e.message);
          process.exitCode = 2;
          return;
        }
        throw e;
      }
      const stop = (signal: string): void => {
        logger.info({ signal }, 'stopping: finishing or handing back the current job');
        void worker.close();
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
      try {
        await worker.done;
      } catch (e) {
        if (e instanceof ManifestMismatchError) {
          process.exitCode = 2;
          return;
        }
        throw e;
      } finally {
        await shutdown();
      }
    });
}
