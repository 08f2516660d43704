import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { latestCheckpointInfo } from '@m3ae/model';
import { LocalRedis, redactRedisUrl, type StepReport } from '@m3ae/protocol';
import { finetuneRunConfig, type HistoryEntry, type SelectionState } from '@m3ae/tasks';
import { LocalRunSignals, restartPolicyFrom, runLocalCluster, type RestartPolicy } from './local-cluster.js';
import { createLogger } from '@m3ae/telemetry';
import type { FinetuneOptions } from './finetune.js';

/**
 * `m3ae finetune <task> --workers N`: the same fine-tuning as in one process, on the coordinator and N worker
 * processes of this machine (a private Redis unless one is given). The run configuration it writes is what a
 * Kubernetes deployment would give `m3ae coordinator` and `m3ae worker` (`task:` section, see docs/deployment.md).
 */
export interface ClusterFinetuneOptions extends Omit<FinetuneOptions, 'signal'> {
  workers: number;
  /** An external Redis (default REDIS_URL / M3AE_REDIS_URL if set, else a private redis-server). */
  redisUrl?: string | undefined;
  /** Run files and worker logs. @defaultValue OUTPUT/.cluster */
  workDir?: string | undefined;
  /** Write the latest checkpoint every n steps as well as at the end. @defaultValue 100 */
  checkpointEvery?: number | undefined;
  onStep?: (report: StepReport) => void;
  /** Dead worker processes are replaced within this budget. @defaultValue M3AE_MAX_RESTARTS / M3AE_RESTART_WINDOW or 5 per 10 min */
  restart?: RestartPolicy | undefined;
}

export interface ClusterFinetuneResult {
  output: string;
  runId: string;
  workers: number;
  steps: number;
  bestPath: string;
  bestStep: number;
  bestScore: number;
  history: HistoryEntry[];
  /** The latest checkpoint (all steps done, or where the run stopped). */
  checkpoint: string | undefined;
  paramsSha256: string;
  samplesPerSecond: number;
  seconds: number;
  rejected: number;
  redis: string;
  stopped: boolean;
}

export async function runFinetuneCluster(o: ClusterFinetuneOptions): Promise<ClusterFinetuneResult> {
  const t0 = performance.now();
  const log = o.log ?? ((): void => undefined);
  const external = o.redisUrl || process.env['M3AE_REDIS_URL'] || process.env['REDIS_URL'] || undefined;
  // SIGINT/SIGTERM stop the workers, then the coordinator (checkpoint), then the private Redis.
  const signals = new LocalRunSignals(createLogger({ name: 'finetune', level: 'warn' }));
  const redis = external ? undefined : await LocalRedis.start({ detached: true });
  signals.onExit(() => void redis?.stop());
  const redisUrl = external ?? (redis as LocalRedis).url;
  try {
    const config = finetuneRunConfig({ ...o, redisUrl });
    const workDir = resolve(o.workDir ?? join(o.output, '.cluster'));
    await mkdir(workDir, { recursive: true });
    log(`fine-tuning ${o.task} on ${o.workers} worker process(es), Redis ${redactRedisUrl(redisUrl)}, run ${config.runId}`);
    const summary = await runLocalCluster(config, {
      workers: o.workers,
      workDir,
      redisUrl,
      resume: o.resume ?? false,
      metricsPort: false,
      logLevel: 'warn',
      setupLog: log,
      restart: o.restart ?? restartPolicyFrom({}),
      signals,
      ...(o.onStep ? { onStep: o.onStep } : {}),
    });
    const latest = summary.checkpoint ? await latestCheckpointInfo(config.checkpoint.dir) : undefined;
    const selection = JSON.parse(latest?.metadata['selection'] ?? '{}') as Partial<SelectionState>;
    const best = selection.best;
    return {
      output: resolve(o.output),
      runId: config.runId,
      workers: o.workers,
      steps: summary.startStep + summary.steps,
      bestPath: best?.path ?? '',
      bestStep: best?.step ?? -1,
      bestScore: typeof best?.score === 'number' ? best.score : -Infinity,
      history: selection.history ?? [],
      checkpoint: summary.checkpoint,
      paramsSha256: summary.paramsSha256,
      samplesPerSecond: summary.samplesPerSecond,
      seconds: (performance.now() - t0) / 1000,
      rejected: summary.rejected,
      redis: redactRedisUrl(redisUrl),
      stopped: summary.stopped,
    };
  } finally {
    await redis?.stop();
    signals.dispose();
  }
}
