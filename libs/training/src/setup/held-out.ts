import { openShardDataset, type ShardDataset, type TextTokenizer } from '@m3ae/data';
import { chooseBackend, createModel, setParamsFromFlat, trainingTextLength, type M3AEConfig, type M3AEModel } from '@m3ae/model';
import { ConfigError, type RunConfig } from '@m3ae/protocol';
import { heldOutEvaluation, ITM_CHANCE, UnigramBaseline, type HeldOutEvaluation } from '@m3ae/tasks';

/** One held-out evaluation of a pre-training run, with the baselines it is read against. */
export interface EvaluationEntry extends HeldOutEvaluation {
  /** Steps applied to the evaluated parameters. */
  step: number;
  /**
   * The MLM baselines — the unigram entropy of the training captions (nats per token) and a unigram model's loss on
   * the same held-out masked tokens (`unigramHeldOut`: what the MLM loss must get below) — and ITM chance.
   */
  baseline: { unigramEntropy: number; unigramHeldOut: number; itmChance: number };
  seconds: number;
}

/** The log line of an evaluation: each figure next to its baseline. */
export function formatEvaluation(e: EvaluationEntry): string {
  const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
  const u = e.baseline.unigramHeldOut;
  return (
    `held-out evaluation after step ${e.step} (${e.pairs} pairs, ${e.seconds.toFixed(1)} s): ` +
    `ITM acc ${pct(e.accuracy.itm)} (chance ${pct(e.baseline.itmChance)}; ${e.accuracy.itm > e.baseline.itmChance ? 'above' : 'not above'}), ITM loss ${e.loss.itm.toFixed(4)}; ` +
    `MLM acc ${pct(e.accuracy.mlm)}, MLM loss ${e.loss.mlm.toFixed(4)} nats (unigram model ${u.toFixed(4)}: ${e.loss.mlm < u ? 'below' : 'not below'}; ` +
    `unigram entropy of the training captions ${e.baseline.unigramEntropy.toFixed(4)}); MIM loss ${e.loss.mim.toFixed(4)}`
  );
}

/**
 * The held-out evaluation of a pre-training run (`evaluation` in the run configuration): `evaluation.data`, a shard
 * dataset disjoint from the training one, evaluated on the coordinator with the new parameters every
 * `evaluation.every` steps and after the last. The parameters do not depend on the worker count, the batches are
 * fixed (seed, step 0) and summed in a fixed order: the figures do not depend on it either.
 */
export class HeldOutEvaluator {
  private model: M3AEModel | undefined;

  private constructor(
    private readonly config: RunConfig,
    private readonly modelConfig: M3AEConfig,
    private readonly dataset: ShardDataset,
    private readonly tokenizer: TextTokenizer,
    readonly unigram: UnigramBaseline,
  ) {}

  /** Opens `evaluation.data` (checked against the model and the training dataset) and measures the MLM baseline on the training captions. */
  static async open(config: RunConfig, model: M3AEConfig, training: ShardDataset, tokenizer: TextTokenizer): Promise<HeldOutEvaluator> {
    const dir = config.evaluation.data;
    if (!dir) throw new ConfigError('evaluation.data is not set; expected a held-out shard dataset (m3ae prepare output) disjoint from data.dir');
    const dataset = await openShardDataset(dir);
    try {
      const bad = (what: string, expected: string): never => {
        throw new ConfigError(`evaluation.data = ${JSON.stringify(dir)}: ${what}; expected ${expected}`);
      };
      if (dataset.datasetHash === training.datasetHash) bad(`the same dataset as data.dir (${dataset.datasetHash.slice(0, 16)}…)`, 'held-out pairs the run does not train on (e.g. MedPix dev: m3ae prepare --source medpix --split dev)');
      if (dataset.imageSize !== model.imageSize) bad(`prepared at ${dataset.imageSize} px`, `the model's ${model.imageSize} px`);
      if (dataset.size < 2) bad(`${dataset.size} pair(s)`, 'at least 2 (ITM negatives come from the held-out pairs)');
      const unigram = await UnigramBaseline.of(training, tokenizer, trainingTextLength(model));
      return new HeldOutEvaluator(config, model, dataset, tokenizer, unigram);
    } catch (e) {
      await dataset.close();
      throw e;
    }
  }

  /** Due after `done` steps of `total`? */
  due(done: number, total: number): boolean {
    const every = this.config.evaluation.every;
    return every > 0 && (done % every === 0 || done === total);
  }

  async evaluate(step: number, params: Float32Array): Promise<EvaluationEntry> {
    const t0 = performance.now();
    if (!this.model) {
      await chooseBackend({ backend: this.config.compute.backend });
      this.model = createModel(this.modelConfig, { zeroInit: true });
    }
    setParamsFromFlat(this.model, params);
    const r = await heldOutEvaluation(this.model, { dataset: this.dataset, tokenizer: this.tokenizer, seed: this.config.seed, samples: this.config.evaluation.samples, unigram: this.unigram });
    const baseline = { unigramEntropy: this.unigram.entropy, unigramHeldOut: r.mlmUnigram ?? NaN, itmChance: ITM_CHANCE };
    return { ...r, step, baseline, seconds: (performance.now() - t0) / 1000 };
  }

  async close(): Promise<void> {
    this.model?.dispose();
    this.model = undefined;
    await this.dataset.close();
  }
}
