import { buildPretrainBatch, internKey, validationSamples, type BatchDataset, type ShardDataset, type TextTokenizer } from '@m3ae/data';
import {
  computeLosses,
  createDownstreamModel,
  FINETUNE_DEFAULTS,
  finetuneTextLength,
  loadPretrained,
  modelManifest,
  numPatches,
  recallAtK,
  retrievalScores,
  trainingTextLength,
  unflatten,
  type DownstreamModel,
  type HeadSpec,
  type M3AEConfig,
  type M3AEModel,
  type RecallSet,
  type RetrievalMetrics,
} from '@m3ae/model';

/*
 * What pre-training has learnt, measured on held-out image–caption pairs (a shard dataset the run never trains on):
 * the three objectives' losses and accuracies on fixed masks (`heldOutEvaluation`), the baselines they are read
 * against (`unigramEntropy`, ITM chance 0.5), and zero-shot retrieval by ITM ranking (`zeroShotRetrieval`).
 */

/** The step every held-out batch is built at: the same masks, ITM labels and negatives at every evaluation. */
export const HELD_OUT_STEP = 0;

/** Pairs per forward pass of an evaluation (fixed: the sums never depend on the run's micro-batch or workers). */
export const HELD_OUT_BATCH = 16;

/** ITM chance: half of a held-out set's pairs are matched, half mismatched. */
export const ITM_CHANCE = 0.5;

export interface HeldOutEvaluation {
  /** Pairs evaluated. */
  pairs: number;
  /** With a `unigram` model: its mean loss (nats) on the same masked tokens — the MLM loss to get below. */
  mlmUnigram?: number;
  /** Mean per masked token (nats), per masked patch, per pair. */
  loss: { mlm: number; mim: number; itm: number };
  /** Masked-token and matching accuracy (0–1). */
  accuracy: { mlm: number; itm: number };
  /** Masked tokens, masked patches, pairs. */
  counts: { mlm: number; mim: number; itm: number };
}

/** The held-out indices: `samples` spread evenly over the dataset (all of them when it has fewer). */
export function heldOutIndices(size: number, samples: number): number[] {
  if (!Number.isInteger(samples) || samples < 1) throw new RangeError(`evaluation.samples = ${String(samples)}: expected a positive integer`);
  const n = Math.min(samples, size);
  return Array.from({ length: n }, (_, i) => Math.floor((i * size) / n));
}

/**
 * The model's three objectives on held-out pairs, without dropout, on batches built as pre-training builds them at
 * step {@link HELD_OUT_STEP} with the run's seed (the same masks, ITM labels and negatives every time: the curve moves
 * only with the parameters). The pairs form one global batch (exactly half matched); ITM negatives come from the
 * held-out set itself. Sums are taken in a fixed order over batches of {@link HELD_OUT_BATCH}.
 */
export async function heldOutEvaluation(
  model: M3AEModel,
  o: { dataset: BatchDataset; tokenizer: TextTokenizer; seed: number; samples: number; unigram?: UnigramBaseline },
): Promise<HeldOutEvaluation> {
  const c = model.config;
  if (o.dataset.size < 2) throw new RangeError(`the held-out dataset has ${o.dataset.size} pair(s); expected at least 2 (ITM negatives come from it)`);
  const indices = heldOutIndices(o.dataset.size, o.samples);
  const G = indices.length;
  const sums = { mlm: 0, mim: 0, itm: 0 };
  const counts = { mlm: 0, mim: 0, itm: 0 };
  const correct = { mlm: 0, itm: 0 };
  let unigramSum = 0;
  for (let s = 0; s < G; s += HELD_OUT_BATCH) {
    const part = indices.slice(s, s + HELD_OUT_BATCH);
    const batch = await buildPretrainBatch({
      dataset: o.dataset,
      tokenizer: o.tokenizer,
      indices: part,
      positions: part.map((_, k) => s + k),
      globalBatchSize: G,
      step: HELD_OUT_STEP,
      seed: o.seed,
      imageSize: c.imageSize,
      maxTextLength: trainingTextLength(c),
      mlmProbability: c.mlmMaskRatio,
      mimMaskRatio: c.mimMaskRatio,
      numPatches: numPatches(c),
    });
    if (o.unigram) for (const l of batch.mlmLabels) if (l !== -100) unigramSum += o.unigram.loss(l);
    const t = await computeLosses(model, batch, { training: false });
    for (const k of ['mlm', 'mim', 'itm'] as const) {
      sums[k] += t.sums[k];
      counts[k] += t.counts[k];
    }
    correct.mlm += t.correct.mlm;
    correct.itm += t.correct.itm;
  }
  const mean = (x: number, n: number): number => (n > 0 ? x / n : NaN);
  return {
    pairs: G,
    ...(o.unigram && c.objectives.mlm.enabled ? { mlmUnigram: mean(unigramSum, counts.mlm) } : {}),
    loss: { mlm: mean(sums.mlm, counts.mlm), mim: mean(sums.mim, counts.mim), itm: mean(sums.itm, counts.itm) },
    accuracy: { mlm: mean(correct.mlm, counts.mlm), itm: mean(correct.itm, counts.itm) },
    counts,
  };
}

/**
 * The MLM baseline: a unigram model of the training captions' tokens (the content tokens of the first
 * `maxTextLength − 2` positions of each caption, what a model sees). `entropy`: its entropy in nats per token (the
 * training MLM loss of predicting every masked token from frequencies alone); `loss(id)`: −ln p(id) with add-one
 * smoothing over the vocabulary, so that its mean over held-out masked tokens is the loss an MLM head below which
 * uses the context.
 */
export class UnigramBaseline {
  private constructor(
    private readonly freq: ReadonlyMap<number, number>,
    private readonly total: number,
    private readonly vocabSize: number,
    readonly entropy: number,
  ) {}

  static async of(dataset: Pick<ShardDataset, 'size' | 'getRecord'>, tokenizer: Pick<TextTokenizer, 'encodeContent' | 'vocabSize'>, maxTextLength: number): Promise<UnigramBaseline> {
    const freq = new Map<number, number>();
    let total = 0;
    for (let i = 0; i < dataset.size; i++) {
      const ids = tokenizer.encodeContent((await dataset.getRecord(i)).text);
      const n = Math.min(ids.length, Math.max(0, maxTextLength - 2));
      for (let k = 0; k < n; k++) freq.set(ids[k] as number, (freq.get(ids[k] as number) ?? 0) + 1);
      total += n;
    }
    if (total === 0) throw new RangeError(`UnigramBaseline: the dataset's ${dataset.size} captions hold no token`);
    let h = 0;
    for (const f of freq.values()) h -= (f / total) * Math.log(f / total);
    return new UnigramBaseline(freq, total, tokenizer.vocabSize, h);
  }

  /** −ln p(id), p smoothed: (count + 1) / (tokens + vocabulary size). */
  loss(id: number): number {
    return -Math.log(((this.freq.get(id) ?? 0) + 1) / (this.total + this.vocabSize));
  }
}

/** R@1/5/10 a ranking drawn at random reaches in expectation, both ways, for this caption–image relation. */
export function retrievalChance(nImages: number, nTexts: number, textImages: readonly (readonly number[])[]): { i2t: RecallSet; t2i: RecallSet } {
  // P(at least one of k relevant items among the top K of n, drawn at random) = 1 − C(n−k, K) / C(n, K).
  const hit = (n: number, k: number, K: number): number => {
    if (k === 0) return 0;
    let miss = 1;
    for (let j = 0; j < Math.min(K, n); j++) miss *= Math.max(0, n - k - j) / (n - j);
    return 1 - miss;
  };
  const perImage = new Array<number>(nImages).fill(0);
  for (const imgs of textImages) for (const i of imgs) perImage[i] = (perImage[i] ?? 0) + 1;
  const queries = perImage.filter((k) => k > 0);
  const mean = (xs: number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);
  const set = (ks: number[], n: number): RecallSet => ({ r1: mean(ks.map((k) => hit(n, k, 1))), r5: mean(ks.map((k) => hit(n, k, 5))), r10: mean(ks.map((k) => hit(n, k, 10))) });
  return { i2t: set(queries, nTexts), t2i: set(textImages.map((imgs) => imgs.length), nImages) };
}

/** The head zero-shot retrieval reads: the pre-trained ITM head's "match" logit. */
export const ZERO_SHOT_HEAD: HeadSpec = { kind: 'retrieval', outputs: 1 };

/** A retrieval model scoring pairs with the ITM head of pre-training parameters (flat, in `modelManifest(config)` order). */
export function zeroShotRetrievalModel(config: M3AEConfig, params: Float32Array): DownstreamModel {
  const model = createDownstreamModel(config, ZERO_SHOT_HEAD);
  try {
    loadPretrained(model, { config, params: unflatten(modelManifest(config), params) });
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

export interface ZeroShotRetrieval {
  metrics: RetrievalMetrics;
  /** What a random ranking reaches (expected). */
  chance: { i2t: RecallSet; t2i: RecallSet };
  /** Held-out pairs (images) and distinct captions ranked. */
  pairs: number;
  texts: number;
}

/**
 * Zero-shot retrieval on `pairs` held-out image–caption pairs (spread evenly over the dataset): every (image, caption)
 * is scored by the ITM head (`retrievalScores`), then image→text and text→image R@1/5/10 (`recallAtK`). Captions that
 * are identical as the model reads them (the same `textLength` token ids: several images of one case share one caption,
 * and long captions may agree in their first tokens) are ranked once, correct for each of their images.
 */
export async function zeroShotRetrieval(model: DownstreamModel, o: { dataset: ShardDataset; tokenizer: TextTokenizer; pairs: number; textLength?: number }): Promise<ZeroShotRetrieval> {
  const c = model.config;
  if (model.head.kind !== 'retrieval') throw new TypeError(`zeroShotRetrieval: the model has a ${model.head.kind} head; expected a retrieval head`);
  const indices = heldOutIndices(o.dataset.size, o.pairs);
  const L = o.textLength ?? finetuneTextLength(c, FINETUNE_DEFAULTS.retrieval);
  const samples = await validationSamples({ dataset: o.dataset, tokenizer: o.tokenizer, imageSize: c.imageSize, maxTextLength: L, indices });
  const plane = 3 * c.imageSize * c.imageSize;
  const pixelValues = new Float32Array(samples.length * plane);
  const textOf = new Map<string, number>();
  const textRows: number[] = [];
  const textImages: number[][] = [];
  samples.forEach((s, i) => {
    pixelValues.set(s.pixelValues, i * plane);
    const key = s.inputIds.join(',');
    const t = internKey(textOf, key, () => {
      textRows.push(i);
      textImages.push([]);
    });
    textImages[t]?.push(i);
  });
  const inputIds = new Int32Array(textRows.length * L);
  const attentionMask = new Int32Array(textRows.length * L);
  textRows.forEach((i, t) => {
    const s = samples[i];
    if (!s) return;
    inputIds.set(s.inputIds, t * L);
    attentionMask.set(s.attentionMask, t * L);
  });
  const scores = await retrievalScores(model, { pixelValues, nImages: samples.length, inputIds, attentionMask, nTexts: textRows.length, textLength: L });
  return { metrics: recallAtK(scores, samples.length, textRows.length, textImages), chance: retrievalChance(samples.length, textRows.length, textImages), pairs: samples.length, texts: textRows.length };
}
