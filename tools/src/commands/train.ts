import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync, openSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError, type Command } from 'commander';
import cliProgress from 'cli-progress';
import type { StepReport } from '@m3ae/protocol';
import type { RunSummary } from '@m3ae/training';
import { loadTokenizer, prepareShards, trainTokenizer, writePhantomCorpus } from '@m3ae/data';
import { LocalRedis, pretrainTraining, redactRedisUrl, type RunConfig } from '@m3ae/protocol';
import { createLogger, type Logger } from '@m3ae/telemetry';
import { addRunFlags, metricsPortOption, runConfigFrom, runCoordinator, type RunFlags } from './coordinator.js';

/** The `m3ae` entry script, to start worker processes with. */
function cliEntry(): string {
  return fileURLToPath(new URL('../../bin/m3ae.js', import.meta.url));
}

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
    await copyFile(vocabFile, tokenizerFile);
  }
  const tokenizer = await loadTokenizer(tokenizerFile);
  return { dir: shards, tokenizer: tokenizerFile, vocabSize: tokenizer.vocabSize, padTokenId: tokenizer.special.pad, reused };
}

function positiveInt(name: string): (v: string) => string {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got ${JSON.stringify(v)}`);
    return v;
  };
}

export interface TrainFlags extends RunFlags {
  local: boolean;
  workers: string;
  resume: boolean;
  workDir: string;
  samples?: string;
  synthetic: boolean;
  gradEncoding?: string;
  json: boolean;
  metrics?: boolean;
  metricsPort?: string;
}

/** What `m3ae train --local` prints at the end (also as one JSON line with `--json`). */
export interface TrainReport {
  runId: string;
  preset: string;
  workers: number;
  steps: number;
  startStep: number;
  firstLosses: StepReport['losses'] | null;
  finalLosses: StepReport['losses'] | null;
  samplesPerSecond: number;
  secondsPerStep: number;
  durationSeconds: number;
  checkpoint: string | null;
  paramsSha256: string;
  rejected: number;
  redis: string;
  data: string | null;
  stopped: boolean;
}

function fmt(x: number | undefined, digits = 4): string {
  return x === undefined ? '-' : x.toFixed(digits);
}

/** `m3ae train --local`: a private Redis, the coordinator in this process, N worker processes. */
export function registerTrain(program: Command): void {
  addRunFlags(
    program
      .command('train')
      .description('train on this machine: a private redis-server (unless REDIS_URL is set), the coordinator, and N worker processes; with no data, a phantom corpus'),
  )
    .option('--local', 'run everything on this machine (the only mode; on a cluster run m3ae coordinator and m3ae worker)', false)
    .option('--workers <n>', 'worker processes', positiveInt('--workers'), '2')
    .option('--resume', 'continue from the latest checkpoint in the checkpoint directory', false)
    .option('--work-dir <dir>', 'where the phantom corpus, run files and worker logs go', '.m3ae')
    .option('--samples <n>', 'phantom corpus size when no --data is given (default: 256 for tiny, 512 otherwise)', positiveInt('--samples'))
    .option('--synthetic', 'synthetic compute instead of the model (orchestration only)', false)
    .option('--grad-encoding <enc>', 'gradients on the wire: f32 or bf16')
    .option('--json', 'print the final report as one JSON line', false)
    .option('--metrics-port <port>', "the coordinator's /metrics, /status and run page port; worker i uses the port + 1 + i", '9400')
    .option('--no-metrics', 'serve no metrics and no run page')
    .action(async (opts: TrainFlags) => {
      if (!opts.local) throw new Error('m3ae train runs a whole training on this machine: pass --local (on a cluster, run m3ae coordinator and m3ae worker)');
      const report = await trainLocal(opts);
      process.stdout.write(opts.json ? JSON.stringify(report) + '\n' : formatReport(report) + '\n');
      if (report.stopped) process.exitCode = 130;
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
  const workers = Number(opts.workers);
  const workDir = resolve(opts.workDir);
  await mkdir(workDir, { recursive: true });
  // An empty variable counts as unset (as everywhere in the run configuration).
  const externalRedis = opts.redisUrl || process.env['M3AE_REDIS_URL'] || process.env['REDIS_URL'] || undefined;
  const redis = externalRedis ? undefined : await LocalRedis.start();
  const redisUrl = externalRedis ?? (redis as LocalRedis).url;
  const metricsPort = metricsPortOption(opts) ?? 9400;
  try {
    const preset = opts.preset ?? 'tiny';
    const base: Record<string, unknown> = {
      runId: `local-${randomBytes(3).toString('hex')}`,
      model: { preset },
      training: { steps: 20, globalBatch: 8, microBatch: 2, learningRate: 1e-4, ...(opts.gradEncoding ? { gradEncoding: opts.gradEncoding } : {}) },
      checkpoint: { dir: join(workDir, 'checkpoints'), every: 10, keep: 3 },
    };
    // Without a run file, local defaults: 20 steps of 8 samples in 4 micro-batches, checkpoints in the work dir.
    let config: RunConfig = opts.config ? runConfigFrom({ ...opts, redisUrl }) : runConfigFrom({ ...opts, redisUrl }, process.env, base);
    if (opts.synthetic) config = { ...config, compute: { ...config.compute, kind: 'synthetic' } };
    let dataDir: string | null = config.data.dir ?? null;
    if (config.compute.kind === 'model' && !dataDir) {
      const count = Number(opts.samples ?? (config.model.preset === 'tiny' ? 256 : 512));
      const phantom = await ensurePhantomDataset({ workDir, preset: config.model.preset, count, seed: config.seed, log });
      dataDir = phantom.dir;
      config = {
        ...config,
        data: { dir: phantom.dir, tokenizer: phantom.tokenizer },
        // The vocabulary trained on the corpus (phantom captions use few words) sizes the embeddings.
        model: { ...config.model, overrides: { vocabSize: phantom.vocabSize, padTokenId: phantom.padTokenId, ...config.model.overrides } },
      };
    }
    const { steps } = pretrainTraining(config);
    log.info({ run: config.runId, preset: config.model.preset, workers, redis: redactRedisUrl(redisUrl), data: dataDir, steps }, 'training');
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
    let summary: RunSummary;
    try {
      summary = await runLocalCluster(config, { workers, workDir, redisUrl, resume: opts.resume, metricsPort, onStep, logLevel: bar || hooks.quiet ? 'warn' : undefined });
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
      data: dataDir,
      stopped: summary.stopped,
    };
  } finally {
    await redis?.stop();
  }
}

export interface LocalClusterOptions {
  workers: number;
  /** Run files and worker logs go under it. */
  workDir: string;
  redisUrl: string;
  resume: boolean;
  metricsPort: number | false;
  onStep?: (report: StepReport) => void;
  /** The coordinator's log level (default M3AE_LOG_LEVEL or info). */
  logLevel?: string | undefined;
  /** Passed to the coordinator's setup (a task's validation lines). */
  setupLog?: (line: string) => void;
}

/**
 * One run on this machine: `workers` worker processes (`m3ae worker` reading the run file) and the coordinator in
 * this process, against `redisUrl`. Ends with the run; a run whose every worker exited fails instead of waiting.
 */
export async function runLocalCluster(config: RunConfig, o: LocalClusterOptions): Promise<RunSummary> {
  const children: ChildProcess[] = [];
  const { workDir, redisUrl, metricsPort } = o;
  try {
    // Workers read the same configuration; the Redis URL (which may hold a password) goes by environment.
    const runFile = join(workDir, `run-${config.runId}.json`);
    await writeFile(runFile, JSON.stringify({ ...config, redis: { ...config.redis, url: undefined, password: undefined } }, null, 2));
    await mkdir(join(workDir, 'logs'), { recursive: true });
    for (let i = 0; i < o.workers; i++) {
      const out = openSync(join(workDir, 'logs', `${config.runId}-worker-${i}.log`), 'w');
      children.push(
        spawn(process.execPath, [cliEntry(), 'worker', '--config', runFile, '--id', `${config.runId}-w${i}`, ...(metricsPort === false ? ['--no-metrics'] : ['--metrics-port', String(metricsPort === 0 ? 0 : metricsPort + 1 + i)])], {
          stdio: ['ignore', out, out],
          env: { ...process.env, M3AE_REDIS_URL: redisUrl, ...(config.redis.password ? { M3AE_REDIS_PASSWORD: config.redis.password } : {}), M3AE_LOG_FORMAT: 'json' },
        }),
      );
    }
    const coordinatorLog = createLogger({ name: 'coordinator', bindings: { run: config.runId }, level: o.logLevel ?? process.env['M3AE_LOG_LEVEL'] ?? 'info', ...(process.stdout.isTTY ? {} : { format: 'json' as const }) });
    const exited = children.map((c) => new Promise<number | null>((r) => c.once('exit', (code) => r(code))));
    const firstDeath = Promise.race(exited.map(async (p, i) => ({ i, code: await p })));
    return await Promise.race([
        runCoordinator(config, { resume: o.resume, logger: coordinatorLog, events: o.onStep ? { onStep: o.onStep } : {}, metricsPort, ...(o.setupLog ? { setupLog: o.setupLog } : {}) }),
        // A worker that cannot start at all (bad data, wrong model) should not leave the run waiting forever.
        firstDeath.then(async ({ i, code }) => {
          await new Promise((r) => setTimeout(r, 1000));
          if (children.every((c) => c.exitCode !== null)) {
            const logFile = join(workDir, 'logs', `${config.runId}-worker-${i}.log`);
            const tail = (await readFile(logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-3).join('\n    ');
            throw new Error(`every worker exited (worker ${i}: code ${code}); see ${join(workDir, 'logs')}${tail ? `; the end of ${logFile}:\n    ${tail}` : ''}`);
          }
          return await new Promise<never>(() => undefined);
        }),
      ]);
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode !== null ? undefined : new Promise((r) => c.once('exit', r)))));
  }
}
