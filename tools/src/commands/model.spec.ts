import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatModelInfo, modelInfo } from './model.js';

describe('m3ae model info', () => {
  it('counts base as the official model (365,589,083 trainable parameters)', async () => {
    const info = await modelInfo({ preset: 'base' });
    expect(info.total.trainable).toBe(365_589_083);
    expect(info.total.fixed).toBe(124_800);
    expect(info.modules.map((m) => m.module)).toEqual(['vision_encoder', 'language_encoder', 'fusion', 'mlm_head', 'mim_head', 'itm_head']);
    expect(info.modules.reduce((s, m) => s + m.trainable, 0)).toBe(info.total.trainable);
    const text = formatModelInfo(info);
    expect(text).toMatch(/total\s+365589083\s+124800/);
    expect(text).toContain(info.manifestHash);
  });

  it('reads a config file with a preset and overrides, and rejects bad values by name', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'm3ae-model-info-'));
    const good = join(dir, 'good.json');
    writeFileSync(good, JSON.stringify({ preset: 'tiny', vocabSize: 2000 }));
    const tiny = await modelInfo({ preset: 'tiny' });
    const bigger = await modelInfo({ config: good });
    // Two more vocabulary rows per token: word embeddings (D = 32) and the MLM decoder (32) plus its bias.
    expect(bigger.total.trainable - tiny.total.trainable).toBe(1000 * (32 + 32 + 1));
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ preset: 'tiny', numHeads: 5 }));
    await expect(modelInfo({ config: bad })).rejects.toThrow(/bad\.json\.hiddenSize: got 32; expected a multiple of numHeads \(5\)/);
    await expect(modelInfo({ preset: 'huge' })).rejects.toThrow(/preset: got "huge"/);
  });
});
