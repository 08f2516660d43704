import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import {
  buildLabeledBatch,
  buildRetrievalBatch,
  CARVE_GROUP_BY,
  DEFAULT_VQA_RAD_CARVE,
  EpochSampler,
  ImageStore,
  loadTokenizer,
  SkipLog,
  type CarveGroupBy,
  type CarveSpec,
  type DownstreamBatch,
  type RetrievalSource,
  type TextTokenizer,
} from '@m3ae/data';
import {
  createDownstreamModel,
  FINETUNE_DEFAULTS,
  flattenDownstream,
  HEAD_PREFIX,
  setDownstreamFromFlat,
  vqaLossOf,
  finetuneImageSize,
  finetuneTextLength,
  loadCheckpoint,
  loadPretrained,
  modelManifest,
  parseConfig,
  presetConfig,
  readCheckpointInfo,
  resolveCheckpointPath,
  resolveConfig,
  unflatten,
  type CheckpointInfo,
  type DownstreamModel,
  type DownstreamTaskName,
  type HeadKind,
  type HeadSpec,
  type M3AEConfig,
  type TaskInputs,
  type VqaLoss,
  TASK_INPUTS,
  VQA_LOSSES,
} from '@m3ae/model';
import {
  checkpointTokenizer,
  checkTokenizerFits,
  guessRetrievalSource,
  prepareSplit,
  readRawSplit,
  splitSize,
  TaskError,
  vocabularyOf,
  type RawSplit,
  type SplitData,
  type TaskMeta,
  type TaskSource,
} from './task-data.js';

/**
 * A fine-tuning run, resolved once from its options: the backbone configuration, the tokenizer, the training and
 * validation splits, the answer / class vocabulary, the task head and every setting (the official ones by default,
 * `FINETUNE_DEFAULTS`). `m3ae finetune` (one process), the coordinator (parameters, optimizer, validation) and every
 * worker (batches of the training split) build the same plan from the same options, so they agree on the parameter
 * manifest, the examples and their order; the dataset hash below lets a worker prove it.
 */
export interface FinetuneOptions {
  task: DownstreamTaskName;
  data: string;
  /** A pre-training checkpoint (file or directory); its configuration is the backbone's. */
  checkpoint?: string | undefined;
  /** `random` keeps the seeded initialisation (the from-scratch baseline). @defaultValue 'pretrained' */
  init?: 'pretrained' | 'random' | undefined;
  /** Model preset when no checkpoint is given (random initialisation only). */
  preset?: string | undefined;
  tokenizer?: string | undefined;
  source?: RetrievalSource | undefined;
  labelColumn?: string | undefined;
  categories?: string[] | undefined;
  carve?: CarveSpec | undefined;
  /**
   * VQA-RAD: what a carve group is (`CarveSpec.groupBy`, over `carve` or the default carve): `image` (no image in two
   * splits) or `question` (each question its own group, exact duplicates together; held-out images also occur in
   * training, as in VQA-RAD's official test set). Only VQA-RAD carves by question.
   * @defaultValue 'image'
   */
  carveBy?: CarveGroupBy | undefined;
  epochs?: number | undefined;
  /** Examples per optimizer step. @defaultValue the task's official batch size */
  globalBatch?: number | undefined;
  /** Examples per forward/backward pass (memory); does not change the result. @defaultValue 8 */
  microBatch?: number | undefined;
  learningRate?: number | undefined;
  lrMultiplierHead?: number | undefined;
  lrMultiplierMultiModal?: number | undefined;
  warmupFraction?: number | undefined;
  weightDecay?: number | undefined;
  /** Clip the global gradient norm to this (0 or unset: no clipping, as the official runs). */
  clipNorm?: number | undefined;
  imageSize?: number | undefined;
  textLength?: number | undefined;
  /** Random-resized crops where the official run uses them. @defaultValue true */
  augment?: boolean | undefined;
  negatives?: number | undefined;
  seed?: number | undefined;
  /** At most this many optimizer steps (default: epochs × steps per epoch; the schedule spans them). */
  steps?: number | undefined;
  /** Use the first n training examples (benchmark sizes). */
  trainLimit?: number | undefined;
  /** Validate on the first n validation examples (retrieval: n images). @defaultValue all (retrieval: 100) */
  valLimit?: number | undefined;
  /** Validate every n steps as well as at the end of every epoch. */
  evalEvery?: number | undefined;
  /** VQA tasks: the answer loss (`VqaLoss`). @defaultValue 'bce-sum' (the official one) */
  vqaLoss?: VqaLoss | undefined;
  /** What reaches the head: `text` trains the question-only baseline (`TaskInputs`). @defaultValue 'image+text' */
  inputs?: TaskInputs | undefined;
  /**
   * The initial bias of the head's last layer (`HeadBias`): `zero` (the official initialisation) or `prior` — each
   * answer / class starts at its training-split frequency (log frequency under softmax, its logit under BCE), so
   * the first steps need not learn the answer prior and the backbone's gradient is not spent on it.
   * @defaultValue 'zero'
   */
  headBias?: HeadBias | undefined;
}

/** The head's initial last-layer bias: `zero` (official) or `prior` (the training answers' frequencies). */
export const HEAD_BIASES = ['zero', 'prior'] as const;
export type HeadBias = (typeof HEAD_BIASES)[number];

/**
 * The answer-prior bias of a labelled head over `outputs` labels from the training labels (−1: not in the vocabulary,
 * ignored): log(count / n) for a softmax loss, log(p / (1 − p)) for a binary cross-entropy per answer, so the head's
 * first prediction is the training prior. Every label of a training-derived vocabulary occurs at least once; a label
 * that does not gets the frequency of half an occurrence.
 */
export function answerPriorBias(labels: ArrayLike<number>, outputs: number, loss: 'softmax' | 'bce'): Float32Array {
  const counts = new Float64Array(outputs);
  let n = 0;
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i] as number;
    if (l < 0) continue;
    if (!Number.isInteger(l) || l >= outputs) throw new RangeError(`labels[${i}]: got ${l}; expected -1 or an index in [0, ${outputs})`);
    counts[l] = (counts[l] as number) + 1;
    n++;
  }
  const out = new Float32Array(outputs);
  if (n === 0) return out;
  for (let k = 0; k < outputs; k++) {
    const p = Math.max(counts[k] as number, 0.5) / n;
    out[k] = loss === 'softmax' ? Math.log(p) : Math.log(p / Math.max(1 - p, 0.5 / n));
  }
  return out;
}

export interface ResolvedSettings {
  epochs: number;
  globalBatch: number;
  microBatch: number;
  learningRate: number;
  lrMultiplierHead: number;
  lrMultiplierMultiModal: number;
  warmupFraction: number;
  weightDecay: number;
  /** 0: no clipping. */
  clipNorm: number;
  imageSize: number;
  textLength: number;
  augment: boolean;
  negatives: number;
  seed: number;
  /** Optimizer steps of the run. */
  steps: number;
  stepsPerEpoch: number;
  init: 'pretrained' | 'random';
  headBias: HeadBias;
}

export interface Backbone {
  /** The pre-trained model's configuration (its own image size). */
  config: M3AEConfig;
  info: CheckpointInfo | undefined;
  path: string | undefined;
}

export interface FinetunePlan {
  options: FinetuneOptions;
  backbone: Backbone;
  /** The fine-tuning model's configuration (the backbone's at the fine-tuning image size). */
  config: M3AEConfig;
  head: HeadSpec;
  tokenizer: TextTokenizer;
  images: ImageStore;
  train: SplitData;
  /** Undefined when the plan was made for training only (a worker). */
  val: SplitData | undefined;
  meta: TaskMeta;
  settings: ResolvedSettings;
  skipLog: SkipLog;
  /** Identifies the task setup and the training examples in order (checked by workers and on resume). */
  datasetHash: string;
}

/** The objective a task head trains, named as the official `loss_names` (and the wire protocol's objectives). */
export function taskObjective(kind: HeadKind): 'vqa' | 'cls' | 'irtr' {
  return kind === 'vqa' ? 'vqa' : kind === 'classification' ? 'cls' : 'irtr';
}

async function backboneOf(o: FinetuneOptions): Promise<Backbone> {
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

function limitSplit(r: RawSplit, n: number | undefined): RawSplit {
  if (n === undefined) return r;
  return r.kind === 'retrieval' ? { kind: 'retrieval', pairs: r.pairs.slice(0, n) } : ({ ...r, examples: r.examples.slice(0, n) } as RawSplit);
}

function hashOf(meta: TaskMeta, train: SplitData): string {
  const h = createHash('sha256').update(JSON.stringify(meta));
  if (train.kind === 'labeled') for (const e of train.examples) h.update(`\n${e.imagePath}\t${e.text}\t${e.label}`);
  else for (const p of train.set.pairs) h.update(`\n${p.imagePath}\t${p.text}`);
  return `task-${h.digest('hex')}`;
}

export interface PlanOptions {
  /** `train` only (a worker computes gradients; it never validates). @defaultValue 'train+val' */
  splits?: 'train' | 'train+val';
}

/**
 * The carve of a fine-tuning run: `carve` (VQA-RAD: the default carve when unset) grouped as `carveBy` says. `image`,
 * the default, is left out of the result so that a run's recorded task (and its dataset hash) is what it was before
 * the option existed.
 */
export function resolveCarve(o: Pick<FinetuneOptions, 'task' | 'carve' | 'carveBy'>): CarveSpec | undefined {
  const groups = CARVE_GROUP_BY as readonly string[];
  if (o.carveBy !== undefined && !groups.includes(o.carveBy)) throw new TaskError(`carveBy: got ${JSON.stringify(o.carveBy)}; expected one of ${CARVE_GROUP_BY.join(', ')}`);
  if (o.carve?.groupBy !== undefined && !groups.includes(o.carve.groupBy)) throw new TaskError(`carve.groupBy: got ${JSON.stringify(o.carve.groupBy)}; expected one of ${CARVE_GROUP_BY.join(', ')}`);
  if (o.carveBy !== undefined && o.carve?.groupBy !== undefined && o.carveBy !== o.carve.groupBy) {
    throw new TaskError(`carveBy: got ${JSON.stringify(o.carveBy)} with carve.groupBy ${JSON.stringify(o.carve.groupBy)}; expected them to agree (or one of them unset)`);
  }
  const groupBy = o.carveBy ?? o.carve?.groupBy ?? 'image';
  if (groupBy === 'question' && o.task !== 'vqa-rad') {
    throw new TaskError(`carveBy: got "question" for ${o.task}; expected it only for vqa-rad (the only task whose validation split is carved from questions)`);
  }
  const carve = o.carve ?? (o.task === 'vqa-rad' ? DEFAULT_VQA_RAD_CARVE : undefined);
  if (!carve) return undefined;
  const rest: CarveSpec = { seed: carve.seed, valFraction: carve.valFraction, ...(carve.testFraction !== undefined ? { testFraction: carve.testFraction } : {}) };
  return groupBy === 'question' ? { ...rest, groupBy } : rest;
}

/** Resolves a fine-tuning run (reads the splits' annotations and checks every image decodes). */
export async function planFinetune(o: FinetuneOptions, p: PlanOptions = {}): Promise<FinetunePlan> {
  for (const [name, v, int] of [
    ['epochs', o.epochs, true], ['globalBatch', o.globalBatch, true], ['microBatch', o.microBatch, true], ['learningRate', o.learningRate, false],
    ['imageSize', o.imageSize, true], ['textLength', o.textLength, true], ['steps', o.steps, true], ['trainLimit', o.trainLimit, true],
    ['valLimit', o.valLimit, true], ['evalEvery', o.evalEvery, true], ['negatives', o.negatives, true],
  ] as const) positive(name, v, int);
  const defaults = FINETUNE_DEFAULTS[o.task];
  if (!defaults) throw new TaskError(`task: got ${JSON.stringify(o.task)}; expected one of ${Object.keys(FINETUNE_DEFAULTS).join(', ')}`);
  if (o.vqaLoss !== undefined && !(VQA_LOSSES as readonly string[]).includes(o.vqaLoss)) throw new TaskError(`vqaLoss: got ${JSON.stringify(o.vqaLoss)}; expected one of ${VQA_LOSSES.join(', ')}`);
  if (o.vqaLoss !== undefined && defaults.head !== 'vqa') throw new TaskError(`vqaLoss: got ${JSON.stringify(o.vqaLoss)} for ${o.task}; expected it only for a VQA task`);
  if (o.inputs !== undefined && !(TASK_INPUTS as readonly string[]).includes(o.inputs)) throw new TaskError(`inputs: got ${JSON.stringify(o.inputs)}; expected one of ${TASK_INPUTS.join(', ')}`);
  if (o.headBias !== undefined && !(HEAD_BIASES as readonly string[]).includes(o.headBias)) throw new TaskError(`headBias: got ${JSON.stringify(o.headBias)}; expected one of ${HEAD_BIASES.join(', ')}`);
  if (o.headBias === 'prior' && defaults.head === 'retrieval') throw new TaskError(`headBias: got "prior" for ${o.task}; expected it only for a VQA or classification task (a retrieval head has one output)`);
  const init = o.init ?? 'pretrained';
  const base = await backboneOf(o);
  const imageSize = o.imageSize ?? finetuneImageSize(base.config, defaults.baseImageSize);
  const textLength = o.textLength ?? finetuneTextLength(base.config, defaults);
  const config = parseConfig({ ...base.config, imageSize }, 'fine-tuning config');

  let tokenizer: TextTokenizer;
  if (o.tokenizer) tokenizer = await loadTokenizer(o.tokenizer);
  else if (base.info) tokenizer = await checkpointTokenizer(base.info);
  else throw new TaskError('--tokenizer is required without a --checkpoint that records one');
  checkTokenizerFits(tokenizer, config, o.checkpoint ?? `preset ${o.preset ?? ''}`);

  // Training and validation splits only: the test split is for `m3ae eval`.
  const skipLog = new SkipLog();
  const carve = resolveCarve(o);
  const src: TaskSource = { data: o.data, source: o.source, labelColumn: o.labelColumn, categories: o.categories, carve };
  const trainRaw = limitSplit(await readRawSplit(o.task, src, 'train', skipLog), o.trainLimit);
  const vocab = vocabularyOf(trainRaw);
  const head: HeadSpec = {
    kind: defaults.head,
    outputs: vocab ? vocab.size : 1,
    ...(o.vqaLoss !== undefined ? { loss: o.vqaLoss } : {}),
    ...(o.inputs !== undefined && o.inputs !== 'image+text' ? { inputs: o.inputs } : {}),
  };
  const images = new ImageStore(imageSize);
  const train = await prepareSplit(trainRaw, vocab, images, skipLog);
  let val: SplitData | undefined;
  if ((p.splits ?? 'train+val') === 'train+val') {
    const valRaw = limitSplit(await readRawSplit(o.task, src, 'val', skipLog), o.valLimit ?? (o.task === 'retrieval' ? 100 : undefined));
    val = await prepareSplit(valRaw, vocab, images, skipLog);
    if (splitSize(val) === 0) throw new TaskError(`${o.task}: no usable validation example in ${o.data}; model selection needs a validation split`);
  }
  const nTrain = splitSize(train);
  if (nTrain < 2) throw new TaskError(`${o.task}: ${nTrain} usable training example(s) in ${o.data}; expected at least 2 (skipped: ${JSON.stringify(skipLog.counts())})`);
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

  const globalBatch = Math.min(o.globalBatch ?? defaults.globalBatch, nTrain);
  const stepsPerEpoch = new EpochSampler({ size: nTrain, seed: o.seed ?? 0, globalBatchSize: globalBatch, dropLast: false }).stepsPerEpoch;
  const epochs = o.epochs ?? defaults.epochs;
  const settings: ResolvedSettings = {
    epochs,
    globalBatch,
    microBatch: o.microBatch ?? 8,
    learningRate: o.learningRate ?? defaults.learningRate,
    lrMultiplierHead: o.lrMultiplierHead ?? defaults.lrMultiplierHead,
    lrMultiplierMultiModal: o.lrMultiplierMultiModal ?? defaults.lrMultiplierMultiModal,
    warmupFraction: o.warmupFraction ?? defaults.warmupFraction,
    weightDecay: o.weightDecay ?? defaults.weightDecay,
    clipNorm: o.clipNorm ?? 0,
    imageSize,
    textLength,
    augment: (o.augment ?? true) && defaults.randomResizedCrop,
    negatives: o.negatives ?? defaults.negatives ?? 15,
    seed: o.seed ?? 0,
    steps: Math.min(o.steps ?? Infinity, epochs * stepsPerEpoch),
    stepsPerEpoch,
    init,
    headBias: o.headBias ?? 'zero',
  };
  return { options: o, backbone: base, config, head, tokenizer, images, train, val, meta, settings, skipLog, datasetHash: hashOf(meta, train) };
}

/** The sampler of a plan's training split (every step's examples; the last batch of an epoch is kept). */
export function trainSampler(plan: FinetunePlan): EpochSampler {
  return new EpochSampler({ size: splitSize(plan.train), seed: plan.settings.seed, globalBatchSize: plan.settings.globalBatch, dropLast: false });
}

/**
 * The plan's model: the seeded initialisation, with the pre-trained backbone loaded for `init: pretrained`
 * (`pretrained: false` skips the load, for a worker whose parameters come from the coordinator).
 */
export async function createTaskModel(plan: FinetunePlan, o: { pretrained?: boolean; log?: (line: string) => void } = {}): Promise<DownstreamModel> {
  const model = createDownstreamModel(plan.config, plan.head, { seed: plan.settings.seed });
  if (plan.settings.headBias === 'prior' && plan.train.kind === 'labeled') {
    const name = `${HEAD_PREFIX[plan.head.kind]}.3.bias`;
    const entry = model.manifest.entries.find((e) => e.name === name);
    if (!entry || entry.offset === null) throw new TaskError(`headBias prior: the model has no trainable ${name}`);
    const loss = plan.head.kind === 'vqa' && vqaLossOf(plan.head) !== 'softmax' ? 'bce' : 'softmax';
    const flat = await flattenDownstream(model);
    flat.set(answerPriorBias(plan.train.examples.map((e) => e.label), plan.head.outputs, loss), entry.offset);
    setDownstreamFromFlat(model, flat);
  }
  if ((o.pretrained ?? true) && plan.settings.init === 'pretrained' && plan.backbone.path) {
    try {
      const manifest = modelManifest(plan.backbone.config);
      const loaded = await loadCheckpoint(plan.backbone.path, manifest);
      const report = loadPretrained(model, { config: plan.backbone.config, params: unflatten(manifest, loaded.params) });
      o.log?.(
        `loaded ${report.loaded} pre-trained tensors from ${plan.backbone.path}${report.resized.length ? ` (resized: ${report.resized.join(', ')})` : ''}; new: ${report.initialised.join(', ') || 'none'}`,
      );
    } catch (e) {
      model.dispose();
      throw e;
    }
  }
  return model;
}

/**
 * The training batch of `indices` at `step`: every random choice (crop, negatives, dropout) a function of
 * (seed, step, example index), so any split of a step's examples into micro-batches, on any worker, gives the
 * same examples.
 */
export async function buildTrainBatch(plan: FinetunePlan, indices: number[], step: number): Promise<DownstreamBatch> {
  const s = plan.settings;
  const common = { indices, images: plan.images, tokenizer: plan.tokenizer, textLength: s.textLength, seed: s.seed, step, ...(s.augment ? { augment: { scale: [0.9, 1.0] as const } } : {}) };
  const train = plan.train;
  return train.kind === 'retrieval'
    ? buildRetrievalBatch({ ...common, set: train.set, negatives: Math.min(s.negatives, train.set.texts.length - 1) })
    : buildLabeledBatch({ ...common, examples: train.examples });
}

/**
 * Checkpoint metadata of a fine-tuning run: the task (what `m3ae eval` rebuilds), the settings, the tokenizer, the
 * backbone checkpoint — under `pretrained` when the parameters started from it, under `config_from` when only its
 * configuration was taken (`init: random` with a checkpoint, the from-scratch baseline of the same backbone).
 */
export function finetuneMetadata(plan: FinetunePlan): Record<string, string> {
  const backboneKey = plan.settings.init === 'pretrained' ? 'pretrained' : 'config_from';
  return {
    task: JSON.stringify(plan.meta),
    finetune: JSON.stringify(plan.settings),
    tokenizer: JSON.stringify({ path: resolve(plan.tokenizer.path), hash: plan.tokenizer.hash }),
    ...(plan.backbone.path ? { [backboneKey]: JSON.stringify({ path: plan.backbone.path, params_sha256: plan.backbone.info?.paramsSha256 ?? '' }) } : {}),
  };
}
