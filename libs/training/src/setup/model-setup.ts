import { loadTokenizer, openShardDataset, pretrainCounts, shardTokenizer, type ShardDataset, type TextTokenizer } from '@m3ae/data';
import { initialValues, modelManifest, numPatches, parameterSpecs, resolveConfig, trainingTextLength, type M3AEConfig } from '@m3ae/model';
import { ConfigError, pretrainTraining, type LossTriple, type RunConfig } from '@m3ae/protocol';
import { formatEvaluation, HeldOutEvaluator, type EvaluationEntry } from './held-out.js';
import { pretrainSchedule, type TrainingSetup } from './training-setup.js';

export interface ModelSetupOptions {
  log?: (line: string) => void;
  /** After each held-out evaluation (`evaluation.every` steps and the last step; none when `evaluation.every` is 0). */
  onEvaluate?: (entry: EvaluationEntry) => void;
}

/** The model configuration of a run: the preset with the run's overrides (validated by @m3ae/model). */
export function runModelConfig(config: RunConfig): M3AEConfig {
  return resolveConfig({ preset: config.model.preset, ...config.model.overrides }, 'model');
}

/** The tokenizer of a run: `data.tokenizer`, else the one `m3ae prepare` kept with the shards (hash checked). */
export function runTokenizerPath(config: RunConfig): string {
  if (config.data.tokenizer) return config.data.tokenizer;
  const dir = config.data.dir;
  const kept = dir ? shardTokenizer(dir) : undefined;
  if (kept) return kept;
  throw new ConfigError(
    `data.tokenizer is not set and ${dir ? `${dir} keeps no tokenizer (prepared without --tokenizer)` : 'data.dir is not set'}; set data.tokenizer (--tokenizer) to the tokenizer.json the dataset was prepared with`,
  );
}

/** Opens the run's dataset and tokenizer and checks them against the model configuration. */
export async function openRunData(config: RunConfig, model: M3AEConfig): Promise<{ dataset: ShardDataset; tokenizer: TextTokenizer }> {
  if (!config.data.dir) throw new ConfigError('data.dir is not set; expected a shard dataset written by m3ae prepare (or use m3ae train --local, which makes one)');
  const dataset = await openShardDataset(config.data.dir);
  const tokenizer = await loadTokenizer(runTokenizerPath(config));
  const bad = (field: string, value: unknown, expected: string, fix: string): never => {
    throw new ConfigError(`model.overrides.${field} = ${JSON.stringify(value)}: expected ${expected}; ${fix}`);
  };
  const set = (field: string, value: number): string => `set model.overrides.${field}: ${value} in the run configuration`;
  if (model.imageSize !== dataset.imageSize) {
    bad('imageSize', model.imageSize, `${dataset.imageSize}, the size ${config.data.dir} was prepared at`, `${set('imageSize', dataset.imageSize)}, or prepare the data at ${model.imageSize} px (m3ae prepare --image-size ${model.imageSize})`);
  }
  if (model.vocabSize < tokenizer.vocabSize) bad('vocabSize', model.vocabSize, `at least ${tokenizer.vocabSize}, the tokenizer's vocabulary`, set('vocabSize', tokenizer.vocabSize));
  if (model.padTokenId !== tokenizer.special.pad) bad('padTokenId', model.padTokenId, `${tokenizer.special.pad}, the tokenizer's pad id`, set('padTokenId', tokenizer.special.pad));
  return { dataset, tokenizer };
}

/**
 * The model's data-dependent sizes as a run's data has them: the image size the shards were prepared at, and the
 * tokenizer's vocabulary and pad id. `m3ae train --local` without a run file adopts them (as for its phantom corpus);
 * a run configuration states them, and {@link openRunData} refuses a mismatch.
 */
export async function dataModelOverrides(config: RunConfig): Promise<{ imageSize: number; vocabSize: number; padTokenId: number }> {
  if (!config.data.dir) throw new ConfigError('data.dir is not set; expected a shard dataset written by m3ae prepare');
  const dataset = await openShardDataset(config.data.dir);
  try {
    const tokenizer = await loadTokenizer(runTokenizerPath(config));
    return { imageSize: dataset.imageSize, vocabSize: tokenizer.vocabSize, padTokenId: tokenizer.special.pad };
  } finally {
    await dataset.close();
  }
}

/**
 * The real M3AE setup: parameter manifest and seeded initial values of the configured model (computed in
 * plain JavaScript: the trainer needs no TensorFlow.js), the shard dataset, exact normalizers from
 * `pretrainCounts`, and the model's AdamW. With `evaluation.every` > 0, a {@link HeldOutEvaluator} runs after every
 * `evaluation.every` steps and the last (with TensorFlow.js, in this process), logged and passed to `onEvaluate`.
 */
export async function modelSetup(config: RunConfig, options: ModelSetupOptions = {}): Promise<TrainingSetup> {
  const model = runModelConfig(config);
  const { dataset, tokenizer } = await openRunData(config, model);
  let evaluator: HeldOutEvaluator | undefined;
  try {
    if (config.evaluation.every > 0) evaluator = await HeldOutEvaluator.open(config, model, dataset, tokenizer);
  } catch (e) {
    await dataset.close();
    throw e;
  }
  if (evaluator) {
    options.log?.(`held-out evaluation every ${config.evaluation.every} steps on ${config.evaluation.data}; baselines: a unigram model of the training captions (entropy ${evaluator.unigram.entropy.toFixed(4)} nats/token; its loss on the held-out masked tokens is logged with each evaluation) for MLM, chance (50%) for ITM`);
  }
  const schedule = pretrainSchedule(config);
  const manifest = modelManifest(model);
  const specs = parameterSpecs(model);
  const fixedParams = new Map<string, Float32Array>();
  specs.forEach((spec, index) => {
    if (!spec.trainable) fixedParams.set(spec.name, initialValues(model, spec, config.seed, index));
  });
  const enabled = (o: keyof LossTriple): boolean => model.objectives[o].enabled;
  return {
    kind: 'model',
    manifest,
    modelConfig: model,
    fixedParams,
    datasetSize: dataset.size,
    datasetHash: dataset.datasetHash,
    objectiveWeights: {
      mlm: enabled('mlm') ? model.objectives.mlm.weight : 0,
      mim: enabled('mim') ? model.objectives.mim.weight : 0,
      itm: enabled('itm') ? model.objectives.itm.weight : 0,
    },
    schedule,
    initialParams: () => {
      const flat = new Float32Array(manifest.size);
      // Specs and manifest entries are index-aligned (the manifest is built from the specs).
      specs.forEach((spec, index) => {
        const offset = manifest.entries[index]?.offset;
        if (spec.trainable && typeof offset === 'number') flat.set(initialValues(model, spec, config.seed, index), offset);
      });
      return flat;
    },
    counts: async (slice) => {
      const c = await pretrainCounts({
        dataset,
        tokenizer,
        indices: slice.indices,
        positions: slice.positions,
        globalBatchSize: slice.globalBatchSize,
        step: slice.step,
        seed: slice.seed,
        maxTextLength: trainingTextLength(model),
        mlmProbability: model.mlmMaskRatio,
        mimMaskRatio: model.mimMaskRatio,
        numPatches: numPatches(model),
      });
      // A disabled objective counts nothing (as the model's own batchCounts).
      return { mlm: enabled('mlm') ? c.mlm : 0, mim: enabled('mim') ? c.mim : 0, itm: enabled('itm') ? c.itm : 0 };
    },
    optimizer: { layout: manifest, training: pretrainTraining(config) },
    ...(evaluator
      ? {
          afterStep: async (done: number, params: Float32Array): Promise<void> => {
            if (!evaluator.due(done, schedule.steps)) return;
            const entry = await evaluator.evaluate(done, params);
            options.log?.(formatEvaluation(entry));
            options.onEvaluate?.(entry);
          },
        }
      : {}),
    close: async () => {
      await evaluator?.close();
      await dataset.close();
    },
  };
}
