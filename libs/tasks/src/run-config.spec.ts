import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadRunConfig } from '@m3ae/protocol';
import { finetuneOptionsFromRun, isTaskRun } from './run-config.js';

describe('the run configuration of a fine-tuning run', () => {
  it('reads the Kubernetes example into the options m3ae finetune takes', () => {
    const file = resolve(import.meta.dirname, '../../../k8s/examples/finetune-vqa-rad.yaml');
    const config = loadRunConfig({ base: parseYaml(readFileSync(file, 'utf8')) as Record<string, unknown>, env: {} });
    expect(isTaskRun(config)).toBe(true);
    const o = finetuneOptionsFromRun(config);
    expect(o).toMatchObject({ task: 'vqa-rad', data: '/data/datasets/vqa_rad', checkpoint: '/var/lib/m3ae/checkpoints-pretrain', init: 'pretrained', microBatch: 8, seed: 0 });
    expect(o.carve).toEqual({ seed: 0, valFraction: 0.1, testFraction: 0 });
    // Unset: the official settings apply (planFinetune).
    expect(o.epochs).toBeUndefined();
    expect(o.learningRate).toBeUndefined();
  });

  it('names the task field that is wrong or missing', () => {
    const run = (task: Record<string, unknown>) => finetuneOptionsFromRun(loadRunConfig({ base: { task }, env: {} }));
    expect(() => run({ name: 'vqa-radd', data: '/d', checkpoint: '/c' })).toThrow('task.name = "vqa-radd": expected pretrain or one of vqa-rad, slake, vqa-med-2019, melinda, retrieval');
    expect(() => run({ name: 'slake', checkpoint: '/c' })).toThrow(ConfigError);
    expect(() => run({ name: 'slake', checkpoint: '/c' })).toThrow(/task\.data = undefined: expected the task's dataset root/);
    expect(() => run({ name: 'slake', data: '/d' })).toThrow(/--checkpoint \(task\.checkpoint\) is required/);
    expect(() => run({ name: 'retrieval', data: '/d', checkpoint: '/c', source: 'pubmed' })).toThrow(/task\.source = "pubmed": expected one of/);
    expect(() => loadRunConfig({ base: { task: { name: 'slake' }, training: { epochs: 0 } }, env: {} })).toThrow(/training\.epochs = 0/);
    expect(isTaskRun(loadRunConfig({ env: {} }))).toBe(false);
    expect(() => loadRunConfig({ base: { task: { name: 'slake' }, model: { preset: 'base' } }, env: {} })).toThrow(
      'model.preset = "base": applies to pre-training only; a fine-tuning run\'s backbone is task.checkpoint\'s (task.preset with task.init: random)',
    );
  });
});
