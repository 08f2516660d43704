import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdamW } from './adamw.js';
import { chooseBackend } from './backend.js';
import { mimKeepCount, numPatches, patchDim, presetConfig } from './config.js';
import { createModel, flattenParams, setParamsFromFlat, type M3AEModel } from './model.js';
import { batchCounts, computeGradients, computeLosses } from './pretrain.js';
import { predictMim, reconstructImages, visualisationNoise, type MimInput } from './reconstruct.js';
import { syntheticBatch } from './synthetic.js';

describe('MIM reconstructions on wasm (tiny)', () => {
  const config = presetConfig('tiny', { dropout: 0 });
  let model: M3AEModel;

  beforeAll(async () => {
    await chooseBackend({ backend: 'wasm' });
    model = createModel(config, { seed: 3 });
  });
  afterAll(() => {
    model.dispose();
  });

  function inputOf(batch: ReturnType<typeof syntheticBatch>): MimInput {
    return { batchSize: batch.batchSize, pixelValues: batch.pixelValues, inputIds: batch.inputIds, attentionMask: batch.attentionMask, mimNoise: batch.mimNoise };
  }

  it('predicts every patch with the training MIM pass: its loss on removed patches is the training loss', async () => {
    const batch = syntheticBatch(config, 3, 21);
    const before = tf.memory().numTensors;
    const p = await predictMim(model, inputOf(batch));
    expect(tf.memory().numTensors).toBe(before);
    const N = numPatches(config);
    expect(p.prediction.length).toBe(3 * N * patchDim(config));
    expect(p.mask.reduce((a, v) => a + v, 0)).toBe(3 * (N - mimKeepCount(config)));
    const rows = await reconstructImages(model, inputOf(batch));
    const losses = await computeLosses(model, batch, { training: false });
    const summed = rows.reduce((a, r) => a + r.loss * r.maskedPatches, 0);
    expect(summed).toBeCloseTo(losses.sums.mim, 3);
    expect(rows.reduce((a, r) => a + r.maskedPatches, 0)).toBe(losses.counts.mim);
  });

  it('pastes visible patches back exactly and shows removed ones as zeros (the mean colour) in the masked input', async () => {
    const batch = syntheticBatch(config, 2, 4);
    const { mask } = await predictMim(model, inputOf(batch));
    const rows = await reconstructImages(model, inputOf(batch));
    const S = config.imageSize;
    const P = config.patchSize;
    const g = S / P;
    rows.forEach((row, b) => {
      expect(row.original).toEqual(batch.pixelValues.slice(b * 3 * S * S, (b + 1) * 3 * S * S));
      let visible = 0;
      let differs = 0;
      for (let n = 0; n < g * g; n++) {
        const [gy, gx] = [Math.floor(n / g), n % g];
        for (let ky = 0; ky < P; ky++) {
          for (let kx = 0; kx < P; kx++) {
            const at = [0, 1, 2].map((c) => c * S * S + (gy * P + ky) * S + gx * P + kx);
            const orig = at.map((i) => row.original[i]);
            const rec = at.map((i) => row.reconstruction[i]);
            const shown = at.map((i) => row.masked[i]);
            if (mask[b * g * g + n] === 0) {
              visible++;
              expect(rec).toEqual(orig);
              expect(shown).toEqual(orig);
            } else {
              expect(shown).toEqual([0, 0, 0]);
              if (rec.some((v, i) => v !== orig[i])) differs++;
            }
          }
        }
      }
      expect(visible).toBe(mimKeepCount(config) * P * P);
      // An untrained model does not reproduce what it could not see.
      expect(differs).toBeGreaterThan(0);
    });
  });

  it('draws the same visualisation noise for the same seed and image, other noise for another seed', () => {
    const N = numPatches(config);
    expect(visualisationNoise(2, N, 1)).toEqual(visualisationNoise(2, N, 1));
    expect(visualisationNoise(2, N, 1).subarray(N)).toEqual(visualisationNoise(3, N, 1).subarray(N, 2 * N));
    expect(visualisationNoise(1, N, 2)).not.toEqual(visualisationNoise(1, N, 1));
  });

  it('gets closer to the hidden pixels as MIM training lowers the loss', async () => {
    const mimOnly = presetConfig('tiny', { dropout: 0, objectives: { mlm: { enabled: false, weight: 1 }, mim: { enabled: true, weight: 1 }, itm: { enabled: false, weight: 1 } } });
    const m = createModel(mimOnly, { seed: 9 });
    try {
      const batch = syntheticBatch(mimOnly, 2, 77);
      const input = inputOf(batch);
      const pixelError = async (): Promise<{ loss: number; error: number }> => {
        const { mask } = await predictMim(m, input);
        const rows = await reconstructImages(m, input);
        const S = mimOnly.imageSize;
        const P = mimOnly.patchSize;
        const g = S / P;
        let err = 0;
        let count = 0;
        rows.forEach((row, b) => {
          for (let n = 0; n < g * g; n++) {
            if (mask[b * g * g + n] !== 1) continue;
            const [gy, gx] = [Math.floor(n / g), n % g];
            for (let ky = 0; ky < P; ky++) {
              for (let kx = 0; kx < P; kx++) {
                for (let c = 0; c < 3; c++) {
                  const o = c * S * S + (gy * P + ky) * S + gx * P + kx;
                  err += Math.abs((row.reconstruction[o] as number) - (row.original[o] as number));
                }
                count += 3;
              }
            }
          }
        });
        return { loss: rows.reduce((a, r) => a + r.loss, 0) / rows.length, error: err / count };
      };
      const start = await pixelError();
      const opt = new AdamW(m.manifest, { learningRate: 3e-3, totalSteps: 1000, warmupFraction: 0, lrMultiplierHead: 1, lrMultiplierMultiModal: 1, weightDecay: 0 });
      const params = await flattenParams(m);
      const normalizers = batchCounts(mimOnly, batch);
      for (let step = 0; step < 60; step++) {
        const r = await computeGradients(m, batch, { normalizers, training: false });
        opt.update(params, r.grads);
        setParamsFromFlat(m, params);
      }
      const end = await pixelError();
      expect(end.loss).toBeLessThan(start.loss * 0.75);
      // Wrong un-normalisation (sign, scale, channel order) would not follow the loss down in pixel space.
      expect(end.error).toBeLessThan(start.error * 0.85);
    } finally {
      m.dispose();
    }
  });

});
