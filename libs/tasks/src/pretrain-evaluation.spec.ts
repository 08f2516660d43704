import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTokenizer, openShardDataset, prepareShards, trainTokenizer, writePhantomCorpus, type PhantomManifestLine, type ShardDataset, type TextTokenizer } from '@m3ae/data';
import { chooseBackend, createModel, flattenParams, presetConfig, recallAtK, type M3AEConfig, type M3AEModel } from '@m3ae/model';
import { heldOutEvaluation, heldOutIndices, retrievalChance, UnigramBaseline, zeroShotRetrieval, zeroShotRetrievalModel } from './pretrain-evaluation.js';

describe('retrieval arithmetic (hand-built scores)', () => {
  it('R@K both ways from a score matrix, and the chance level of a random ranking', () => {
    // 12 images, 12 captions; image i's caption is i. Scores put the true caption at rank i % 12 for image i:
    // image 0 ranks it first, image 4 fifth, image 9 tenth, image 11 twelfth.
    const n = 12;
    const scores = new Float32Array(n * n);
    for (let i = 0; i < n; i++) {
      const others = Array.from({ length: n }, (_, t) => t).filter((t) => t !== i);
      const order = [...others.slice(0, i), i, ...others.slice(i)];
      order.forEach((t, rank) => (scores[i * n + t] = 100 - rank - 0.01 * i));
    }
    const textImages = Array.from({ length: n }, (_, t) => [t]);
    const r = recallAtK(scores, n, n, textImages);
    expect(r.i2t).toEqual({ r1: 1 / 12, r5: 5 / 12, r10: 10 / 12 });
    const chance = retrievalChance(n, n, textImages);
    expect(chance.i2t.r1).toBeCloseTo(1 / 12, 12);
    expect(chance.i2t.r5).toBeCloseTo(5 / 12, 12);
    expect(chance.t2i.r10).toBeCloseTo(10 / 12, 12);
    // A caption shared by two of three images: for it, a random image is right with probability 2/3.
    const shared = retrievalChance(3, 2, [[0, 1], [2]]);
    expect(shared.t2i.r1).toBeCloseTo((2 / 3 + 1 / 3) / 2, 12);
    expect(shared.i2t.r1).toBeCloseTo(1 / 2, 12);
  });

  it('held-out indices are spread evenly and refuse a bad count', () => {
    expect(heldOutIndices(10, 4)).toEqual([0, 2, 5, 7]);
    expect(heldOutIndices(3, 8)).toEqual([0, 1, 2]);
    expect(() => heldOutIndices(10, 0)).toThrow('evaluation.samples = 0: expected a positive integer');
  });
});

describe('held-out evaluation and zero-shot retrieval on a tiny model (real tfjs, real shards)', () => {
  let work: string;
  let dataset: ShardDataset;
  let tokenizer: TextTokenizer;
  let config: M3AEConfig;
  let model: M3AEModel;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'm3ae-pretrain-eval-'));
    await writePhantomCorpus({ output: join(work, 'corpus'), count: 12, seed: 3, size: 32 });
    const lines = (await readFile(join(work, 'corpus', 'manifest.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as PhantomManifestLine);
    await writeFile(join(work, 'captions.txt'), lines.map((l) => l.text).join('\n') + '\n');
    await trainTokenizer({ sources: [{ kind: 'text', path: join(work, 'captions.txt') }], vocabSize: 300, output: join(work, 'tok.json'), agreementSamples: 5 });
    tokenizer = await loadTokenizer(join(work, 'tok.json'));
    await prepareShards({ source: 'manifest', input: join(work, 'corpus', 'manifest.jsonl'), output: join(work, 'shards'), imageSize: 32, tokenizer });
    dataset = await openShardDataset(join(work, 'shards'));
    await chooseBackend({ backend: 'cpu' });
    config = presetConfig('tiny', { maxTextLength: 32, vocabSize: 1000, padTokenId: tokenizer.special.pad });
    model = createModel(config, { seed: 7 });
  }, 120_000);
  afterAll(async () => {
    model?.dispose();
    await dataset?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('ITM / MLM accuracy and MIM loss: deterministic, half the pairs matched, no tensor left behind', async () => {
    const unigram = await UnigramBaseline.of(dataset, tokenizer, config.maxTextLength);
    const o = { dataset, tokenizer, seed: 4, samples: 10, unigram };
    const first = await heldOutEvaluation(model, o);
    const before = tf.memory().numTensors;
    const again = await heldOutEvaluation(model, o);
    expect(tf.memory().numTensors).toBe(before);
    expect(again).toEqual(first);
    expect(first.pairs).toBe(10);
    expect(first.counts.itm).toBe(10);
    expect(first.counts.mim).toBe(10 * 12); // 16 patches, 4 kept
    expect(first.counts.mlm).toBeGreaterThan(0);
    for (const v of [first.loss.mlm, first.loss.mim, first.loss.itm]) expect(Number.isFinite(v) && v > 0).toBe(true);
    expect(first.accuracy.itm * 10).toBe(Math.round(first.accuracy.itm * 10));
    // An untrained model's MLM loss is near ln(vocabulary), far above the corpus' unigram entropy and the unigram
    // model's loss on the same masked tokens (which, smoothed, lies between the two).
    const h = unigram.entropy;
    expect(h).toBeGreaterThan(1);
    expect(h).toBeLessThan(Math.log(tokenizer.vocabSize));
    expect(first.mlmUnigram).toBeGreaterThan(h);
    expect(first.loss.mlm).toBeGreaterThan(first.mlmUnigram ?? Infinity);
    // An id the captions never use: finite (smoothed), and dearer than any seen one.
    expect(Number.isFinite(unigram.loss(-5))).toBe(true);
    expect(unigram.loss(-5)).toBeGreaterThan(unigram.loss(tokenizer.encodeContent('lesion')[0] ?? -5) - 1e-12);
    // Other parameters give other figures (the evaluation reads the model, not a cache).
    const other = createModel(config, { seed: 8 });
    try {
      expect((await heldOutEvaluation(other, o)).loss.mim).not.toBe(first.loss.mim);
    } finally {
      other.dispose();
    }
  }, 120_000);

  it('zero-shot retrieval from pre-training parameters: shapes, determinism, no leak', async () => {
    const retrieval = zeroShotRetrievalModel(config, await flattenParams(model));
    try {
      const first = await zeroShotRetrieval(retrieval, { dataset, tokenizer, pairs: 8 });
      const before = tf.memory().numTensors;
      const again = await zeroShotRetrieval(retrieval, { dataset, tokenizer, pairs: 8 });
      expect(tf.memory().numTensors).toBe(before);
      expect(again).toEqual(first);
      expect(first.pairs).toBe(8);
      expect(first.metrics.images).toBe(8);
      expect(first.metrics.texts).toBe(first.texts);
      expect(first.texts).toBeLessThanOrEqual(8);
      for (const set of [first.metrics.i2t, first.metrics.t2i]) {
        expect(set.r1).toBeLessThanOrEqual(set.r5);
        expect(set.r5).toBeLessThanOrEqual(set.r10);
      }
      // Fewer than 10 candidates: R@10 is certain, for the model and for chance.
      expect(first.metrics.t2i.r10).toBe(1);
      expect(first.chance.t2i.r10).toBeCloseTo(1, 12);
      expect(first.chance.i2t.r1).toBeGreaterThan(0);
    } finally {
      retrieval.dispose();
    }
  }, 120_000);
});
