import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { CARVE_GROUP_BY, RETRIEVAL_SOURCES, type CarveGroupBy, type CarveSpec, type RetrievalSource } from '@m3ae/data';
import { DOWNSTREAM_TASKS, TASK_INPUTS, VQA_LOSSES, type DownstreamTaskName, type TaskInputs, type VqaLoss } from '@m3ae/model';
import { ConfigError, loadRunConfig, type RunConfig, type TensorEncoding } from '@m3ae/protocol';
import { HEAD_BIASES, type FinetuneOptions, type HeadBias } from './finetune.js';

/** Whether a run configuration fine-tunes a downstream task (rather than pre-training). */
export function isTaskRun(config: RunConfig): boolean {
  return config.task.name !== 'pretrain';
}

/**
 * The fine-tuning plan options of a run configuration's `task` section — the same options `m3ae finetune` takes, so a
 * distributed run and a single-process one with the same settings train the same model. The optimisation settings
 * come from `training` (unset: the task's official ones); the seed is the run's.
 */
export function finetuneOptionsFromRun(config: RunConfig): FinetuneOptions {
  const t = config.task;
  const tr = config.training;
  const bad = (field: string, value: unknown, expected: string): never => {
    throw new ConfigError(`task.${field} = ${JSON.stringify(value)}: expected ${expected}`);
  };
  if (!(DOWNSTREAM_TASKS as readonly string[]).includes(t.name)) bad('name', t.name, `pretrain or one of ${DOWNSTREAM_TASKS.join(', ')}`);
  if (!t.data) bad('data', t.data, "the task's dataset root (a VQA-RAD / SLAKE / VQA-Med 2019 / MELINDA folder, a ROCO or MedPix root, or a manifest)");
  if (t.source !== undefined && !(RETRIEVAL_SOURCES as readonly string[]).includes(t.source)) bad('source', t.source, `one of ${RETRIEVAL_SOURCES.join(', ')}`);
  if (t.vqaLoss !== undefined && !(VQA_LOSSES as readonly string[]).includes(t.vqaLoss)) bad('vqaLoss', t.vqaLoss, `one of ${VQA_LOSSES.join(', ')}`);
  if (t.inputs !== undefined && !(TASK_INPUTS as readonly string[]).includes(t.inputs)) bad('inputs', t.inputs, `one of ${TASK_INPUTS.join(', ')}`);
  if (t.headBias !== undefined && !(HEAD_BIASES as readonly string[]).includes(t.headBias)) bad('headBias', t.headBias, `one of ${HEAD_BIASES.join(', ')}`);
  if (t.carveBy !== undefined && !(CARVE_GROUP_BY as readonly string[]).includes(t.carveBy)) bad('carveBy', t.carveBy, `one of ${CARVE_GROUP_BY.join(', ')}`);
  if (t.init === 'pretrained' && !t.checkpoint) throw new ConfigError('--checkpoint (task.checkpoint) is required: a pre-training checkpoint to fine-tune from (or --init random --preset NAME; task.init: random with task.preset)');
  return {
    task: t.name as DownstreamTaskName,
    data: t.data as string,
    checkpoint: t.checkpoint,
    init: t.init,
    preset: t.preset,
    tokenizer: t.tokenizer,
    source: t.source as RetrievalSource | undefined,
    labelColumn: t.labelColumn,
    categories: t.categories,
    carve: t.carve,
    carveBy: t.carveBy as CarveGroupBy | undefined,
    epochs: tr.epochs,
    globalBatch: tr.globalBatch,
    microBatch: tr.microBatch,
    learningRate: tr.learningRate,
    lrMultiplierHead: tr.lrMultiplierHead,
    lrMultiplierMultiModal: tr.lrMultiplierMultiModal,
    warmupFraction: tr.warmupFraction,
    weightDecay: tr.weightDecay,
    clipNorm: tr.clipNorm,
    imageSize: t.imageSize,
    textLength: t.textLength,
    augment: t.augment,
    negatives: t.negatives,
    seed: config.seed,
    steps: tr.steps,
    trainLimit: t.trainLimit,
    valLimit: t.valLimit,
    evalEvery: t.evalEvery,
    vqaLoss: t.vqaLoss as VqaLoss | undefined,
    inputs: t.inputs as TaskInputs | undefined,
    headBias: t.headBias as HeadBias | undefined,
  };
}

/** A fine-tuning run as `m3ae finetune` takes it: the plan's options and where the run writes. */
export interface FinetuneRunOptions extends FinetuneOptions {
  /** Checkpoints (the latest, for resuming) and `best/` (selected on validation). */
  output: string;
  backend?: string | undefined;
  /** Write the latest checkpoint every n steps as well as at the end. @defaultValue 100 */
  checkpointEvery?: number | undefined;
  /** The Redis of a run on workers (default: the environment's). */
  redisUrl?: string | undefined;
  /** How gradients are exchanged and reduced (`training.gradEncoding`, `microBatchesPerJob`, `shards`): never the result's meaning. */
  gradEncoding?: TensorEncoding | undefined;
  microBatchesPerJob?: number | undefined;
  shards?: number | undefined;
}

/**
 * The run configuration of a fine-tuning run — the inverse of {@link finetuneOptionsFromRun}: what `m3ae finetune`
 * trains in one process, on local workers, or what `m3ae coordinator` / `m3ae worker` read from a file.
 */
export function finetuneRunConfig(o: FinetuneRunOptions, env: NodeJS.ProcessEnv = process.env): RunConfig {
  const defined = (r: Record<string, unknown>): Record<string, unknown> => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined));
  // The grouping of a carve travels as task.carveBy (one name in the file, the environment and the flag).
  const given: Partial<CarveSpec> = o.carve ?? {};
  const { groupBy, ...carve } = given;
  const task = defined({
    name: o.task,
    data: resolve(o.data),
    checkpoint: o.checkpoint ? resolve(o.checkpoint) : undefined,
    init: o.init,
    preset: o.preset,
    tokenizer: o.tokenizer ? resolve(o.tokenizer) : undefined,
    source: o.source,
    labelColumn: o.labelColumn,
    categories: o.categories,
    carve: o.carve ? carve : undefined,
    carveBy: o.carveBy ?? groupBy,
    imageSize: o.imageSize,
    textLength: o.textLength,
    augment: o.augment,
    negatives: o.negatives,
    trainLimit: o.trainLimit,
    valLimit: o.valLimit,
    evalEvery: o.evalEvery,
    vqaLoss: o.vqaLoss,
    inputs: o.inputs,
    headBias: o.headBias,
  });
  const base: Record<string, unknown> = {
    runId: `finetune-${o.task}-${randomBytes(3).toString('hex')}`,
    seed: o.seed ?? 0,
    task,
    training: defined({
      steps: o.steps,
      epochs: o.epochs,
      globalBatch: o.globalBatch,
      microBatch: o.microBatch,
      learningRate: o.learningRate,
      lrMultiplierHead: o.lrMultiplierHead,
      lrMultiplierMultiModal: o.lrMultiplierMultiModal,
      warmupFraction: o.warmupFraction,
      weightDecay: o.weightDecay,
      clipNorm: o.clipNorm,
      gradEncoding: o.gradEncoding,
      microBatchesPerJob: o.microBatchesPerJob,
      shards: o.shards,
    }),
    compute: { backend: o.backend ?? 'auto' },
    checkpoint: { dir: resolve(o.output), every: o.checkpointEvery ?? 100, keep: 1 },
  };
  // The environment may point at Redis; the rest of the run is these options.
  const redisEnv = Object.fromEntries(Object.entries(env).filter(([k]) => k.includes('REDIS')));
  return loadRunConfig({ base, env: redisEnv, ...(o.redisUrl ? { overrides: { 'redis.url': { value: o.redisUrl, source: '--redis-url' } } } : {}) });
}
