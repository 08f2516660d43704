import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdamW } from './adamw.js';
import { chooseBackend } from './backend.js';
import { presetConfig } from './config.js';
import { createModel, flattenParams, setParamsFromFlat, type M3AEModel } from './model.js';
import { batchCounts, computeGradients, computeLosses } from './pretrain.js';
import { sliceBatch, syntheticBatch } from './synthetic.js';
import { numPatches, patchDim } from './config.js';
import { Dropout } from './dropout.js';
import { keyBiasFromMask, patchesForEmbedding, robertaPositionIds } from './inputs.js';
import { fusion, pooler, textEncoder, visionEncoder } from './network.js';
import { paramsFromMap } from './ops.js';

function norm(a: Float32Array): number {
  let s = 0;
  for (const v of a) s += v * v;
  return Math.sqrt(s);
}

function relDiff(a: Float32Array, b: Float32Array): number {
  const d = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) d[i] = (a[i] ?? 0) - (b[i] ?? 0);
  return norm(d) / Math.max(norm(a), 1e-30);
}

describe('computeGradients on wasm (tiny)', () => {
  const config = presetConfig('tiny');
  let model: M3AEModel;

  beforeAll(async () => {
    await chooseBackend({ backend: 'wasm' });
    model = createModel(config, { seed: 7 });
  });
  afterAll(() => model.dispose());

  it('sums of K = 4 micro-batches equal the whole batch (dropout on)', async () => {
    const batch = syntheticBatch(config, 8, 11);
    const normalizers = batchCounts(config, batch);
    const whole = await computeGradients(model, batch, { normalizers, training: true });
    const summed = new Float32Array(whole.grads.length);
    const sums = { mlm: 0, mim: 0, itm: 0 };
    const counts = { mlm: 0, mim: 0, itm: 0 };
    for (let k = 0; k < 4; k++) {
      const r = await computeGradients(model, sliceBatch(batch, 2 * k, 2 * k + 2), { normalizers, training: true });
      for (let i = 0; i < summed.length; i++) summed[i] = (summed[i] ?? 0) + (r.grads[i] ?? 0);
      for (const o of ['mlm', 'mim', 'itm'] as const) {
        sums[o] += r.sums[o];
        counts[o] += r.counts[o];
      }
    }
    expect(counts).toEqual(whole.counts);
    expect(counts).toEqual(normalizers);
    for (const o of ['mlm', 'mim', 'itm'] as const) expect(sums[o]).toBeCloseTo(whole.sums[o], 3);
    expect(norm(whole.grads)).toBeGreaterThan(0);
    expect(relDiff(whole.grads, summed)).toBeLessThan(1e-5);

    // The comparison above is only meaningful if dropout changed something.
    const noDropout = await computeGradients(model, batch, { normalizers, training: false });
    expect(relDiff(whole.grads, noDropout.grads)).toBeGreaterThan(1e-3);
    // Same inputs, same masks: bit-identical on a repeat.
    expect((await computeGradients(model, batch, { normalizers, training: true })).grads).toEqual(whole.grads);
  });

  it('reports losses as summed per-item values consistent with computeLosses', async () => {
    const batch = syntheticBatch(config, 4, 5);
    const normalizers = batchCounts(config, batch);
    const g = await computeGradients(model, batch, { normalizers, training: false });
    const l = await computeLosses(model, batch, { training: false });
    expect(l.counts).toEqual(g.counts);
    for (const o of ['mlm', 'mim', 'itm'] as const) expect(l.sums[o]).toBeCloseTo(g.sums[o], 3);
    expect(l.correct).toEqual(g.correct);
    // Untrained: MLM ≈ ln(V) per token, ITM ≈ ln 2 per pair, MIM ≈ 1 per patch (normalised targets, small outputs).
    expect(l.sums.mlm / l.counts.mlm).toBeGreaterThan(Math.log(config.vocabSize) - 0.5);
    expect(l.sums.mlm / l.counts.mlm).toBeLessThan(Math.log(config.vocabSize) + 0.5);
    expect(Math.abs(l.sums.itm / l.counts.itm - Math.log(2))).toBeLessThan(0.2);
    expect(Math.abs(l.sums.mim / l.counts.mim - 1)).toBeLessThan(0.3);
  });

  it('gives the padding rows of the embeddings no gradient (nn.Embedding padding_idx)', async () => {
    const batch = syntheticBatch(config, 2, 9);
    const r = await computeGradients(model, batch, { normalizers: batchCounts(config, batch), training: true });
    const at = (name: string, row: number): Float32Array => {
      const e = model.manifest.entries.find((x) => x.name === name);
      if (!e || e.offset === null) throw new Error(name);
      const d = e.shape[1] ?? 0;
      return r.grads.subarray(e.offset + row * d, e.offset + (row + 1) * d);
    };
    expect(batch.inputIds.includes(config.padTokenId)).toBe(true);
    expect(norm(at('language_encoder.embeddings.word_embeddings.weight', config.padTokenId))).toBe(0);
    expect(norm(at('language_encoder.embeddings.position_embeddings.weight', config.padTokenId))).toBe(0);
    expect(norm(at('language_encoder.embeddings.position_embeddings.weight', config.padTokenId + 1))).toBeGreaterThan(0);
    expect(norm(at('language_encoder.embeddings.word_embeddings.weight', batch.inputIds[1] ?? 0))).toBeGreaterThan(0);
  });

  it('switches objectives off and weights them', async () => {
    const batch = syntheticBatch(config, 2, 3);
    const normalizers = batchCounts(config, batch);
    const onlyMim = createModel({ ...config, objectives: { mlm: { enabled: false, weight: 1 }, mim: { enabled: true, weight: 1 }, itm: { enabled: false, weight: 1 } } }, { seed: 7 });
    const doubled = createModel({ ...config, objectives: { mlm: { enabled: false, weight: 1 }, mim: { enabled: true, weight: 2 }, itm: { enabled: false, weight: 1 } } }, { seed: 7 });
    try {
      const a = await computeGradients(onlyMim, batch, { normalizers, training: true });
      const b = await computeGradients(doubled, batch, { normalizers, training: true });
      expect(a.counts.mlm).toBe(0);
      expect(a.counts.itm).toBe(0);
      expect(a.sums.mlm).toBe(0);
      const mlmDecoder = onlyMim.manifest.entries.find((e) => e.name === 'mlm_head.decoder.weight');
      expect(norm(a.grads.subarray(mlmDecoder?.offset ?? 0, (mlmDecoder?.offset ?? 0) + 100))).toBe(0);
      const twice = a.grads.map((v) => 2 * v);
      expect(relDiff(twice, b.grads)).toBeLessThan(1e-6);
    } finally {
      onlyMim.dispose();
      doubled.dispose();
    }
  });

  it('computes the ITM pass\'s last fusion layer for the first tokens only, with the full layer\'s values', () => {
    const batch = syntheticBatch(config, 3, 4);
    const diff = tf.tidy(() => {
      const ctx = { p: paramsFromMap(model.params), c: config, batch: 3, drop: Dropout.off() };
      const L = batch.textLength;
      const N = numPatches(config);
      const ids = batch.inputIds;
      const notPad = Float32Array.from(ids, (v) => (v === config.padTokenId ? 0 : 1));
      const keyBias = tf.tensor4d(keyBiasFromMask(batch.attentionMask), [3, 1, 1, L]);
      const text = textEncoder(ctx, {
        ids: tf.tensor1d(ids, 'int32'),
        positionIds: tf.tensor1d(robertaPositionIds(ids, 3, L, config.padTokenId), 'int32'),
        notPad: tf.tensor2d(notPad, [notPad.length, 1]),
        keyBias,
        length: L,
      });
      const image = visionEncoder(ctx, tf.tensor2d(patchesForEmbedding(batch.itmPixelValues, 3, config.imageSize, config.patchSize), [3 * N, patchDim(config)]));
      const full = fusion(ctx, text, L, image, N + 1, keyBias, config.fusionLayers, 'both');
      const pooled = fusion(ctx, text, L, image, N + 1, keyBias, config.fusionLayers, 'pooled');
      const a = tf.concat([pooler(ctx, 'multi_modal_language_pooler', full.text, L), pooler(ctx, 'multi_modal_vision_pooler', full.image, N + 1)], 1);
      const b = tf.concat([pooler(ctx, 'multi_modal_language_pooler', pooled.text, 1), pooler(ctx, 'multi_modal_vision_pooler', pooled.image, 1)], 1);
      expect(pooled.text.shape).toEqual([3, config.hiddenSize]);
      return tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] ?? 1;
    });
    expect(diff).toBeLessThan(1e-5);
  });

  it('rejects a missing normalizer and a bad batch by name', async () => {
    const batch = syntheticBatch(config, 2, 3);
    await expect(computeGradients(model, batch, { normalizers: { mlm: 0, mim: 96, itm: 2 }, training: true })).rejects.toThrow(/normalizers\.mlm: got 0; expected a positive global count/);
    const bad = { ...batch, mimNoise: new Float32Array(5) };
    await expect(computeGradients(model, bad, { normalizers: batchCounts(config, batch), training: true })).rejects.toThrow(/batch\.mimNoise: got 5 values; expected 32/);
    const badId = { ...batch, inputIds: batch.inputIds.map((v, i) => (i === 3 ? 5000 : v)) };
    await expect(computeLosses(model, badId)).rejects.toThrow(/batch\.inputIds\[3\]: got 5000; expected a token id in \[0, 1000\)/);
  });

  it('leaks no tensor over 50 training steps (gradients + AdamW + parameter update)', async () => {
    const opt = new AdamW(model.manifest, { learningRate: 1e-3, totalSteps: 50 });
    const params = await flattenParams(model);
    const before = tf.memory().numTensors;
    let first = 0;
    let last = 0;
    for (let step = 0; step < 50; step++) {
      const batch = syntheticBatch(config, 2, 100 + (step % 3), 2 * (step % 3));
      const r = await computeGradients(model, batch, { normalizers: batchCounts(config, batch), training: true });
      opt.update(params, r.grads);
      setParamsFromFlat(model, params);
      const loss = r.sums.mlm / r.counts.mlm + r.sums.mim / r.counts.mim + r.sums.itm / r.counts.itm;
      if (step < 3) first += loss;
      if (step >= 47) last += loss;
      expect(tf.memory().numTensors).toBe(before);
    }
    // The same three batches repeat: training must have lowered their loss.
    expect(last).toBeLessThan(first);
  });
});

describe('wasm and cpu backends', () => {
  it('give the same gradients', async () => {
    const config = presetConfig('tiny');
    const batch = syntheticBatch(config, 2, 21);
    const normalizers = batchCounts(config, batch);
    await chooseBackend({ backend: 'wasm' });
    const model = createModel(config, { seed: 3 });
    try {
      const wasm = await computeGradients(model, batch, { normalizers, training: true });
      await chooseBackend({ backend: 'cpu' });
      const cpu = await computeGradients(model, batch, { normalizers, training: true });
      expect(tf.getBackend()).toBe('cpu');
      expect(relDiff(cpu.grads, wasm.grads)).toBeLessThan(1e-4);
      for (const o of ['mlm', 'mim', 'itm'] as const) expect(cpu.sums[o]).toBeCloseTo(wasm.sums[o], 3);
    } finally {
      model.dispose();
      await chooseBackend({ backend: 'wasm' });
    }
  });
});
