import type { Command } from 'commander';
import { createComputer, ManifestMismatchError, ThreadedComputer, TrainingWorker, workerId } from '@m3ae/worker';
import { createLogger } from '@m3ae/telemetry';
import { addRunFlags, runConfigFrom, type RunFlags } from './coordinator.js';

export function registerWorker(program: Command): void {
  addRunFlags(
    program
      .command('worker')
      .description('run a training worker: takes micro-batch jobs, computes gradients in a compute thread, uploads them; SIGTERM finishes or hands back the current job'),
  )
    .option('--id <id>', 'worker id (default POD_NAME or hostname, plus the pid)')
    .option('--inline-compute', 'compute on the main thread instead of a compute thread (debugging only: blocks lock renewal)', false)
    .action(async (opts: RunFlags & { id?: string; inlineCompute: boolean }) => {
      const config = runConfigFrom(opts);
      const id = opts.id ?? workerId();
      const logger = createLogger({ name: 'worker', bindings: { run: config.runId, worker: id } });
      const computer = opts.inlineCompute ? await createComputer(config) : await ThreadedComputer.start(config);
      let worker: TrainingWorker;
      try {
        worker = await TrainingWorker.start({ config, computer, workerId: id, logger });
      } catch (e) {
        await computer.dispose();
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
      }
    });
}
