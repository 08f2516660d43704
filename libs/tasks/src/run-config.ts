import { RETRIEVAL_SOURCES, type RetrievalSource } from '@m3ae/data';
import { DOWNSTREAM_TASKS, type DownstreamTaskName } from '@m3ae/model';
import { ConfigError, type RunConfig } from '@m3ae/protocol';
import type { FinetuneOptions } from './finetune.js';

/** Whether a run configuration fine-tunes a downstream task (rather than pre-training). */
export function isTaskRun(config: RunConfig): boolean {
  return config.task.name !== 'pretrain';
}

/**
 * The fine-tuning plan options of a run configuration's `task` section — the same options `m3ae finetune` takes, so a
 * distributed run and a single-process one with the same settings train the same model. `training.microBatch` is
 * the examples per job; the seed is the run's.
 */
export function finetuneOptionsFromRun(config: RunConfig): FinetuneOptions {
  const t = config.task;
  const bad = (field: string, value: unknown, expected: string): never => {
    throw new ConfigError(`task.${field} = ${JSON.stringify(value)}: expected ${expected}`);
  };
  if (!(DOWNSTREAM_TASKS as readonly string[]).includes(t.name)) bad('name', t.name, `pretrain or one of ${DOWNSTREAM_TASKS.join(', ')}`);
  if (!t.data) bad('data', t.data, "the task's dataset root (a VQA-RAD / SLAKE / VQA-Med 2019 / MELINDA folder, a ROCO or MedPix root, or a manifest)");
  if (t.source !== undefined && !(RETRIEVAL_SOURCES as readonly string[]).includes(t.source)) bad('source', t.source, `one of ${RETRIEVAL_SOURCES.join(', ')}`);
  if (t.init === 'pretrained' && !t.checkpoint) bad('checkpoint', t.checkpoint, 'a pre-training checkpoint to fine-tune from (or task.init: random with task.preset)');
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
    epochs: t.epochs,
    batchSize: t.batchSize,
    microBatch: config.training.microBatch,
    learningRate: t.learningRate,
    lrMultiplierHead: t.lrMultiplierHead,
    lrMultiplierMultiModal: t.lrMultiplierMultiModal,
    warmupFraction: t.warmupFraction,
    weightDecay: t.weightDecay,
    maxGradNorm: t.clipNorm,
    imageSize: t.imageSize,
    textLength: t.textLength,
    augment: t.augment,
    negatives: t.negatives,
    seed: config.seed,
    maxSteps: t.maxSteps,
    trainLimit: t.trainLimit,
    valLimit: t.valLimit,
    evalEvery: t.evalEvery,
  };
}
