import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { BACKEND_HELP, fraction, nonNegativeInt, nonNegativeNumber, oneOf, positiveInt, positiveNumber } from '../flags.js';
import { StopOnSignals } from '../signals.js';
import { CARVE_GROUP_BY, DEFAULT_VQA_RAD_CARVE, RETRIEVAL_SOURCES, type CarveGroupBy, type CarveSpec, type RetrievalSource } from '@m3ae/data';
import { DOWNSTREAM_TASKS, FINETUNE_DEFAULTS, TASK_INPUTS, VQA_LOSSES, type DownstreamTaskName, type TaskInputs, type VqaLoss } from '@m3ae/model';
import { TENSOR_ENCODINGS, type StepReport, type TensorEncoding } from '@m3ae/protocol';
import { finetuneRunConfig, HEAD_BIASES, splitSize, type HeadBias, type FinetuneRunOptions, type HistoryEntry, type ResolvedSettings, type TaskMeta, type TaskMetrics } from '@m3ae/tasks';
import { taskSetup, trainInProcess } from '@m3ae/training';
import { addRestartFlags, restartPolicyFrom } from './local-cluster.js';

export type { HistoryEntry, ResolvedSettings } from '@m3ae/tasks';

/**
 * `m3ae finetune`: fine-tunes a pre-trained M3AE (or a randomly initialised one, as a baseline) on a downstream task
 * in this process, with the official settings as defaults (`FINETUNE_DEFAULTS`, sourced from the official
 * config); `--workers N` / `--redis URL` run the same plan on the coordinator and workers instead (./finetune-cluster.ts).
 * Honest protocol: the model is selected on the validation split only (evaluated after every epoch), the
 * best one is written to `OUTPUT/best/`, and the test split is never read here — `m3ae eval --split test` reads it
 * once at the end.
 *
 * Each step's global batch is processed in micro-batches whose gradients (of the summed loss over the global
 * example count) add up to the global batch's gradient exactly — the same decomposition the distributed trainer
 * uses — then AdamW (the official optimiser: ×head and ×multi-modal learning-rate groups, warm-up then linear decay)
 * updates the flat parameters. Every random choice (order, crops, negatives, dropout) is a function of
 * (seed, step, example index): a run is deterministic and resumes exactly from its latest checkpoint.
 */
export interface FinetuneOptions extends FinetuneRunOptions {
  /** Continue from OUTPUT's latest checkpoint. */
  resume?: boolean | undefined;
  /** Compute threads (each holds the model; same parameters for any count). @defaultValue 1 */
  threads?: number | undefined;
  /** Stops after the current step; a checkpoint is written first. */
  signal?: AbortSignal | undefined;
  log?: ((line: string) => void) | undefined;
  /** Each step's report, as the trainer gives it (in-process runs). */
  onStep?: ((r: StepReport) => void) | undefined;
}

export interface FinetuneResult {
  output: string;
  bestPath: string;
  bestStep: number;
  bestScore: number;
  bestMetrics: TaskMetrics | undefined;
  steps: number;
  trainExamples: number;
  valExamples: number;
  skipped: Record<string, number>;
  seconds: number;
  settings: ResolvedSettings;
  history: HistoryEntry[];
  meta: TaskMeta;
  /** The latest checkpoint's parameters. */
  paramsSha256: string;
  /** Stopped by the signal before the last step. */
  stopped: boolean;
}

/**
 * Fine-tunes in this process: the run configuration `m3ae finetune --workers N` would give the cluster, trained by
 * the same {@link Trainer} with the workers' gradient computers in this process ({@link InProcessSource}) — the
 * same parameters by construction. Returns the history and the selected (best-on-validation) checkpoint.
 */
export async function runFinetune(o: FinetuneOptions): Promise<FinetuneResult> {
  const t0 = performance.now();
  const log = o.log ?? ((): void => undefined);
  const config = finetuneRunConfig(o);
  const setup = await taskSetup(config, { log });
  const { plan, selection } = setup;
  try {
    const summary = await trainInProcess(config, setup, { threads: o.threads, resume: o.resume, signal: o.signal, events: { onStep: withStep(progressLog(plan.settings, log, t0), o.onStep) } });
    const best = selection.best;
    return {
      output: resolve(o.output),
      bestPath: best.path,
      bestStep: best.step,
      bestScore: best.score,
      bestMetrics: best.metrics,
      steps: summary.startStep + summary.steps,
      trainExamples: splitSize(plan.train),
      valExamples: plan.val ? splitSize(plan.val) : 0,
      skipped: plan.skipLog.counts() as Record<string, number>,
      seconds: (performance.now() - t0) / 1000,
      settings: plan.settings,
      history: selection.history,
      meta: plan.meta,
      paramsSha256: summary.paramsSha256,
      stopped: summary.stopped,
    };
  } finally {
    await setup.close?.();
  }
}

function withStep(progress: (r: StepReport) => void, onStep: ((r: StepReport) => void) | undefined): (r: StepReport) => void {
  return onStep ? (r) => (progress(r), onStep(r)) : progress;
}

/** Progress lines within an epoch (five per epoch), between the validations the selection logs. */
function progressLog(settings: ResolvedSettings, log: (line: string) => void, t0: number): (r: StepReport) => void {
  const every = Math.max(1, Math.floor(settings.stepsPerEpoch / 5));
  return (r) => {
    const done = r.step + 1;
    if (done % every !== 0 || done % settings.stepsPerEpoch === 0) return;
    const [loss, acc] = [Object.entries(r.losses).find(([k]) => k !== 'total')?.[1], Object.values(r.accuracy)[0]];
    log(`step ${done}/${settings.steps} (${((performance.now() - t0) / 1000).toFixed(0)} s): train loss ${(loss ?? NaN).toFixed(4)} acc ${(100 * (acc ?? NaN)).toFixed(1)}%`);
  };
}

interface FinetuneCliOptions {
  checkpoint?: string;
  data: string;
  output?: string;
  init: 'pretrained' | 'random';
  preset?: string;
  tokenizer?: string;
  source?: RetrievalSource;
  labelColumn?: string;
  categories?: string;
  valFraction?: number;
  holdoutFraction?: number;
  carveSeed: number;
  carveBy?: CarveGroupBy;
  epochs?: number;
  globalBatch?: number;
  microBatch?: number;
  learningRate?: number;
  lrMultiplierHead?: number;
  lrMultiplierMultiModal?: number;
  warmupFraction?: number;
  weightDecay?: number;
  clipNorm?: number;
  imageSize?: number;
  textLength?: number;
  augment: boolean;
  negatives?: number;
  seed: number;
  steps?: number;
  trainLimit?: number;
  valLimit?: number;
  evalEvery?: number;
  vqaLoss?: VqaLoss;
  inputs?: TaskInputs;
  headBias?: HeadBias;
  resume: boolean;
  backend?: string;
  json?: string;
  threads?: number;
  workers?: number;
  redisUrl?: string;
  checkpointEvery?: number;
  gradEncoding?: TensorEncoding;
  microBatchesPerJob?: number;
  shards?: number;
  maxRestarts?: string;
  restartWindow?: string;
}

/** `m3ae finetune <task> --checkpoint DIR --data PATH [--output DIR] ...`. */
export function registerFinetune(program: Command): void {
  const d = FINETUNE_DEFAULTS;
  // With --workers: the local cluster's restart policy (the flags of m3ae train --local).
  addRestartFlags(program.command('finetune'))
    .description('fine-tune a pre-trained checkpoint on a downstream task (official settings by default); selects on validation, never reads test')
    .argument('<task>', `downstream task: ${DOWNSTREAM_TASKS.join(', ')}`, oneOf('<task>', DOWNSTREAM_TASKS))
    .option('--checkpoint <path>', 'pre-training checkpoint (file or directory: its latest)')
    .requiredOption('--data <path>', 'dataset root (VQA-RAD/SLAKE/VQA-Med 2019 folder, MELINDA folder, ROCO/MedPix root or a manifest)')
    .option('--output <dir>', 'where checkpoints go (latest for --resume; best/ = selected on validation)')
    .option('--init <how>', 'pretrained (from --checkpoint) or random (the from-scratch baseline)', oneOf('--init', ['pretrained', 'random'] as const), 'pretrained')
    .option('--preset <name>', 'model preset for --init random without --checkpoint')
    .option('--tokenizer <file>', 'tokenizer.json (default: the pre-training run\'s)')
    .option('--source <name>', `retrieval source: ${RETRIEVAL_SOURCES.join(', ')} (default: from the layout)`, oneOf('--source', RETRIEVAL_SOURCES))
    .option('--label-column <name>', 'MELINDA label column (default p_meth_label)')
    .option('--categories <list>', 'VQA-Med 2019 categories, comma separated (default modality,plane,organ)')
    .option('--val-fraction <x>', 'VQA-RAD / MedPix / manifest: fraction of training items carved out (by image, or as --carve-by says) for validation', fraction('--val-fraction'))
    .option('--holdout-fraction <x>', 'also carve a held-out split (evaluate it with m3ae eval --split holdout)', fraction('--holdout-fraction'))
    .option('--carve-seed <n>', 'seed of the carve', nonNegativeInt('--carve-seed'), 0)
    .option(
      '--carve-by <group>',
      `VQA-RAD: what the carve keeps together: ${CARVE_GROUP_BY.join(', ')} (default image: no image in two splits; question: held-out questions may be about training images, as in VQA-RAD's official test set; exact duplicates stay together)`,
      oneOf('--carve-by', CARVE_GROUP_BY),
    )
    .option('--epochs <n>', `epochs (official: VQA-RAD ${d['vqa-rad'].epochs}, SLAKE ${d.slake.epochs}, VQA-Med ${d['vqa-med-2019'].epochs}, MELINDA ${d.melinda.epochs}, retrieval ${d.retrieval.epochs})`, positiveInt('--epochs'))
    .option('--global-batch <n>', 'examples per optimizer step (official: 64 / 32 / 32 / 16 / 256)', positiveInt('--global-batch'))
    .option('--micro-batch <n>', 'examples per forward/backward pass (memory only; same result)', positiveInt('--micro-batch'))
    .option('--learning-rate <x>', 'base learning rate (official 5e-6)', positiveNumber('--learning-rate'))
    .option('--lr-multiplier-head <x>', 'head learning-rate multiplier (official: VQA 50, MELINDA 10, retrieval 5)', positiveNumber('--lr-multiplier-head'))
    .option('--lr-multiplier-multi-modal <x>', 'fusion learning-rate multiplier (official 5)', positiveNumber('--lr-multiplier-multi-modal'))
    .option('--warmup-fraction <x>', 'warm-up fraction of the steps (official 0.1)', fraction('--warmup-fraction'))
    .option('--weight-decay <x>', 'AdamW weight decay (official 0.01)', nonNegativeNumber('--weight-decay'))
    .option('--clip-norm <x>', 'clip the global gradient norm to this (0, the default: off, as the official run)', nonNegativeNumber('--clip-norm'))
    .option('--image-size <n>', 'image side (default: 384 scaled to the preset, e.g. small 176)', positiveInt('--image-size'))
    .option('--text-length <n>', 'token capacity of questions / captions (official 32 VQA, 128 MELINDA, 40 retrieval)', positiveInt('--text-length'))
    .option('--no-augment', 'centre crops only (the official runs use random-resized crops except on VQA-RAD)')
    .option('--negatives <n>', 'retrieval: captions per image besides the true one (official 15)', positiveInt('--negatives'))
    .option('--seed <n>', 'seed of order, crops, negatives, dropout and new layers', nonNegativeInt('--seed'), 0)
    .option('--steps <n>', 'at most n optimizer steps (default: epochs × steps per epoch)', positiveInt('--steps'))
    .option('--train-limit <n>', 'use the first n training examples', positiveInt('--train-limit'))
    .option('--val-limit <n>', 'validate on the first n examples (retrieval: default 100)', positiveInt('--val-limit'))
    .option('--eval-every <n>', 'validate every n steps too (always at each epoch end)', positiveInt('--eval-every'))
    .option('--vqa-loss <name>', `VQA answer loss: ${VQA_LOSSES.join(', ')} (default bce-sum, the official; softmax for from-scratch and small models, see BENCHMARKS.md)`, oneOf('--vqa-loss', VQA_LOSSES))
    .option('--inputs <what>', `what reaches the head: ${TASK_INPUTS.join(', ')} (text: the question-only baseline, every image blank)`, oneOf('--inputs', TASK_INPUTS))
    .option('--head-bias <how>', `initial bias of the head's last layer: ${HEAD_BIASES.join(', ')} (default zero, the official; prior: the training answers' log frequencies)`, oneOf('--head-bias', HEAD_BIASES))
    .option('--resume', 'continue from the output directory\'s latest checkpoint', false)
    .option('--backend <name>', BACKEND_HELP)
    .option('--json <file>', 'write the result (settings, history, best) as JSON')
    .option('--threads <n>', 'in this process: compute threads, each holding the model (same result for any count)', positiveInt('--threads'))
    .option('--workers <n>', 'run on the coordinator and n worker processes of this machine (same result as in one process)', positiveInt('--workers'))
    .option('--redis-url <url>', 'with --workers: the Redis to use (default REDIS_URL, else a private redis-server)')
    .option('--checkpoint-every <n>', 'with --workers: also write the latest checkpoint every n steps (default 100)', positiveInt('--checkpoint-every'))
    .option('--grad-encoding <enc>', `gradients on the wire: ${TENSOR_ENCODINGS.join(', ')} (fx53: exact fixed point; default f32)`, oneOf('--grad-encoding', TENSOR_ENCODINGS))
    .option('--micro-batches-per-job <n>', 'micro-batches a job carries, summed on its computer (above 1: needs --grad-encoding fx53)', positiveInt('--micro-batches-per-job'))
    .option('--shards <n>', 'shards of the parameter vector, reduced and updated side by side (same parameters for any number)', positiveInt('--shards'))
    .action(async (task: DownstreamTaskName, opts: FinetuneCliOptions) => {
      // The first signal stops the run (its exit code follows the signal: 130 for SIGINT, 143 for SIGTERM).
      const stop = new StopOnSignals();
      const carve: CarveSpec | undefined =
        opts.valFraction !== undefined || opts.holdoutFraction !== undefined || opts.carveSeed !== 0
          ? { seed: opts.carveSeed, valFraction: opts.valFraction ?? (task === 'vqa-rad' ? DEFAULT_VQA_RAD_CARVE.valFraction : 0.1), testFraction: opts.holdoutFraction ?? 0 }
          : undefined;
      try {
        const common = {
          task,
          data: opts.data,
          output: opts.output ?? join('runs', `finetune-${task}`),
          checkpoint: opts.checkpoint,
          init: opts.init,
          preset: opts.preset,
          tokenizer: opts.tokenizer,
          source: opts.source,
          labelColumn: opts.labelColumn,
          categories: opts.categories?.split(',').map((s) => s.trim()).filter(Boolean),
          carve,
          carveBy: opts.carveBy,
          epochs: opts.epochs,
          globalBatch: opts.globalBatch,
          microBatch: opts.microBatch,
          learningRate: opts.learningRate,
          lrMultiplierHead: opts.lrMultiplierHead,
          lrMultiplierMultiModal: opts.lrMultiplierMultiModal,
          warmupFraction: opts.warmupFraction,
          weightDecay: opts.weightDecay,
          clipNorm: opts.clipNorm,
          imageSize: opts.imageSize,
          textLength: opts.textLength,
          augment: opts.augment,
          negatives: opts.negatives,
          seed: opts.seed,
          steps: opts.steps,
          trainLimit: opts.trainLimit,
          valLimit: opts.valLimit,
          evalEvery: opts.evalEvery,
          vqaLoss: opts.vqaLoss,
          inputs: opts.inputs,
          headBias: opts.headBias,
          gradEncoding: opts.gradEncoding,
          microBatchesPerJob: opts.microBatchesPerJob,
          shards: opts.shards,
          resume: opts.resume,
          backend: opts.backend,
          log: (line: string) => void process.stderr.write(line + '\n'),
        };
        if (opts.workers !== undefined) {
          const { runFinetuneCluster } = await import('./finetune-cluster.js');
          const r = await runFinetuneCluster({ ...common, workers: opts.workers, redisUrl: opts.redisUrl, checkpointEvery: opts.checkpointEvery, restart: restartPolicyFrom(opts) });
          if (r.stopped) process.exitCode = stop.exitCode;
          const summary = { task, output: r.output, best: { path: r.bestPath, step: r.bestStep, valScore: r.bestScore }, steps: r.steps, workers: r.workers, samplesPerSecond: r.samplesPerSecond, seconds: Math.round(r.seconds), stopped: r.stopped };
          process.stdout.write(JSON.stringify(summary) + '\n');
          if (opts.json) writeFileSync(opts.json, JSON.stringify(r, null, 2) + '\n');
          return;
        }
        const r = await runFinetune({ ...common, threads: opts.threads, signal: stop.signal });
        if (r.stopped) process.exitCode = stop.exitCode;
        const summary = { task, output: r.output, best: { path: r.bestPath, step: r.bestStep, valScore: r.bestScore }, steps: r.steps, train: r.trainExamples, val: r.valExamples, skipped: r.skipped, seconds: Math.round(r.seconds), stopped: r.stopped };
        process.stdout.write(JSON.stringify(summary) + '\n');
        if (opts.json) writeFileSync(opts.json, JSON.stringify(r, null, 2) + '\n');
      } finally {
        stop.dispose();
      }
    });
}
