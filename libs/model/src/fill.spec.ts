import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chooseBackend } from './backend.js';
import { presetConfig } from './config.js';
import { blankImage, fillMasked, totalVariation, type MaskedText } from './fill.js';
import { createModel, type M3AEModel } from './model.js';
import { computeLosses } from './pretrain.js';
import { syntheticBatch } from './synthetic.js';

describe('fillMasked on wasm (tiny)', () => {
  const config = presetConfig('tiny', { dropout: 0 });
  let model: M3AEModel;

  beforeAll(async () => {
    await chooseBackend({ backend: 'wasm' });
    model = createModel(config, { seed: 12 });
  });
  afterAll(() => model.dispose());

  it('gives the distribution the MLM pass is trained on: −Σ log p(label) is the summed MLM loss', async () => {
    const batch = syntheticBatch(config, 3, 31);
    const losses = await computeLosses(model, batch, { training: false });
    const L = config.maxTextLength;
    const plane = 3 * config.imageSize ** 2;
    let nll = 0;
    let correct = 0;
    let count = 0;
    const before = tf.memory().numTensors;
    for (let b = 0; b < 3; b++) {
      const ids = batch.mlmInputIds.slice(b * L, (b + 1) * L);
      const labels = batch.mlmLabels.slice(b * L, (b + 1) * L);
      const positions = [...labels.keys()].filter((i) => labels[i] !== -100);
      const text: MaskedText = { inputIds: ids, attentionMask: batch.attentionMask.slice(b * L, (b + 1) * L), positions };
      const r = await fillMasked(model, text, [batch.pixelValues.slice(b * plane, (b + 1) * plane)], { topK: 3 });
      const probs = r.probabilities[0] as Float32Array;
      positions.forEach((p, m) => {
        const label = labels[p] as number;
        nll -= Math.log(probs[m * config.vocabSize + label] as number);
        if (r.top[0]?.[m]?.[0]?.id === label) correct++;
        count++;
        // Top-k is sorted, and is the head of the full distribution.
        const top = r.top[0]?.[m] ?? [];
        expect(top.map((c) => c.probability)).toEqual([...top.map((c) => c.probability)].sort((x, y) => y - x));
        expect(top[0]?.probability).toBeCloseTo(Math.max(...probs.subarray(m * config.vocabSize, (m + 1) * config.vocabSize)), 6);
      });
    }
    expect(tf.memory().numTensors).toBe(before);
    expect(count).toBe(losses.counts.mlm);
    expect(nll).toBeCloseTo(losses.sums.mlm, 2);
    expect(correct).toBe(losses.correct.mlm);
  });

  it('changes its prediction with the image (cross-modal), and sums to one', async () => {
    const batch = syntheticBatch(config, 2, 5);
    const L = config.maxTextLength;
    const plane = 3 * config.imageSize ** 2;
    const ids = batch.inputIds.slice(0, L);
    ids[2] = config.vocabSize - 1;
    const text: MaskedText = { inputIds: ids, attentionMask: batch.attentionMask.slice(0, L), positions: [2] };
    const images = [batch.pixelValues.slice(0, plane), batch.pixelValues.slice(plane, 2 * plane), blankImage(config)];
    const r = await fillMasked(model, text, images, { topK: 5 });
    expect(r.top).toHaveLength(3);
    for (const p of r.probabilities) expect(p.reduce((a, v) => a + v, 0)).toBeCloseTo(1, 4);
    const [own, other, blank] = r.probabilities as [Float32Array, Float32Array, Float32Array];
    // An untrained model's image effect is small but real (an ignored image would give exactly 0).
    expect(totalVariation(own, other)).toBeGreaterThan(1e-6);
    expect(totalVariation(own, blank)).toBeGreaterThan(1e-6);
    expect(totalVariation(own, own)).toBe(0);
    // The same image twice gives the same answer.
    const twice = await fillMasked(model, text, [images[0] as Float32Array, images[0] as Float32Array]);
    expect(twice.probabilities[1]).toEqual(twice.probabilities[0]);
  });

  it('refuses bad input naming the field', async () => {
    const L = config.maxTextLength;
    const text: MaskedText = { inputIds: new Int32Array(L).fill(5), attentionMask: new Int32Array(L).fill(1), positions: [1] };
    await expect(fillMasked(model, text, [])).rejects.toThrow(/images: expected at least one image/);
    await expect(fillMasked(model, text, [new Float32Array(3)])).rejects.toThrow(/images\[0\]: got 3 values/);
    await expect(fillMasked(model, { ...text, positions: [L] }, [blankImage(config)])).rejects.toThrow(/positions: got 16/);
    await expect(fillMasked(model, { ...text, inputIds: new Int32Array(L).fill(config.vocabSize) }, [blankImage(config)])).rejects.toThrow(/inputIds\[0\]: got 1000/);
    await expect(fillMasked(model, text, [blankImage(config)], { topK: 0 })).rejects.toThrow(/topK: got 0/);
  });
});
