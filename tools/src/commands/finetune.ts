import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { DEFAULT_VQA_RAD_CARVE, EpochSampler, ImageStore, RETRIEVAL_SOURCES, SkipLog, buildLabeledBatch, buildRetrievalBatch, loadTokenizer, type CarveSpec, type DownstreamBatch, type RetrievalSource, type TextTokenizer } from '@m3ae/data';
import {
  AdamW,
  chooseBackend,
  computeTaskGradients,
  createDownstreamModel,
  DOWNSTREAM_TASKS,
  FINETUNE_DEFAULTS,
  finetuneImageSize,
  finetuneTextLength,
  flattenDownstream,
  latestCheckpoint,
  loadCheckpoint,
  loadPretrained,
  modelManifest,
  parseConfig,
  presetConfig,
  readCheckpointInfo,
  resolveCheckpointPath,
  resolveConfig,
  saveCheckpoint,
  setDownstreamFromFlat,
  unflatten,
  type CheckpointInfo,
  type DownstreamTaskName,
  type HeadSpec,
  type M3AEConfig,
} from '@m3ae/model';
import {
  checkpointTokenizer,
  checkTokenizerFits,
  evaluateSplit,
  guessRetrievalSource,
  prepareSplit,
  readRawSplit,
  selectionScore,
  splitSize,
  TaskError,
  vocabularyOf,
  type RawSplit,
  type SplitData,
  type TaskMeta,
  type TaskMetrics,
  type TaskSource,
} from './eval.js';

/**
 * `m3ae finetune`: fine-tunes a pre-trained M3AE (or a randomly initialised one, as a baseline) on a downstream task
 * in this process, with the official settings as defaults (`FINETUNE_DEFAULTS`, sourced from the official
 * config). Honest protocol: the model is selected on the validation split only (evaluated after every epoch), the
 * best one is written to `OUTPUT/best/`, and the test split is never read here — `m3ae eval --split test` reads it
 * once at the end.
 *
 * Each step's global batch is processed in micro-batches whose gradients (of the summed loss over the global
 * example count) add up to the global batch's gradient exactly — the same decomposition the distributed trainer
 * uses — then AdamW (the official optimiser: ×head and ×multi-modal learning-rate groups, warm-up then linear decay)
 * updates the flat parameters. Every random choice (order, crops, negatives, dropout) is a function of
 * (seed, step, example index): a run is deterministic and resumes exactly from its latest checkpoint.
 */
export interface FinetuneOptions {
  task: DownstreamTaskName;
  data: string;
  output: string;
  /** A pre-training checkpoint (file or directory); its configuration is the backbone's. */
  checkpoint?: string | undefined;
  /** `random` keeps the seeded initialisation (the from-scratch baseline). @defaultValue 'pretrained' */
  init?: 'pretrained' | 'random';
  /** Model preset when no checkpoint is given (random initialisation only). */
  preset?: string | undefined;
  tokenizer?: string | undefined;
  source?: RetrievalSource | undefined;
  labelColumn?: string | undefined;
  categories?: string[] | undefined;
  carve?: CarveSpec | undefined;
  epochs?: number | undefined;
  batchSize?: number | undefined;
  /** Examples per forward/backward pass (memory); does not change the result. @defaultValue 8 */
  microBatch?: number | undefined;
  learningRate?: number | undefined;
  lrMultiplierHead?: number | undefined;
  lrMultiplierMultiModal?: number | undefined;
  warmupFraction?: number | undefined;
  weightDecay?: number | undefined;
  maxGradNorm?: number | undefined;
  imageSize?: number | undefined;
  textLength?: number | undefined;
  /** Random-resized crops where the official run uses them. @defaultValue true */
  augment?: boolean | undefined;
  negatives?: number | undefined;
  seed?: number | undefined;
  /** Stop after this many optimizer steps (the schedule still spans them). */
  maxSteps?: number | undefined;
  /** Use the first n training examples (benchmark sizes). */
  trainLimit?: number | undefined;
  /** Validate on the first n validation examples (retrieval: n images). @defaultValue all (retrieval: 100) */
  valLimit?: number | undefined;
  /** Validate every n steps as well as at the end of every epoch. */
  evalEvery?: number | undefined;
  /** Continue from OUTPUT's latest checkpoint. */
  resume?: boolean | undefined;
  backend?: string | undefined;
  /** Stops after the current step; a checkpoint is written first. */
  signal?: AbortSignal | undefined;
  log?: ((line: string) => void) | undefined;
}

export interface ResolvedSettings {
  epochs: number;
  batchSize: number;
  microBatch: number;
  learningRate: number;
  lrMultiplierHead: number;
  lrMultiplierMultiModal: number;
  warmupFraction: number;
  weightDecay: number;
  maxGradNorm: number | undefined;
  imageSize: number;
  textLength: number;
  augment: boolean;
  negatives: number;
  seed: number;
  totalSteps: number;
  stepsPerEpoch: number;
  init: 'pretrained' | 'random';
}

export interface HistoryEntry {
  step: number;
  epoch: number;
  trainLoss: number;
  trainAccuracy: number;
  score: number;
  val: TaskMetrics;
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
  /** Stopped by the signal before the last step. */
  stopped: boolean;
}

interface Backbone {
  config: M3AEConfig;
  info: CheckpointInfo | undefined;
  path: string | undefined;
}

async function backbone(o: FinetuneOptions): Promise<Backbone> {
  if (o.checkpoint) {
    const path = await resolveCheckpointPath(o.checkpoint);
    const info = await readCheckpointInfo(path);
    if (info.metadata['task'] !== undefined) throw new TaskError(`${path} is a fine-tuned checkpoint; expected a pre-training checkpoint to fine-tune from`);
    return { config: resolveConfig(info.config, `${path} config`), info, path };
  }
  if ((o.init ?? 'pretrained') === 'pretrained') throw new TaskError('--checkpoint is required (a pre-training checkpoint); use --init random --preset NAME for the from-scratch baseline');
  if (!o.preset) throw new TaskError('--preset is required with --init random and no --checkpoint');
  return { config: presetConfig(o.preset), info: undefined, path: undefined };
}

function positive(name: string, v: number | undefined, integer: boolean): void {
  if (v === undefined) return;
  if (!(Number.isFinite(v) && v > 0 && (!integer || Number.isInteger(v)))) throw new TaskError(`${name}: got ${String(v)}; expected a positive ${integer ? 'integer' : 'number'}`);
}

/** Fine-tunes and returns the history and the selected (best-on-validation) checkpoint. */
export async function runFinetune(o: FinetuneOptions): Promise<FinetuneResult> {
  const t0 = performance.now();
  const log = o.log ?? ((): void => undefined);
  for (const [name, v, int] of [
    ['epochs', o.epochs, true], ['batchSize', o.batchSize, true], ['microBatch', o.microBatch, true], ['learningRate', o.learningRate, false],
    ['imageSize', o.imageSize, true], ['textLength', o.textLength, true], ['maxSteps', o.maxSteps, true], ['trainLimit', o.trainLimit, true],
    ['valLimit', o.valLimit, true], ['evalEvery', o.evalEvery, true], ['negatives', o.negatives, true],
  ] as const) positive(name, v, int);
  await chooseBackend({ backend: o.backend ?? 'auto' });
  const defaults = FINETUNE_DEFAULTS[o.task];
  const init = o.init ?? 'pretrained';
  const base = await backbone(o);
  const imageSize = o.imageSize ?? finetuneImageSize(base.config, defaults.baseImageSize);
  const textLength = o.textLength ?? finetuneTextLength(base.config, defaults);
  const config = parseConfig({ ...base.config, imageSize }, 'fine-tuning config');

  let tokenizer: TextTokenizer;
  if (o.tokenizer) tokenizer = await loadTokenizer(o.tokenizer);
  else if (base.info) tokenizer = await checkpointTokenizer(base.info);
  else throw new TaskError('--tokenizer is required without a --checkpoint that records one');
  checkTokenizerFits(tokenizer, config, o.checkpoint ?? `preset ${o.preset ?? ''}`);

  // The data: training and validation splits only (the test split is for `m3ae eval`).
  const skipLog = new SkipLog();
  const carve = o.carve ?? (o.task === 'vqa-rad' ? DEFAULT_VQA_RAD_CARVE : undefined);
  const src: TaskSource = { data: o.data, source: o.source, labelColumn: o.labelColumn, categories: o.categories, carve };
  let trainRaw = await readRawSplit(o.task, src, 'train', skipLog);
  let valRaw = await readRawSplit(o.task, src, 'val', skipLog);
  const limit = (r: RawSplit, n: number | undefined): RawSplit => {
    if (n === undefined) return r;
    return r.kind === 'retrieval' ? { kind: 'retrieval', pairs: r.pairs.slice(0, n) } : ({ ...r, examples: r.examples.slice(0, n) } as RawSplit);
  };
  trainRaw = limit(trainRaw, o.trainLimit);
  valRaw = limit(valRaw, o.valLimit ?? (o.task === 'retrieval' ? 100 : undefined));
  const vocab = vocabularyOf(trainRaw);
  const head: HeadSpec = { kind: defaults.head, outputs: vocab ? vocab.size : 1 };
  const images = new ImageStore(imageSize);
  const train = await prepareSplit(trainRaw, vocab, images, skipLog);
  const val = await prepareSplit(valRaw, vocab, images, skipLog);
  const nTrain = splitSize(train);
  if (nTrain < 2) throw new TaskError(`${o.task}: ${nTrain} usable training example(s) in ${o.data}; expected at least 2 (skipped: ${JSON.stringify(skipLog.counts())})`);
  if (splitSize(val) === 0) throw new TaskError(`${o.task}: no usable validation example in ${o.data}; model selection needs a validation split`);
  if (train.kind === 'retrieval' && train.set.texts.length < 2) throw new TaskError(`${o.task}: retrieval needs at least 2 distinct captions`);

  const meta: TaskMeta = {
    name: o.task,
    head,
    ...(vocab ? { labels: vocab.toJSON() } : {}),
    textLength,
    imageSize,
    ...(o.task === 'retrieval' ? { source: o.source ?? guessRetrievalSource(o.data) } : {}),
    ...(o.task === 'melinda' ? { labelColumn: o.labelColumn ?? 'p_meth_label' } : {}),
    ...(o.task === 'vqa-med-2019' ? { categories: o.categories ?? ['modality', 'plane', 'organ'] } : {}),
    ...(carve ? { carve } : {}),
  };

  const batchSize = Math.min(o.batchSize ?? defaults.batchSize, nTrain);
  const sampler = new EpochSampler({ size: nTrain, seed: o.seed ?? 0, globalBatchSize: batchSize, dropLast: false });
  const epochs = o.epochs ?? defaults.epochs;
  const totalSteps = Math.min(o.maxSteps ?? Infinity, epochs * sampler.stepsPerEpoch);
  const settings: ResolvedSettings = {
    epochs,
    batchSize,
    microBatch: o.microBatch ?? 8,
    learningRate: o.learningRate ?? defaults.learningRate,
    lrMultiplierHead: o.lrMultiplierHead ?? defaults.lrMultiplierHead,
    lrMultiplierMultiModal: o.lrMultiplierMultiModal ?? defaults.lrMultiplierMultiModal,
    warmupFraction: o.warmupFraction ?? defaults.warmupFraction,
    weightDecay: o.weightDecay ?? defaults.weightDecay,
    maxGradNorm: o.maxGradNorm,
    imageSize,
    textLength,
    augment: (o.augment ?? true) && defaults.randomResizedCrop,
    negatives: o.negatives ?? defaults.negatives ?? 15,
    seed: o.seed ?? 0,
    totalSteps,
    stepsPerEpoch: sampler.stepsPerEpoch,
    init,
  };

  const model = createDownstreamModel(config, head, { seed: settings.seed });
  try {
    if (init === 'pretrained' && base.path) {
      const manifest = modelManifest(base.config);
      const loaded = await loadCheckpoint(base.path, manifest);
      const report = loadPretrained(model, { config: base.config, params: unflatten(manifest, loaded.params) });
      log(`loaded ${report.loaded} pre-trained tensors from ${base.path}${report.resized.length ? ` (resized: ${report.resized.join(', ')})` : ''}; new: ${report.initialised.join(', ') || 'none'}`);
    }
    const opt = new AdamW(model.manifest, {
      learningRate: settings.learningRate,
      totalSteps,
      warmupSteps: settings.warmupFraction,
      weightDecay: settings.weightDecay,
      lrMultiplierHead: settings.lrMultiplierHead,
      lrMultiplierMultiModal: settings.lrMultiplierMultiModal,
      ...(settings.maxGradNorm !== undefined ? { maxGradNorm: settings.maxGradNorm } : {}),
    });
    let params = flattenDownstream(model);
    const output = resolve(o.output);
    const bestDir = join(output, 'best');
    const metadata = (extra: Record<string, string>): Record<string, string> => ({
      task: JSON.stringify(meta),
      finetune: JSON.stringify(settings),
      tokenizer: JSON.stringify({ path: resolve(tokenizer.path), hash: tokenizer.hash }),
      ...(base.path ? { pretrained: JSON.stringify({ path: base.path, params_sha256: base.info?.paramsSha256 ?? '' }) } : {}),
      ...extra,
    });
    let startStep = 0;
    let best = { step: -1, score: -Infinity, path: '', metrics: undefined as TaskMetrics | undefined };
    let history: HistoryEntry[] = [];
    if (o.resume) {
      const latest = await latestCheckpoint(output);
      if (latest) {
        const loaded = await loadCheckpoint(latest.path, model.manifest);
        if (loaded.metadata['task'] !== JSON.stringify(meta)) throw new TaskError(`${latest.path} was written for another task setup; refusing to resume (use another --output)`);
        params = loaded.params;
        setDownstreamFromFlat(model, params);
        if (loaded.optimizer) opt.setState({ step: loaded.optimizer.step, m: loaded.optimizer.m, v: loaded.optimizer.v });
        startStep = loaded.step;
        const saved = JSON.parse(loaded.metadata['selection'] ?? '{}') as { best?: typeof best; history?: HistoryEntry[] };
        if (saved.best) best = saved.best;
        history = saved.history ?? [];
        log(`resumed from ${latest.path} at step ${startStep}`);
      }
    }
    const saveLatest = async (step: number): Promise<void> => {
      await saveCheckpoint(
        output,
        { step, manifest: model.manifest, params, optimizer: opt.getState(), config, metadata: metadata({ sampler: JSON.stringify({ step }), selection: JSON.stringify({ best, history }) }) },
        { keepLast: 1 },
      );
    };

    let windowLoss = 0;
    let windowCorrect = 0;
    let windowCount = 0;
    const validate = async (step: number): Promise<void> => {
      const ev = await evaluateSplit(model, val, { tokenizer, images, textLength, batchSize: Math.max(settings.microBatch, 8) });
      const score = selectionScore(ev.metrics);
      const entry: HistoryEntry = {
        step,
        epoch: step / sampler.stepsPerEpoch,
        trainLoss: windowCount ? windowLoss / windowCount : NaN,
        trainAccuracy: windowCount ? windowCorrect / windowCount : NaN,
        score,
        val: ev.metrics,
      };
      history.push(entry);
      windowLoss = windowCorrect = windowCount = 0;
      const improved = score > best.score;
      if (improved) {
        const saved = await saveCheckpoint(bestDir, { step, manifest: model.manifest, params, config, metadata: metadata({ selection: JSON.stringify({ score, split: 'val' }) }) }, { keepLast: 1 });
        best = { step, score, path: saved.path, metrics: ev.metrics };
      }
      log(`step ${step} epoch ${entry.epoch.toFixed(2)}: train loss ${entry.trainLoss.toFixed(4)} acc ${(100 * entry.trainAccuracy).toFixed(1)}% | val score ${(100 * score).toFixed(2)}%${improved ? ' (best)' : ''}`);
    };

    const build = (indices: number[], step: number): Promise<DownstreamBatch> => {
      const common = { indices, images, tokenizer, textLength, seed: settings.seed, step, ...(settings.augment ? { augment: { scale: [0.9, 1.0] as const } } : {}) };
      return train.kind === 'retrieval'
        ? buildRetrievalBatch({ ...common, set: train.set, negatives: Math.min(settings.negatives, train.set.texts.length - 1) })
        : buildLabeledBatch({ ...common, examples: (train as Extract<SplitData, { kind: 'labeled' }>).examples });
    };

    const progressEvery = Math.max(1, Math.floor(sampler.stepsPerEpoch / 5));
    let stopped = false;
    let step = startStep;
    for (; step < totalSteps; step++) {
      if (o.signal?.aborted) {
        stopped = true;
        break;
      }
      const gb = sampler.batchAt(step);
      const indices = Array.from(gb.indices);
      const grads = new Float32Array(model.manifest.size);
      for (let s = 0; s < indices.length; s += settings.microBatch) {
        const micro = indices.slice(s, s + settings.microBatch);
        const r = computeTaskGradients(model, await build(micro, step), { normalizer: indices.length, training: true });
        for (let i = 0; i < grads.length; i++) grads[i] = (grads[i] as number) + (r.grads[i] as number);
        windowLoss += r.sum;
        windowCorrect += r.correct;
        windowCount += r.count;
      }
      opt.update(params, grads);
      setDownstreamFromFlat(model, params);
      const done = step + 1;
      const epochEnd = done % sampler.stepsPerEpoch === 0;
      if (epochEnd || done === totalSteps || (o.evalEvery !== undefined && done % o.evalEvery === 0)) {
        await validate(done);
        await saveLatest(done);
      } else if (done % progressEvery === 0) {
        log(`step ${done}/${totalSteps} (${((performance.now() - t0) / 1000).toFixed(0)} s): train loss ${(windowLoss / Math.max(1, windowCount)).toFixed(4)} acc ${((100 * windowCorrect) / Math.max(1, windowCount)).toFixed(1)}%`);
      }
    }
    if (stopped && step > startStep) await saveLatest(step);
    return {
      output,
      bestPath: best.path,
      bestStep: best.step,
      bestScore: best.score,
      bestMetrics: best.metrics,
      steps: step,
      trainExamples: nTrain,
      valExamples: splitSize(val),
      skipped: skipLog.counts() as Record<string, number>,
      seconds: (performance.now() - t0) / 1000,
      settings,
      history,
      meta,
      stopped,
    };
  } finally {
    model.dispose();
  }
}

function positiveInt(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got ${JSON.stringify(v)}`);
    return n;
  };
}

function nonNegativeInt(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be an integer >= 0, got ${JSON.stringify(v)}`);
    return n;
  };
}

function positiveNumber(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive number, got ${JSON.stringify(v)}`);
    return n;
  };
}

function fraction(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!(n >= 0 && n < 1)) throw new InvalidArgumentError(`${name} must be a number in [0, 1), got ${JSON.stringify(v)}`);
    return n;
  };
}

function oneOf<T extends string>(name: string, allowed: readonly T[]): (v: string) => T {
  return (v) => {
    if (!(allowed as readonly string[]).includes(v)) throw new InvalidArgumentError(`${name} must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
    return v as T;
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
  epochs?: number;
  batchSize?: number;
  microBatch?: number;
  lr?: number;
  lrHead?: number;
  lrMultiModal?: number;
  warmup?: number;
  weightDecay?: number;
  clipNorm?: number;
  imageSize?: number;
  textLength?: number;
  augment: boolean;
  negatives?: number;
  seed: number;
  maxSteps?: number;
  trainLimit?: number;
  valLimit?: number;
  evalEvery?: number;
  resume: boolean;
  backend?: string;
  json?: string;
}

/** `m3ae finetune <task> --checkpoint DIR --data PATH [--output DIR] ...`. */
export function registerFinetune(program: Command): void {
  const d = FINETUNE_DEFAULTS;
  program
    .command('finetune')
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
    .option('--val-fraction <x>', 'VQA-RAD / MedPix / manifest: fraction of training items carved out (by image) for validation', fraction('--val-fraction'))
    .option('--holdout-fraction <x>', 'also carve a held-out split (evaluate it with m3ae eval --split holdout)', fraction('--holdout-fraction'))
    .option('--carve-seed <n>', 'seed of the carve', nonNegativeInt('--carve-seed'), 0)
    .option('--epochs <n>', `epochs (official: VQA-RAD ${d['vqa-rad'].epochs}, SLAKE ${d.slake.epochs}, VQA-Med ${d['vqa-med-2019'].epochs}, MELINDA ${d.melinda.epochs}, retrieval ${d.retrieval.epochs})`, positiveInt('--epochs'))
    .option('--batch-size <n>', 'global batch (official: 64 / 32 / 32 / 16 / 256)', positiveInt('--batch-size'))
    .option('--micro-batch <n>', 'examples per forward/backward pass (memory only; same result)', positiveInt('--micro-batch'))
    .option('--lr <x>', 'base learning rate (official 5e-6)', positiveNumber('--lr'))
    .option('--lr-head <x>', 'head learning-rate multiplier (official: VQA 50, MELINDA 10, retrieval 5)', positiveNumber('--lr-head'))
    .option('--lr-multi-modal <x>', 'fusion learning-rate multiplier (official 5)', positiveNumber('--lr-multi-modal'))
    .option('--warmup <x>', 'warm-up fraction of the steps (official 0.1)', fraction('--warmup'))
    .option('--weight-decay <x>', 'AdamW weight decay (official 0.01)', (v: string) => {
      const n = Number(v);
      if (!(n >= 0)) throw new InvalidArgumentError(`--weight-decay must be a number >= 0, got ${JSON.stringify(v)}`);
      return n;
    })
    .option('--clip-norm <x>', 'clip the gradient norm (off by default, as the official run)', positiveNumber('--clip-norm'))
    .option('--image-size <n>', 'image side (default: 384 scaled to the preset, e.g. small 176)', positiveInt('--image-size'))
    .option('--text-length <n>', 'token capacity of questions / captions (official 32 VQA, 128 MELINDA, 40 retrieval)', positiveInt('--text-length'))
    .option('--no-augment', 'centre crops only (the official runs use random-resized crops except on VQA-RAD)')
    .option('--negatives <n>', 'retrieval: captions per image besides the true one (official 15)', positiveInt('--negatives'))
    .option('--seed <n>', 'seed of order, crops, negatives, dropout and new layers', nonNegativeInt('--seed'), 0)
    .option('--max-steps <n>', 'stop after n optimizer steps', positiveInt('--max-steps'))
    .option('--train-limit <n>', 'use the first n training examples', positiveInt('--train-limit'))
    .option('--val-limit <n>', 'validate on the first n examples (retrieval: default 100)', positiveInt('--val-limit'))
    .option('--eval-every <n>', 'validate every n steps too (always at each epoch end)', positiveInt('--eval-every'))
    .option('--resume', 'continue from the output directory\'s latest checkpoint', false)
    .option('--backend <name>', 'TensorFlow.js backend (auto, node-gpu, node, wasm, cpu)')
    .option('--json <file>', 'write the result (settings, history, best) as JSON')
    .action(async (task: DownstreamTaskName, opts: FinetuneCliOptions) => {
      const ac = new AbortController();
      const onSignal = (): void => ac.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const carve: CarveSpec | undefined =
        opts.valFraction !== undefined || opts.holdoutFraction !== undefined || opts.carveSeed !== 0
          ? { seed: opts.carveSeed, valFraction: opts.valFraction ?? (task === 'vqa-rad' ? DEFAULT_VQA_RAD_CARVE.valFraction : 0.1), testFraction: opts.holdoutFraction ?? 0 }
          : undefined;
      try {
        const r = await runFinetune({
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
          epochs: opts.epochs,
          batchSize: opts.batchSize,
          microBatch: opts.microBatch,
          learningRate: opts.lr,
          lrMultiplierHead: opts.lrHead,
          lrMultiplierMultiModal: opts.lrMultiModal,
          warmupFraction: opts.warmup,
          weightDecay: opts.weightDecay,
          maxGradNorm: opts.clipNorm,
          imageSize: opts.imageSize,
          textLength: opts.textLength,
          augment: opts.augment,
          negatives: opts.negatives,
          seed: opts.seed,
          maxSteps: opts.maxSteps,
          trainLimit: opts.trainLimit,
          valLimit: opts.valLimit,
          evalEvery: opts.evalEvery,
          resume: opts.resume,
          backend: opts.backend,
          signal: ac.signal,
          log: (line) => process.stderr.write(line + '\n'),
        });
        if (r.stopped) process.exitCode = 130;
        const summary = { task, output: r.output, best: { path: r.bestPath, step: r.bestStep, valScore: r.bestScore }, steps: r.steps, train: r.trainExamples, val: r.valExamples, skipped: r.skipped, seconds: Math.round(r.seconds), stopped: r.stopped };
        process.stdout.write(JSON.stringify(summary) + '\n');
        if (opts.json) writeFileSync(opts.json, JSON.stringify(r, null, 2) + '\n');
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}
