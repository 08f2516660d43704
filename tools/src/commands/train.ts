import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { loadTokenizer, prepareShards, trainTokenizer, writePhantomCorpus } from '@m3ae/data';
import { LocalRedis, pretrainTraining, redactRedisUrl, type RunConfig, type StepReport } from '@m3ae/protocol';
import { createLogger, type Logger } from '@m3ae/telemetry';
import { dataModelOverrides, runModelConfig } from '@m3ae/training';
import { positiveInt } from '../flags.js';
import { addRunFlags, METRICS_HOST_HELP, metricsPortOption, runConfigFrom, type RunFlags } from './coordinator.js';
import { addRestartFlags, LocalRunSignals, restartPolicyFrom, RunStopped, runLocalCluster, type LocalClusterSummary } from './local-cluster.js';

export interface PhantomDataset {
  /** Shard folder (with tokenizer.json next to the shards). */
  dir: string;
  tokenizer: string;
  /** The tokenizer's vocabulary size (the model's vocabSize is set to it). */
  vocabSize: number;
  padTokenId: number;
  reused: boolean;
}

/**
 * A licence-free phantom corpus for a preset, ready to train on: `m3ae data synth` (images at the preset's
 * size), a byte-level BPE vocabulary trained on its captions, and `m3ae prepare` into shards with token ids.
 * Cached under `workDir`: the same (preset, count, seed) is made once.
 */
export async function ensurePhantomDataset(options: { workDir: string; preset: string; count: number; seed: number; log?: Logger }): Promise<PhantomDataset> {
  const { presetConfig } = await import('@m3ae/model');
  const model = presetConfig(options.preset);
  const root = resolve(options.workDir, `phantom-${options.preset}-${options.count}-s${options.seed}`);
  const shards = join(root, 'shards');
  const tokenizerFile = join(shards, 'tokenizer.json');
  const reused = existsSync(join(shards, 'dataset.json')) && existsSync(tokenizerFile);
  if (!reused) {
    options.log?.info({ dir: root, count: options.count, imageSize: model.imageSize }, 'making a phantom corpus (m3ae data synth → tokenizer → m3ae prepare)');
    const corpus = join(root, 'corpus');
    const synth = await writePhantomCorpus({ output: corpus, count: options.count, seed: options.seed, size: model.imageSize });
    const lines = (await readFile(synth.manifest, 'utf8')).split('\n').filter(Boolean);
    const captions = join(root, 'captions.txt');
    await writeFile(captions, lines.map((l) => (JSON.parse(l) as { text: string }).text).join('\n') + '\n');
    await mkdir(shards, { recursive: true });
    const vocabFile = join(root, 'tokenizer.json');
    await trainTokenizer({ sources: [{ kind: 'text', path: captions }], vocabSize: model.vocabSize, output: vocabFile, type: 'bpe' });
    const tokenizer = await loadTokenizer(vocabFile);
    await prepareShards({ source: 'manifest', input: synth.manifest, output: shards, imageSize: model.imageSize, tokenizer, samplesPerShard: 256 });
  }
  const tokenizer = await loadTokenizer(tokenizerFile);
  return { dir: shards, tokenizer: tokenizerFile, vocabSize: tokenizer.vocabSize, padTokenId: tokenizer.special.pad, reused };
}

/**
 * Shards of a local run's reduction without a run file: one coordinator thread per core, up to 4 (issue 12's sharded
 * reduction; any number of shards gives the same parameter bits).
 */
export function localShards(): number {
  return Math.max(1, Math.min(4, availableParallelism()));
}

export interface TrainFlags extends RunFlags {
  local: boolean;
  workers: number;
  resume: boolean;
  workDir: string;
  samples?: number;
  synthetic: boolean;
  gradEncoding?: string;
  /** Private redis-servers for gradient and parameter blobs (redis.blobUrls); 1: the queue's Redis holds them too. */
  blobRedis?: number;
  json: boolean;
  metrics?: boolean;
  metricsPort?: string;
  metricsHost?: string;
  maxRestarts?: string;
  restartWindow?: string;
}

/**
 * What `m3ae train --local` prints at the end (also as one JSON line with `--json`): the run's summary as the trainer
 * and the local cluster give it (what they leave undefined as null), and what this command adds.
 */
export interface TrainReport extends Pick<LocalClusterSummary, 'runId' | 'steps' | 'startStep' | 'samplesPerSecond' | 'paramsSha256' | 'rejected' | 'stopped' | 'workerRestarts'> {
  preset: string;
  workers: number;
  firstLosses: StepReport['losses'] | null;
  finalLosses: StepReport['losses'] | null;
  secondsPerStep: number;
  durationSeconds: number;
  checkpoint: string | null;
  redis: string;
  /** The Redis instances that held the blobs, when not the queue's (redis.blobUrls). */
  blobRedis: string[];
  data: string | null;
}

function fmt(x: number | undefined, digits = 4): string {
  return x === undefined ? '-' : x.toFixed(digits);
}

/** `m3ae train --local`: a private Redis, the coordinator in this process, N worker processes. */
export function registerTrain(program: Command): void {
  const cmd = addRunFlags(
    program
      .command('train')
      .description('train on this machine: a private redis-server (unless REDIS_URL is set), the coordinator, and N worker processes; with no data, a phantom corpus'),
  )
    .option('--local', 'run everything on this machine (the only mode; on a cluster run m3ae coordinator and m3ae worker)', false)
    .option('--workers <n>', 'worker processes', positiveInt('--workers'), 2)
    .option('--resume', 'continue from the latest checkpoint in the checkpoint directory', false)
    .option('--work-dir <dir>', 'where the phantom corpus, run files and worker logs go', '.m3ae')
    .option('--samples <n>', 'phantom corpus size when no --data is given (default: 256 for tiny, 512 otherwise)', positiveInt('--samples'))
    .option('--synthetic', 'synthetic compute instead of the model (orchestration only)', false)
    .option('--grad-encoding <enc>', 'gradients on the wire: f32, bf16 or fx53 (exact fixed point)')
    .option('--blob-redis <n>', "private redis-servers that hold the run's gradient and parameter blobs, spread by chunk (redis.blobUrls); 1: the queue's Redis holds them (on many cores, one Redis thread is the exchange's limit)", positiveInt('--blob-redis'), 1)
    .option('--json', 'print the final report as one JSON line', false)
    .option('--metrics-port <port>', "the coordinator's /metrics, /status and run page port; worker i uses the port + 1 + i", '9400')
    .option('--metrics-host <host>', METRICS_HOST_HELP)
    .option('--no-metrics', 'serve no metrics and no run page');
  addRestartFlags(cmd).action(async (opts: TrainFlags) => {
    if (!opts.local) throw new Error('m3ae train runs a whole training on this machine: pass --local (on a cluster, run m3ae coordinator and m3ae worker)');
    const report = await trainLocal(opts);
    process.stdout.write(opts.json ? JSON.stringify(report) + '\n' : formatReport(report) + '\n');
  });
}

function formatReport(r: TrainReport): string {
  const l = r.finalLosses;
  return [
    `trained ${r.steps} steps (${r.startStep} → ${r.startStep + r.steps}) of ${r.preset} with ${r.workers} worker${r.workers > 1 ? 's' : ''}${r.stopped ? ' (stopped early)' : ''}`,
    `  final loss ${fmt(l?.total)}  (mlm ${fmt(l?.mlm)}  mim ${fmt(l?.mim)}  itm ${fmt(l?.itm)}); first ${fmt(r.firstLosses?.total)}`,
    `  throughput ${r.samplesPerSecond.toFixed(2)} samples/s, ${r.secondsPerStep.toFixed(2)} s/step, ${r.durationSeconds.toFixed(1)} s in all`,
    `  checkpoint ${r.checkpoint ?? '-'}`,
    `  params sha256 ${r.paramsSha256}`,
    ...(r.workerRestarts > 0 ? [`  worker restarts ${r.workerRestarts}`] : []),
  ].join('\n');
}

/** Hooks for callers that drive a local run programmatically (benchmarks). */
export interface TrainHooks {
  onStep?(report: StepReport): void;
  /** No progress bar and no per-step lines (the caller reports). */
  quiet?: boolean;
}

export async function trainLocal(opts: TrainFlags, hooks: TrainHooks = {}): Promise<TrainReport> {
  const log = createLogger({ name: 'train', ...(hooks.quiet ? { level: 'warn' } : {}), ...(process.stdout.isTTY ? {} : { format: 'json' as const }) });
  const workers = opts.workers;
  const workDir = resolve(opts.workDir);
  const restart = restartPolicyFrom(opts);
  const metricsPort = metricsPortOption(opts) ?? 9400;
  await mkdir(workDir, { recursive: true });
  // SIGINT/SIGTERM in every phase: before the coordinator runs they end the command; after, they stop it in order.
  const signals = new LocalRunSignals(log);
  let redis: LocalRedis | undefined;
  const blobRedis: LocalRedis[] = [];
  signals.onExit(() => {
    void redis?.stop();
    for (const b of blobRedis) void b.stop();
  });
  try {
    // An empty variable counts as unset (as everywhere in the run configuration).
    const externalRedis = opts.redisUrl || process.env['M3AE_REDIS_URL'] || process.env['REDIS_URL'] || undefined;
    // Its own process group: stopped last, after the processes that use it.
    redis = externalRedis ? undefined : await signals.guard(LocalRedis.start({ detached: true }));
    const redisUrl = externalRedis ?? (redis as LocalRedis).url;
    const blobCount = opts.blobRedis ?? 1;
    if (blobCount > 1) for (let i = 0; i < blobCount; i++) blobRedis.push(await signals.guard(LocalRedis.start({ detached: true })));
    const preset = opts.preset ?? 'tiny';
    const base: Record<string, unknown> = {
      runId: `local-${randomBytes(3).toString('hex')}`,
      model: { preset },
      training: { steps: 20, globalBatch: 8, microBatch: 2, learningRate: 1e-4, shards: localShards(), ...(opts.gradEncoding ? { gradEncoding: opts.gradEncoding } : {}) },
      checkpoint: { dir: join(workDir, 'checkpoints'), every: 10, keep: 3 },
    };
    // Without a run file, local defaults: 20 steps of 8 samples in 4 micro-batches, checkpoints in the work dir.
    let config: RunConfig = opts.config ? runConfigFrom({ ...opts, redisUrl }) : runConfigFrom({ ...opts, redisUrl }, process.env, base);
    if (opts.synthetic) config = { ...config, compute: { ...config.compute, kind: 'synthetic' } };
    if (blobRedis.length > 0) config = { ...config, redis: { ...config.redis, blobUrls: blobRedis.map((b) => b.url) } };
    let dataDir: string | null = config.data.dir ?? null;
    if (config.compute.kind === 'model' && !dataDir) {
      const count = opts.samples ?? (config.model.preset === 'tiny' ? 256 : 512);
      const phantom = await signals.guard(ensurePhantomDataset({ workDir, preset: config.model.preset, count, seed: config.seed, log }));
      dataDir = phantom.dir;
      config = {
        ...config,
        data: { dir: phantom.dir, tokenizer: phantom.tokenizer },
        // The vocabulary trained on the corpus (phantom captions use few words) sizes the embeddings.
        model: { ...config.model, overrides: { vocabSize: phantom.vocabSize, padTokenId: phantom.padTokenId, ...config.model.overrides } },
      };
    } else if (config.compute.kind === 'model' && dataDir && !opts.config) {
      // Without a run file the model takes its data-dependent sizes from the data; what the flags set still wins.
      const fromData = await signals.guard(dataModelOverrides(config));
      const presetModel = runModelConfig({ ...config, model: { ...config.model, overrides: {} } });
      const adopted = Object.entries(fromData).filter(([k, v]) => presetModel[k as keyof typeof fromData] !== v && config.model.overrides[k] === undefined);
      if (adopted.length > 0) log.info(Object.fromEntries(adopted.map(([k, v]) => [k, `${v} (preset ${config.model.preset}: ${presetModel[k as keyof typeof fromData]})`])), 'model sizes from the data');
      config = { ...config, model: { ...config.model, overrides: { ...fromData, ...config.model.overrides } } };
    }
    const { steps } = pretrainTraining(config);
    log.info({ run: config.runId, preset: config.model.preset, workers, redis: redactRedisUrl(redisUrl), ...(config.redis.blobUrls.length ? { blobRedis: config.redis.blobUrls.map(redactRedisUrl) } : {}), data: dataDir, steps }, 'training');
    const bar = process.stdout.isTTY && !hooks.quiet
      ? new cliProgress.SingleBar(
          { format: 'train [{bar}] {value}/{total} | loss {loss} (mlm {mlm} mim {mim} itm {itm}) | {sps} samples/s | ETA {eta_formatted}', stream: process.stdout, etaBuffer: 10 },
          cliProgress.Presets.shades_classic,
        )
      : undefined;
    let barStarted = false;
    const started = performance.now();
    const onStep = (r: StepReport): void => {
      hooks.onStep?.(r);
      const sps = (r.samples / r.durationMs) * 1000;
      if (hooks.quiet) return;
      if (bar) {
        if (!barStarted) {
          bar.start(steps, r.step, { loss: '-', mlm: '-', mim: '-', itm: '-', sps: '-' });
          barStarted = true;
        }
        bar.update(r.step + 1, { loss: fmt(r.losses.total), mlm: fmt(r.losses.mlm, 3), mim: fmt(r.losses.mim, 3), itm: fmt(r.losses.itm, 3), sps: sps.toFixed(1) });
      }
      // Without a terminal, the coordinator's own line per step ('step done') is the progress.
    };
    let summary: LocalClusterSummary;
    try {
      summary = await runLocalCluster(config, {
        workers,
        workDir,
        redisUrl,
        resume: opts.resume,
        metricsPort,
        metricsHost: opts.metricsHost,
        restart,
        signals,
        onStep,
        logLevel: bar || hooks.quiet ? 'warn' : undefined,
      });
    } finally {
      bar?.stop();
    }
    const seconds = (performance.now() - started) / 1000;
    return {
      runId: config.runId,
      preset: config.compute.kind === 'synthetic' ? 'synthetic' : config.model.preset,
      workers,
      steps: summary.steps,
      startStep: summary.startStep,
      firstLosses: summary.firstLosses ?? null,
      finalLosses: summary.lastLosses ?? null,
      samplesPerSecond: summary.samplesPerSecond,
      secondsPerStep: summary.steps > 0 ? summary.durationMs / 1000 / summary.steps : 0,
      durationSeconds: seconds,
      checkpoint: summary.checkpoint ?? null,
      paramsSha256: summary.paramsSha256,
      rejected: summary.rejected,
      redis: redactRedisUrl(redisUrl),
      blobRedis: config.redis.blobUrls.map(redactRedisUrl),
      data: dataDir,
      stopped: summary.stopped,
      workerRestarts: summary.workerRestarts,
    };
  } catch (e) {
    if (e instanceof RunStopped || signals.stoppedBy) process.exitCode = signals.exitCode;
    throw e;
  } finally {
    // Redis last: the workers and the coordinator are done with it.
    await Promise.all([redis?.stop(), ...blobRedis.map(async (b) => await b.stop())]);
    signals.dispose();
    if (signals.stoppedBy) process.exitCode = signals.exitCode;
  }
}
