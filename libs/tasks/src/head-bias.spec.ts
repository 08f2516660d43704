import { describe, expect, it } from 'vitest';
import { chooseBackend, flattenDownstream, presetConfig } from '@m3ae/model';
import { answerPriorBias, createTaskModel, planFinetune, type FinetunePlan, type HeadBias } from './finetune.js';

describe('the head bias initialisation (headBias)', () => {
  it('prior: the log frequency of each training answer under softmax, its logit under BCE; unseen labels ignored', () => {
    const labels = [0, 0, 1, -1, 0, 2];
    const soft = answerPriorBias(labels, 4, 'softmax');
    expect(Array.from(soft.subarray(0, 3))).toEqual([Math.log(3 / 5), Math.log(1 / 5), Math.log(1 / 5)].map(Math.fround));
    // A label never seen in training gets half an occurrence, below every seen one.
    expect(soft[3]).toBeCloseTo(Math.log(0.5 / 5), 6);
    // Softmax of the bias is the training prior over the seen answers (up to the half count).
    const z = Array.from(soft).reduce((a, b) => a + Math.exp(b), 0);
    expect(Math.exp(soft[0] as number) / z).toBeCloseTo(3 / 5.5, 6);
    const bce = answerPriorBias(labels, 4, 'bce');
    expect(bce[0]).toBeCloseTo(Math.log(3 / 5 / (2 / 5)), 6);
    expect(bce[1]).toBeCloseTo(Math.log(1 / 5 / (4 / 5)), 6);
    expect(Array.from(answerPriorBias([-1, -1], 3, 'softmax'))).toEqual([0, 0, 0]);
    expect(() => answerPriorBias([3], 3, 'softmax')).toThrow('labels[0]: got 3; expected -1 or an index in [0, 3)');
  });

  it("createTaskModel writes the prior into the head's last bias only with headBias: prior", async () => {
    await chooseBackend({ backend: 'cpu' });
    const config = { ...presetConfig('tiny'), imageSize: 16 };
    const head = { kind: 'vqa' as const, outputs: 3, loss: 'softmax' as const };
    const labels = [0, 1, 1, 1, -1];
    const plan = (headBias: HeadBias): FinetunePlan =>
      ({
        config,
        head,
        backbone: { config, info: undefined, path: undefined },
        settings: { seed: 0, init: 'random', headBias },
        train: { kind: 'labeled', task: 'vqa', ids: labels.map(String), examples: labels.map((label) => ({ imagePath: 'x', text: 'q', label })) },
      }) as unknown as FinetunePlan;
    const biasOf = async (headBias: HeadBias): Promise<number[]> => {
      const model = await createTaskModel(plan(headBias));
      const entry = model.manifest.entries.find((e) => e.name === 'vqa_head.3.bias');
      const flat = await flattenDownstream(model);
      model.dispose();
      return Array.from(flat.subarray(entry?.offset ?? -1, (entry?.offset ?? -1) + 3));
    };
    expect(await biasOf('zero')).toEqual([0, 0, 0]);
    const prior = await biasOf('prior');
    expect(prior[0]).toBeCloseTo(Math.log(1 / 4), 6);
    expect(prior[1]).toBeCloseTo(Math.log(3 / 4), 6);
    expect(prior[2]).toBeCloseTo(Math.log(0.5 / 4), 6);
  });

  it('planFinetune refuses an unknown head bias, and a prior on a retrieval head, before reading any data', async () => {
    const o = { data: '/nonexistent', init: 'random' as const, preset: 'tiny' };
    await expect(planFinetune({ ...o, task: 'vqa-rad', headBias: 'uniform' as HeadBias })).rejects.toThrow('headBias: got "uniform"; expected one of zero, prior');
    await expect(planFinetune({ ...o, task: 'retrieval', headBias: 'prior' })).rejects.toThrow('headBias: got "prior" for retrieval; expected it only for a VQA or classification task');
  });
});
