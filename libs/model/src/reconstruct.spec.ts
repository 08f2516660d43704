import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdamW } from './adamw.js';
import { chooseBackend } from './backend.js';
import { saveCheckpoint } from './checkpoint/index.js';
import { mimKeepCount, numPatches, patchDim, presetConfig } from './config.js';
import { mimTargets, patchesForEmbedding } from './inputs.js';
import { createModel, flattenParams, setParamsFromFlat, type M3AEModel } from './model.js';
import { batchCounts, computeGradients, computeLosses } from './pretrain.js';
import {
  batchSamples,
  clipToRgb,
  CLIP_PIXEL_MEAN,
  composeGrid,
  modelFromCheckpoint,
  normalizePatches,
  patchify,
  predictMim,
  reconstructImages,
  rgbToClip,
  unnormalizePatches,
  unpatchify,
  ValidationGridRenderer,
  visualisationNoise,
  type MimInput,
  type ValidationSample,
} from './reconstruct.js';
import { HashStream } from './random.js';
import { syntheticBatch } from './synthetic.js';

function randomPixels(n: number, seed: number): Float32Array {
  const r = new HashStream(seed);
  return Float32Array.from({ length: n }, () => r.normal());
}

describe('reconstruction maths', () => {
  const B = 2;
  const S = 12;
  const P = 4;
  const N = (S / P) ** 2;
  const dim = 3 * P * P;
  const pixels = randomPixels(B * 3 * S * S, 5);

  it('patchify and unpatchify are inverse, in MAE (ky, kx, c) order, and agree with the MIM target', () => {
    const patches = patchify(pixels, B, S, P);
    expect(patches.length).toBe(B * N * dim);
    expect(unpatchify(patches, B, S, P)).toEqual(pixels);
    // Patch n of image b, element (ky, kx, c) is pixel (c, gy·P + ky, gx·P + kx).
    const b = 1;
    const n = 5;
    const [gy, gx] = [Math.floor(n / (S / P)), n % (S / P)];
    for (const [ky, kx, c] of [[0, 0, 0], [1, 3, 2], [3, 2, 1]] as const) {
      expect(patches[(b * N + n) * dim + (ky * P + kx) * 3 + c]).toBe(pixels[b * 3 * S * S + c * S * S + (gy * P + ky) * S + gx * P + kx]);
    }
    // The same values as the training target (without norm_pix), every patch.
    const all = { sample: Int32Array.from({ length: B * N }, (_, i) => Math.floor(i / N)), patch: Int32Array.from({ length: B * N }, (_, i) => i % N) };
    expect(patchify(pixels, B, S, P)).toEqual(mimTargets(pixels, S, P, all, false));
    // …and a permutation within each patch of the patch-embedding input (c, ky, kx).
    const emb = patchesForEmbedding(pixels, B, S, P);
    for (let r = 0; r < B * N; r++) {
      const a = Array.from(patches.subarray(r * dim, (r + 1) * dim)).sort((x, y) => x - y);
      const e = Array.from(emb.subarray(r * dim, (r + 1) * dim)).sort((x, y) => x - y);
      expect(a).toEqual(e);
    }
    expect(() => patchify(pixels, B, S, 5)).toThrow(/patch dividing the size/);
    expect(() => unpatchify(patches.subarray(1), B, S, P)).toThrow(/expected 2×9×48/);
  });

  it('norm_pix matches the training target, and un-normalising with the target patch inverts it', () => {
    const patches = patchify(pixels, B, S, P);
    const all = { sample: Int32Array.from({ length: B * N }, (_, i) => Math.floor(i / N)), patch: Int32Array.from({ length: B * N }, (_, i) => i % N) };
    const normed = normalizePatches(patches, dim);
    const target = mimTargets(pixels, S, P, all, true);
    for (let i = 0; i < normed.length; i++) expect(normed[i]).toBeCloseTo(target[i] as number, 5);
    // Each normalised patch has mean 0 and unbiased variance ≈ 1.
    const row = Array.from(normed.subarray(0, dim));
    const mean = row.reduce((a, v) => a + v, 0) / dim;
    expect(mean).toBeCloseTo(0, 6);
    expect(row.reduce((a, v) => a + (v - mean) ** 2, 0) / (dim - 1)).toBeCloseTo(1, 4);
    // A perfect norm_pix prediction un-normalises to the original pixels.
    const back = unnormalizePatches(normed, patches, dim);
    for (let i = 0; i < back.length; i++) expect(back[i]).toBeCloseTo(patches[i] as number, 5);
    // Brightness and contrast come from the target: the same prediction on a brighter, contrastier patch.
    const brighter = patches.map((v) => 2 * v + 3);
    const lifted = unnormalizePatches(normed, brighter, dim);
    for (let i = 0; i < lifted.length; i++) expect(lifted[i]).toBeCloseTo(brighter[i] as number, 4);
  });

  it('undoes CLIP mean/std exactly for every byte value, and clamps out-of-range values', () => {
    const size = 16;
    const rgb = Uint8Array.from({ length: size * size * 3 }, (_, i) => (i * 37 + 11) % 256);
    const chw = rgbToClip(rgb, size);
    expect(clipToRgb(chw, size)).toEqual(rgb);
    // The red plane of value 0 is −mean/std.
    expect(chw[0]).toBeCloseTo(((rgb[0] as number) / 255 - CLIP_PIXEL_MEAN[0]) / 0.26862954, 5);
    const extreme = new Float32Array(3 * 4).fill(100);
    extreme.fill(-100, 0, 4);
    const out = clipToRgb(extreme, 2);
    expect(Array.from(out.subarray(0, 3))).toEqual([0, 255, 255]);
    // Zero (the masked-patch fill) is CLIP's mean colour.
    expect(Array.from(clipToRgb(new Float32Array(3), 1))).toEqual(CLIP_PIXEL_MEAN.map((m) => Math.round(m * 255)));
  });

  it('lays images out in a grid, upscaled by nearest neighbour', () => {
    const a = new Uint8Array(2 * 2 * 3).fill(10);
    const b = new Uint8Array(2 * 2 * 3).fill(200);
    b.set([1, 2, 3], 3); // pixel (0, 1) of b
    const g = composeGrid([[a, b], [b, a]], 2, { scale: 3, gap: 1, background: 255 });
    expect([g.width, g.height]).toEqual([1 + 2 * 7, 1 + 2 * 7]);
    const px = (x: number, y: number): number[] => Array.from(g.data.subarray((y * g.width + x) * 3, (y * g.width + x) * 3 + 3));
    expect(px(0, 0)).toEqual([255, 255, 255]);
    expect(px(1, 1)).toEqual([10, 10, 10]);
    // b starts at x = 1 + 7 = 8; its pixel (0, 1) covers x 11..13 of rows 1..3.
    expect(px(11, 1)).toEqual([1, 2, 3]);
    expect(px(13, 3)).toEqual([1, 2, 3]);
    expect(px(14, 3)).toEqual([255, 255, 255]);
    expect(() => composeGrid([[a, new Uint8Array(3)]], 2)).toThrow(/row 0 image 1: got 3 bytes; expected 12/);
  });
});

describe('MIM reconstructions on wasm (tiny)', () => {
  const config = presetConfig('tiny', { dropout: 0 });
  let model: M3AEModel;
  let work: string;

  beforeAll(async () => {
    await chooseBackend({ backend: 'wasm' });
    model = createModel(config, { seed: 3 });
    work = await mkdtemp(join(tmpdir(), 'm3ae-recon-'));
  });
  afterAll(async () => {
    model.dispose();
    await rm(work, { recursive: true, force: true });
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

  it('pastes visible patches back exactly and shows removed ones as the mean colour in the masked input', async () => {
    const batch = syntheticBatch(config, 2, 4);
    const { mask } = await predictMim(model, inputOf(batch));
    const rows = await reconstructImages(model, inputOf(batch));
    const S = config.imageSize;
    const P = config.patchSize;
    const g = S / P;
    const grey = CLIP_PIXEL_MEAN.map((m) => Math.round(m * 255));
    rows.forEach((row, b) => {
      expect(row.original).toEqual(clipToRgb(batch.pixelValues, S, b * 3 * S * S));
      let visible = 0;
      let differs = 0;
      for (let n = 0; n < g * g; n++) {
        const [gy, gx] = [Math.floor(n / g), n % g];
        for (let ky = 0; ky < P; ky++) {
          for (let kx = 0; kx < P; kx++) {
            const o = ((gy * P + ky) * S + gx * P + kx) * 3;
            const orig = Array.from(row.original.subarray(o, o + 3));
            const rec = Array.from(row.reconstruction.subarray(o, o + 3));
            const shown = Array.from(row.masked.subarray(o, o + 3));
            if (mask[b * g * g + n] === 0) {
              visible++;
              expect(rec).toEqual(orig);
              expect(shown).toEqual(orig);
            } else {
              expect(shown).toEqual(grey);
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
                const o = ((gy * P + ky) * S + gx * P + kx) * 3;
                for (let c = 0; c < 3; c++) err += Math.abs((row.reconstruction[o + c] as number) - (row.original[o + c] as number));
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

  it('renders validation grids into a directory, keeps the newest few, and leaks no tensors', async () => {
    const batch = syntheticBatch(config, 3, 8);
    const L = config.maxTextLength;
    const plane = 3 * config.imageSize ** 2;
    const samples: ValidationSample[] = [0, 1, 2].map((b) => ({
      pixelValues: batch.pixelValues.slice(b * plane, (b + 1) * plane),
      inputIds: batch.inputIds.slice(b * L, (b + 1) * L),
      attentionMask: batch.attentionMask.slice(b * L, (b + 1) * L),
    }));
    const dir = join(work, 'ckpt');
    const renderer = new ValidationGridRenderer({ config, samples, dir, keep: 2, seed: 1 });
    const params = await flattenParams(model);
    expect(renderer.latest()).toBeUndefined();
    const first = await renderer.render(10, params);
    const tensors = tf.memory().numTensors;
    for (const step of [20, 30, 40]) await renderer.render(step, params);
    expect(tf.memory().numTensors).toBe(tensors);
    expect((await readdir(dir)).sort()).toEqual(['recon-30.png', 'recon-40.png']);
    expect(renderer.latestStep).toBe(40);
    const latest = renderer.latest() as Buffer;
    expect(latest.equals(await readFile(join(dir, 'recon-40.png')))).toBe(true);
    // Fixed noise and parameters: the same grid at every step.
    expect(latest.equals(first.png)).toBe(true);
    const meta = await sharp(latest).metadata();
    const cell = config.imageSize * Math.ceil(128 / config.imageSize);
    expect([meta.format, meta.width, meta.height, meta.channels]).toEqual(['png', 4 + 3 * (cell + 4), 4 + 3 * (cell + 4), 3]);
    // The row of image 0 in the PNG is original · masked · reconstruction of that image.
    const raw = await sharp(latest).raw().toBuffer();
    const expected = (await reconstructImages(model, batchSamples(config, samples, 1)))[0];
    const scale = cell / config.imageSize;
    const at = (x: number, y: number): number[] => Array.from(raw.subarray((y * (4 + 3 * (cell + 4)) + x) * 3, (y * (4 + 3 * (cell + 4)) + x) * 3 + 3));
    const S = config.imageSize;
    for (const [col, img] of [[0, expected?.original], [1, expected?.masked], [2, expected?.reconstruction]] as const) {
      for (const [x, y] of [[0, 0], [5, 17], [S - 1, S - 1]]) {
        expect(at(4 + col * (cell + 4) + x * scale, 4 + y * scale)).toEqual(Array.from((img as Uint8Array).subarray((y * S + x) * 3, (y * S + x) * 3 + 3)));
      }
    }
    // A restarted coordinator finds the newest grid on disk.
    const again = new ValidationGridRenderer({ config, samples, dir, keep: 2 });
    expect(await again.loadLatest()).toEqual({ step: 40, path: join(dir, 'recon-40.png') });
    expect(again.latest()?.equals(latest)).toBe(true);
    renderer.dispose();
    again.dispose();
  });

  it('loads a trainer checkpoint into a model (optionally with another mask ratio)', async () => {
    const dir = join(work, 'ckpts');
    const fixed = new Map<string, Float32Array>();
    for (const e of model.manifest.entries) if (!e.trainable) fixed.set(e.name, model.param(e.name).dataSync() as Float32Array);
    await saveCheckpoint(dir, { step: 7, manifest: model.manifest, params: await flattenParams(model), fixedParams: fixed, config });
    const loaded = await modelFromCheckpoint(dir, { mimMaskRatio: 0.5 });
    try {
      expect(loaded.info.step).toBe(7);
      expect(loaded.path).toBe(join(dir, 'ckpt-7.safetensors'));
      expect(loaded.model.config.mimMaskRatio).toBe(0.5);
      expect(await flattenParams(loaded.model)).toEqual(await flattenParams(model));
      expect((await predictMim(loaded.model, { ...inputOf(syntheticBatch(loaded.model.config, 1, 2)), mimNoise: visualisationNoise(1, numPatches(config)) })).keep).toBe(8);
    } finally {
      loaded.model.dispose();
    }
    await expect(modelFromCheckpoint(dir, { mimMaskRatio: 1.5 })).rejects.toThrow(/mimMaskRatio: got 1.5/);
    const bare = join(work, 'bare');
    await saveCheckpoint(bare, { step: 1, manifest: model.manifest, params: await flattenParams(model), fixedParams: fixed });
    await expect(modelFromCheckpoint(bare)).rejects.toThrow(/no model configuration stored/);
    await expect(modelFromCheckpoint(join(work, 'nowhere'))).rejects.toThrow(/no such file or directory/);
  });
});
