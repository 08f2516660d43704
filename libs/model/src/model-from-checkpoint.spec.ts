import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chooseBackend } from './backend.js';
import { saveCheckpoint } from './checkpoint/index.js';
import { numPatches, presetConfig } from './config.js';
import { createModel, flattenParams } from './model.js';
import { modelFromCheckpoint } from './model-from-checkpoint.js';
import { predictMim, visualisationNoise } from './reconstruct.js';
import { syntheticBatch } from './synthetic.js';

describe('modelFromCheckpoint', () => {
  it('loads a trainer checkpoint into a model (optionally with another mask ratio)', async () => {
    await chooseBackend({ backend: 'wasm' });
    const config = presetConfig('tiny', { dropout: 0 });
    const model = createModel(config, { seed: 3 });
    const work = await mkdtemp(join(tmpdir(), 'm3ae-from-ckpt-'));
    try {
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
        expect((await predictMim(loaded.model, { ...syntheticBatch(loaded.model.config, 1, 2), mimNoise: visualisationNoise(1, numPatches(config)) })).keep).toBe(8);
      } finally {
        loaded.model.dispose();
      }
      await expect(modelFromCheckpoint(dir, { mimMaskRatio: 1.5 })).rejects.toThrow(/mimMaskRatio: got 1.5/);
      const bare = join(work, 'bare');
      await saveCheckpoint(bare, { step: 1, manifest: model.manifest, params: await flattenParams(model), fixedParams: fixed });
      await expect(modelFromCheckpoint(bare)).rejects.toThrow(/no model configuration stored/);
      await expect(modelFromCheckpoint(join(work, 'nowhere'))).rejects.toThrow(/no such file or directory/);
    } finally {
      model.dispose();
      await rm(work, { recursive: true, force: true });
    }
  });
});
