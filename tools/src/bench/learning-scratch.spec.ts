import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sharedDataForTests } from '@m3ae/data';
import { chooseBackend, readCheckpointInfo } from '@m3ae/model';
import { benchArea } from './areas.js';
import './learning.js';

const data = sharedDataForTests(resolve(import.meta.dirname, '../../..'), 'bench learning part (s) tests on real VQA-RAD and MedPix');

let dir = '';

beforeAll(async () => {
  await chooseBackend({ backend: 'wasm' });
  dir = await mkdtemp(join(tmpdir(), 'm3ae-bench-scratch-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Part (s) at the quick sizes, its models kept in `out`. */
async function scratch(out: string, extra = ''): Promise<Record<string, number | string | boolean>> {
  const env = process.env['M3AE_SHARED_DATA'];
  process.env['M3AE_SHARED_DATA'] = data;
  try {
    const report = await benchArea('learning').run({ backend: 'wasm', quick: true, extra: { size: `parts=s,scratch-carve=question,out=${out}${extra}` } });
    return report.figures;
  } finally {
    if (env === undefined) delete process.env['M3AE_SHARED_DATA'];
    else process.env['M3AE_SHARED_DATA'] = env;
  }
}

const best = (out: string, variant: string): Promise<Awaited<ReturnType<typeof readCheckpointInfo>>> => readCheckpointInfo(join(out, `ft-${variant}`, 'best', 'ckpt-2.safetensors'));

describe.skipIf(!data)('bench learning part (s) with MedPix pre-training (scratch-pretrain-steps)', () => {
  it('adds a fine-tuning from the pre-training checkpoint and leaves the other two models bit-identical', async () => {
    const plain = join(dir, 'plain');
    const pre = join(dir, 'pre');
    const without = await scratch(plain);
    const withPretraining = await scratch(pre, ',scratch-pretrain-steps=2,scratch-pretrain-batch=4');

    expect(without['scratch_pretrained_pct']).toBeUndefined();
    expect(withPretraining['scratch_pretrain_samples']).toBe(8);
    expect(withPretraining['scratch_pretrained_pct']).toBeTypeOf('number');
    expect(withPretraining['scratch_pretrained_minus_random_init_points']).toBeCloseTo((withPretraining['scratch_pretrained_pct'] as number) - (withPretraining['scratch_random_init_pct'] as number), 9);

    // The random-initialisation and question-only models take the checkpoint's configuration, which is the preset's:
    // the same parameters, to the bit, as the part without pre-training.
    for (const v of ['random', 'question-only']) {
      const [a, b] = [await best(plain, v), await best(pre, v)];
      expect(b.config).toEqual(a.config);
      expect(b.paramsSha256).toBe(a.paramsSha256);
    }
    // The pre-trained model starts from the pre-training checkpoint (same configuration, other parameters).
    const [random, pretrained, checkpoint] = [await best(pre, 'random'), await best(pre, 'pretrained'), await readCheckpointInfo(join(pre, 'scratch-pretrain', 'ckpt-2.safetensors'))];
    expect(pretrained.config).toEqual(random.config);
    expect(pretrained.paramsSha256).not.toBe(random.paramsSha256);
    expect(checkpoint.step).toBe(2);
    const backbone = { path: join(pre, 'scratch-pretrain', 'ckpt-2.safetensors'), params_sha256: checkpoint.paramsSha256 };
    expect(JSON.parse(pretrained.metadata['pretrained'] ?? '{}')).toEqual(backbone);
    // The random-initialisation model took only the checkpoint's configuration, and its metadata says so.
    expect(random.metadata['pretrained']).toBeUndefined();
    expect(JSON.parse(random.metadata['config_from'] ?? '{}')).toEqual(backbone);
  }, 240_000);
});
