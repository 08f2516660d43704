import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadRunConfig } from '@m3ae/protocol';
import { finetuneOptionsFromRun, finetuneRunConfig, isTaskRun } from './run-config.js';
import { planFinetune, resolveCarve } from './finetune.js';

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

  it('carries the VQA loss and the head inputs under one name: task.vqaLoss / M3AE_TASK_VQA_LOSS, task.inputs / M3AE_TASK_INPUTS', () => {
    const base = { task: { name: 'vqa-rad', data: '/d', init: 'random', preset: 'tiny' } };
    expect(finetuneOptionsFromRun(loadRunConfig({ base, env: {} }))).toMatchObject({ vqaLoss: undefined, inputs: undefined });
    const fromFile = finetuneOptionsFromRun(loadRunConfig({ base: { task: { ...base.task, vqaLoss: 'softmax', inputs: 'text' } }, env: {} }));
    expect(fromFile).toMatchObject({ vqaLoss: 'softmax', inputs: 'text' });
    const fromEnv = finetuneOptionsFromRun(loadRunConfig({ base, env: { M3AE_TASK_VQA_LOSS: 'bce-mean', M3AE_TASK_INPUTS: 'image+text' } }));
    expect(fromEnv).toMatchObject({ vqaLoss: 'bce-mean', inputs: 'image+text' });
    // m3ae finetune's options round-trip through the run configuration the trainer reads.
    const round = finetuneOptionsFromRun(finetuneRunConfig({ task: 'vqa-rad', data: '/d', init: 'random', preset: 'tiny', output: '/tmp/x', vqaLoss: 'softmax', inputs: 'text' }, {}));
    expect(round).toMatchObject({ vqaLoss: 'softmax', inputs: 'text' });
    const run = (task: Record<string, unknown>) => finetuneOptionsFromRun(loadRunConfig({ base: { task: { ...base.task, ...task } }, env: {} }));
    expect(() => run({ vqaLoss: 'focal' })).toThrow('task.vqaLoss = "focal": expected one of bce-sum, bce-mean, softmax');
    expect(() => run({ inputs: 'image' })).toThrow('task.inputs = "image": expected one of image+text, text');
  });

  it('carries the head bias under one name: task.headBias / M3AE_TASK_HEAD_BIAS / --head-bias', () => {
    const base = { task: { name: 'vqa-rad', data: '/d', init: 'random', preset: 'tiny' } };
    expect(finetuneOptionsFromRun(loadRunConfig({ base, env: {} })).headBias).toBeUndefined();
    expect(finetuneOptionsFromRun(loadRunConfig({ base: { task: { ...base.task, headBias: 'prior' } }, env: {} })).headBias).toBe('prior');
    expect(finetuneOptionsFromRun(loadRunConfig({ base, env: { M3AE_TASK_HEAD_BIAS: 'zero' } })).headBias).toBe('zero');
    const round = finetuneOptionsFromRun(finetuneRunConfig({ task: 'vqa-rad', data: '/d', init: 'random', preset: 'tiny', output: '/tmp/x', headBias: 'prior' }, {}));
    expect(round.headBias).toBe('prior');
    expect(() => finetuneOptionsFromRun(loadRunConfig({ base: { task: { ...base.task, headBias: 'log' } }, env: {} }))).toThrow('task.headBias = "log": expected one of zero, prior');
  });

  it('carries the carve grouping under one name: task.carveBy / M3AE_TASK_CARVE_BY / --carve-by', () => {
    const base = { task: { name: 'vqa-rad', data: '/d', init: 'random', preset: 'tiny' } };
    expect(finetuneOptionsFromRun(loadRunConfig({ base, env: {} })).carveBy).toBeUndefined();
    expect(finetuneOptionsFromRun(loadRunConfig({ base: { task: { ...base.task, carveBy: 'question' } }, env: {} })).carveBy).toBe('question');
    expect(finetuneOptionsFromRun(loadRunConfig({ base, env: { M3AE_TASK_CARVE_BY: 'image' } })).carveBy).toBe('image');
    expect(() => finetuneOptionsFromRun(loadRunConfig({ base: { task: { ...base.task, carveBy: 'caption' } }, env: {} }))).toThrow('task.carveBy = "caption": expected one of image, question');
    // A carve's groupBy travels as task.carveBy (the file's carve object keeps its three numbers) and comes back the same.
    const o = { task: 'vqa-rad' as const, data: '/d', init: 'random' as const, preset: 'tiny', output: '/tmp/x' };
    const withCarve = finetuneRunConfig({ ...o, carve: { seed: 0, valFraction: 0.1, testFraction: 0.15, groupBy: 'question' } }, {});
    expect(withCarve.task.carve).toEqual({ seed: 0, valFraction: 0.1, testFraction: 0.15 });
    expect(withCarve.task.carveBy).toBe('question');
    const round = finetuneOptionsFromRun(withCarve);
    expect(resolveCarve(round)).toEqual({ seed: 0, valFraction: 0.1, testFraction: 0.15, groupBy: 'question' });
    expect(finetuneRunConfig({ ...o, carveBy: 'question' }, {}).task).toMatchObject({ carveBy: 'question' });
    expect(finetuneRunConfig(o, {}).task.carveBy).toBeUndefined();
  });

  it('resolves the carve: image by default (left out, as before the option), question on request, only for VQA-RAD', () => {
    expect(resolveCarve({ task: 'vqa-rad' })).toEqual({ seed: 0, valFraction: 0.1, testFraction: 0 });
    expect(resolveCarve({ task: 'vqa-rad', carveBy: 'image' })).toEqual({ seed: 0, valFraction: 0.1, testFraction: 0 });
    expect(resolveCarve({ task: 'vqa-rad', carve: { seed: 2, valFraction: 0.2, groupBy: 'image' } })).toEqual({ seed: 2, valFraction: 0.2 });
    expect(resolveCarve({ task: 'vqa-rad', carveBy: 'question' })).toEqual({ seed: 0, valFraction: 0.1, testFraction: 0, groupBy: 'question' });
    expect(resolveCarve({ task: 'vqa-rad', carve: { seed: 1, valFraction: 0.1, testFraction: 0.15 }, carveBy: 'question' })).toEqual({ seed: 1, valFraction: 0.1, testFraction: 0.15, groupBy: 'question' });
    expect(resolveCarve({ task: 'slake' })).toBeUndefined();
    expect(resolveCarve({ task: 'retrieval', carveBy: 'image' })).toBeUndefined();
    expect(() => resolveCarve({ task: 'slake', carveBy: 'question' })).toThrow('carveBy: got "question" for slake; expected it only for vqa-rad');
    expect(() => resolveCarve({ task: 'retrieval', carve: { seed: 0, valFraction: 0.1, groupBy: 'question' } })).toThrow('carveBy: got "question" for retrieval; expected it only for vqa-rad');
    expect(() => resolveCarve({ task: 'vqa-rad', carveBy: 'caption' as 'image' })).toThrow('carveBy: got "caption"; expected one of image, question');
    expect(() => resolveCarve({ task: 'vqa-rad', carve: { seed: 0, valFraction: 0.1, groupBy: 'image' }, carveBy: 'question' })).toThrow(
      'carveBy: got "question" with carve.groupBy "image"; expected them to agree',
    );
  });

  it("m3ae finetune's exchange options reach the run's training section", () => {
    const o = { task: 'vqa-rad' as const, data: '/d', init: 'random' as const, preset: 'tiny', output: '/tmp/x' };
    const c = finetuneRunConfig({ ...o, gradEncoding: 'fx53', microBatchesPerJob: 2, shards: 3 }, {});
    expect(c.training).toMatchObject({ gradEncoding: 'fx53', microBatchesPerJob: 2, shards: 3 });
    expect(finetuneRunConfig(o, {}).training).toMatchObject({ gradEncoding: 'f32', microBatchesPerJob: 1, shards: 1 });
    expect(finetuneRunConfig({ ...o, microBatchesPerJob: 2 }, {}).training).toMatchObject({ gradEncoding: 'f32', microBatchesPerJob: 2 });
  });

  it('planFinetune refuses a VQA loss for a task without a VQA head, and unknown names, before reading any data', async () => {
    const o = { data: '/nonexistent', init: 'random' as const, preset: 'tiny' };
    await expect(planFinetune({ ...o, task: 'melinda', vqaLoss: 'softmax' })).rejects.toThrow('vqaLoss: got "softmax" for melinda; expected it only for a VQA task');
    await expect(planFinetune({ ...o, task: 'vqa-rad', vqaLoss: 'focal' as 'softmax' })).rejects.toThrow('vqaLoss: got "focal"; expected one of bce-sum, bce-mean, softmax');
    await expect(planFinetune({ ...o, task: 'vqa-rad', inputs: 'image' as 'text' })).rejects.toThrow('inputs: got "image"; expected one of image+text, text');
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
