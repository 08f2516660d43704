import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { denormalizeRgb, type ValidationSample } from '@m3ae/data';
import { chooseBackend, createModel, flattenParams, presetConfig, reconstructImages, syntheticBatch, type M3AEModel, type ReconstructionRow } from '@m3ae/model';
import { batchSamples } from './reconstruction-grid.js';
import { ValidationGridRenderer } from './validation-grids.js';

describe('validation reconstruction grids on wasm (tiny)', () => {
  const config = presetConfig('tiny', { dropout: 0 });
  let model: M3AEModel;
  let work: string;

  beforeAll(async () => {
    await chooseBackend({ backend: 'wasm' });
    model = createModel(config, { seed: 3 });
    work = await mkdtemp(join(tmpdir(), 'm3ae-grids-'));
  });
  afterAll(async () => {
    model.dispose();
    await rm(work, { recursive: true, force: true });
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
    const expected = (await reconstructImages(model, batchSamples(config, samples, 1)))[0] as ReconstructionRow;
    const rgb = (img: Float32Array): Uint8Array => denormalizeRgb(img, config.imageSize, config.imageSize);
    const scale = cell / config.imageSize;
    const at = (x: number, y: number): number[] => Array.from(raw.subarray((y * (4 + 3 * (cell + 4)) + x) * 3, (y * (4 + 3 * (cell + 4)) + x) * 3 + 3));
    const S = config.imageSize;
    for (const [col, img] of [[0, rgb(expected.original)], [1, rgb(expected.masked)], [2, rgb(expected.reconstruction)]] as const) {
      for (const [x, y] of [[0, 0], [5, 17], [S - 1, S - 1]]) {
        expect(at(4 + col * (cell + 4) + x * scale, 4 + y * scale)).toEqual(Array.from(img.subarray((y * S + x) * 3, (y * S + x) * 3 + 3)));
      }
    }
    // A restarted coordinator finds the newest grid on disk.
    const again = new ValidationGridRenderer({ config, samples, dir, keep: 2 });
    expect(await again.loadLatest()).toEqual({ step: 40, path: join(dir, 'recon-40.png') });
    expect(again.latest()?.equals(latest)).toBe(true);
    renderer.dispose();
    again.dispose();
  });
});
