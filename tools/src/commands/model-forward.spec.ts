import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  chooseBackend,
  computeGradients,
  computeLosses,
  createModel,
  getModelParams,
  modelManifest,
  presetConfig,
  readOfficialWeights,
  saveCheckpoint,
  SafetensorsFile,
  syntheticBatch,
  unflatten,
  writeBatchFile,
  writeOfficialWeights,
  writeSafetensors,
  type M3AEModel,
  type PretrainBatch,
} from '@m3ae/model';
import { batchCounts, modelForward } from './model-forward.js';

const run = promisify(execFile);
const bin = resolve(import.meta.dirname, '../../bin/m3ae.js');
const built = existsSync(resolve(import.meta.dirname, '../../dist/cli.js'));

const tiny = presetConfig('tiny');
let dir: string;
let model: M3AEModel;
let batch: PretrainBatch;
const files = { config: '', weights: '', batch: '' };

beforeAll(async () => {
  await chooseBackend({ backend: 'wasm' });
  dir = await mkdtemp(join(tmpdir(), 'm3ae-forward-'));
  model = createModel(tiny, { seed: 5 });
  batch = syntheticBatch(tiny, 3, 7);
  files.config = join(dir, 'config.json');
  files.weights = join(dir, 'weights.safetensors');
  files.batch = join(dir, 'batch.safetensors');
  // Training weights of 3/0.5/2 must not change the reference figures (plain sum of the three means).
  await writeFile(files.config, JSON.stringify({ preset: 'tiny', objectives: { mlm: { enabled: true, weight: 3 }, mim: { enabled: true, weight: 0.5 }, itm: { enabled: true, weight: 2 } } }));
  await writeOfficialWeights(files.weights, await getModelParams(model), tiny);
  await writeBatchFile(files.batch, batch, { intDtype: 'I64' });
});

afterAll(async () => {
  model.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe('m3ae model forward', () => {
  it('prints the official means of the three losses and writes ∇(mlm + mim + itm) under the official names', async () => {
    const grads = join(dir, 'grads.safetensors');
    const warnings: string[] = [];
    const before = tf.memory().numTensors;
    const result = await modelForward({ ...files, grads }, (l) => warnings.push(l));
    expect(tf.memory().numTensors).toBe(before);
    expect(warnings).toEqual([]);

    const direct = await computeLosses(model, batch, { training: false });
    const counts = batchCounts(tiny, batch);
    expect(direct.counts).toEqual(counts);
    expect(result.mlm_loss).toBeCloseTo(direct.sums.mlm / counts.mlm, 5);
    expect(result.mim_loss).toBeCloseTo(direct.sums.mim / counts.mim, 5);
    expect(result.itm_loss).toBeCloseTo(direct.sums.itm / counts.itm, 5);
    expect(result.mlm_accuracy).toBeCloseTo(direct.correct.mlm / counts.mlm, 10);
    expect(result.itm_accuracy).toBeCloseTo(direct.correct.itm / counts.itm, 10);
    for (const k of ['mlm_loss', 'mim_loss', 'itm_loss'] as const) expect(result[k]).toBeGreaterThan(0);
    for (const k of ['mlm_accuracy', 'itm_accuracy'] as const) {
      expect(result[k]).toBeGreaterThanOrEqual(0);
      expect(result[k]).toBeLessThanOrEqual(1);
    }

    const file = await SafetensorsFile.open(grads);
    try {
      expect(file.info('vision_encoder.visual.conv1.weight').shape).toEqual([32, 3, 8, 8]);
      expect(file.info('vision_encoder.visual.transformer.resblocks.0.attn.in_proj_weight').shape).toEqual([96, 32]);
      expect(file.info('itm_head.fc.weight').shape).toEqual([2, 64]);
      expect(file.has('mim_head.decoder_pos_embed')).toBe(false); // fixed, no gradient
      expect(Number(file.metadata['mlm_loss'])).toBeCloseTo(result.mlm_loss ?? NaN, 6);
    } finally {
      await file.close();
    }
    // Back to our names: equal to the model's own gradient with weights 1 and the batch's counts as normalisers.
    const { params: back } = await readOfficialWeights(grads, tiny);
    const expected = unflatten(model.manifest, (await computeGradients(model, batch, { normalizers: counts, training: false })).grads);
    let worst = 0;
    let scale = 0;
    for (const [name, g] of expected) {
      const b = back.get(name) as Float32Array;
      for (let i = 0; i < g.length; i++) {
        worst = Math.max(worst, Math.abs((g[i] as number) - (b[i] as number)));
        scale = Math.max(scale, Math.abs(g[i] as number));
      }
    }
    expect(scale).toBeGreaterThan(0);
    expect(worst).toBeLessThanOrEqual(1e-6 * scale);
  });

  it('reads I32 batches too and names what is wrong in a bad batch or weights file', async () => {
    const i32 = join(dir, 'batch-i32.safetensors');
    await writeBatchFile(i32, batch, { intDtype: 'I32' });
    const a = await modelForward({ ...files, batch: i32 }, () => undefined);
    const b = await modelForward(files, () => undefined);
    expect(a).toEqual(b);

    const noLabels = join(dir, 'bad-batch.safetensors');
    await writeSafetensors(noLabels, [['pixel_values', { dtype: 'F32', shape: [1, 3, 32, 32], data: new Float32Array(3 * 32 * 32) }]]);
    await expect(modelForward({ ...files, batch: noLabels })).rejects.toThrow(/tensor input_ids is missing; a batch file holds pixel_values, input_ids/);
    const wrongSize = join(dir, 'wrong-size.safetensors');
    await writeSafetensors(wrongSize, [['pixel_values', { dtype: 'F32', shape: [1, 3, 16, 16], data: new Float32Array(3 * 16 * 16) }]]);
    await expect(modelForward({ ...files, batch: wrongSize })).rejects.toThrow('tensor pixel_values has shape [1, 3, 16, 16]; expected [B, 3, 32, 32] (config.imageSize)');
    await expect(modelForward({ ...files, weights: files.batch })).rejects.toThrow(/official checkpoint: \d+ tensor\(s\) missing: vision_encoder\.visual\.conv1\.weight/);
  });
});

describe('against the PyTorch reference (a committed fixture: tools/reference/make_fixture.py)', () => {
  // A state dict and a batch that PyTorch wrote from its own module structure and names — independent of the
  // mapping under test — with the five figures and every parameter's gradient norm PyTorch computed on them.
  const fixture = resolve(import.meta.dirname, '../../test/fixtures/pytorch-reference');
  const expected = JSON.parse(readFileSync(join(fixture, 'expected.json'), 'utf8')) as { figures: Record<string, number>; gradNorms: Record<string, number> };

  it('imports the PyTorch state dict and reproduces its losses, accuracies and per-tensor gradient norms', async () => {
    const grads = join(dir, 'pytorch-grads.safetensors');
    const warnings: string[] = [];
    const result = await modelForward({ config: join(fixture, 'config.json'), weights: join(fixture, 'weights.safetensors'), batch: join(fixture, 'batch.safetensors'), grads, backend: 'wasm' }, (l) => warnings.push(l));
    expect(warnings).toEqual([]);
    for (const k of ['mlm_loss', 'mim_loss', 'itm_loss', 'mlm_accuracy', 'itm_accuracy'] as const) {
      const want = expected.figures[k] as number;
      expect(Math.abs((result[k] as number) - want) / Math.max(Math.abs(want), 1e-12), k).toBeLessThan(1e-5);
    }
    const file = await SafetensorsFile.open(grads);
    try {
      const names = Object.keys(expected.gradNorms).sort();
      expect(file.names().filter((n) => n !== 'mim_head.decoder_pos_embed').sort()).toEqual(names);
      // Each tensor against its own scale, floored at 1e-4 of the largest (attention key biases have an exactly zero
      // gradient in exact arithmetic: only rounding noise is left there).
      const floor = 1e-4 * Math.max(...Object.values(expected.gradNorms));
      for (const n of names) {
        const { data } = await file.readFloat32(n);
        const norm = Math.sqrt(data.reduce((a, x) => a + x * x, 0));
        const want = expected.gradNorms[n] as number;
        expect(Math.abs(norm - want) / Math.max(want, floor), n).toBeLessThan(1e-3);
      }
    } finally {
      await file.close();
    }
  });
});

describe.skipIf(!built)('as a real process', () => {
  it('model forward prints one JSON line; checkpoint inspect describes a checkpoint directory', async () => {
    const { stdout } = await run('node', [bin, 'model', 'forward', '--config', files.config, '--weights', files.weights, '--batch', files.batch, '--backend', 'wasm']);
    const lines = stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const printed = JSON.parse(lines[0] as string) as Record<string, number>;
    expect(Object.keys(printed)).toEqual(['mlm_loss', 'mim_loss', 'itm_loss', 'mlm_accuracy', 'itm_accuracy']);
    const inProcess = await modelForward(files, () => undefined);
    for (const [k, v] of Object.entries(inProcess)) expect(printed[k]).toBeCloseTo(v as number, 6);

    const ckdir = join(dir, 'ckpts');
    const manifest = modelManifest(tiny);
    const params = new Float32Array(manifest.size).map((_, i) => Math.cos(i));
    const fixed = (await getModelParams(model)).get('mim_head.decoder_pos_embed') as Float32Array;
    const saved = await saveCheckpoint(ckdir, { step: 42, manifest, params, fixedParams: new Map([['mim_head.decoder_pos_embed', fixed]]), config: tiny, metadata: { sampler_step: '42' } });
    const out = await run('node', [bin, 'checkpoint', 'inspect', ckdir, '--verify']);
    const info = JSON.parse(out.stdout) as Record<string, unknown>;
    expect(info).toMatchObject({ step: 42, params_sha256: saved.paramsSha256, manifest_hash: manifest.hash, preset: 'tiny', param_count: manifest.size, params_sha256_ok: true });
    expect(info['metadata']).toEqual({ sampler_step: '42' });

    const failed = await run('node', [bin, 'model', 'forward', '--config', files.config, '--weights', files.weights, '--batch', join(dir, 'nope.safetensors')]).catch((e: { code: number; stderr: string }) => e);
    expect((failed as { code: number }).code).toBe(1);
    expect((failed as { stderr: string }).stderr).toMatch(/^m3ae: .*nope\.safetensors/);
  });
});
