import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chooseBackend } from './backend.js';
import { trimTextPadding, type PretrainBatch } from './batch.js';
import { presetConfig } from './config.js';
import { createModel, type M3AEModel } from './model.js';
import { batchCounts, computeGradients, type MicroBatchResult } from './pretrain.js';
import { syntheticBatch } from './synthetic.js';

const config = presetConfig('tiny');

/** The synthetic batch with every text cut after `keep` tokens (the rest padding), still `textLength` long. */
function shortTexts(b: PretrainBatch, keep: number): PretrainBatch {
  const L = b.textLength;
  const out = { ...b, inputIds: b.inputIds.slice(), attentionMask: b.attentionMask.slice(), mlmInputIds: b.mlmInputIds.slice(), mlmLabels: b.mlmLabels.slice() };
  for (let s = 0; s < b.batchSize; s++) {
    for (let t = keep; t < L; t++) {
      const i = s * L + t;
      out.inputIds[i] = config.padTokenId;
      out.mlmInputIds[i] = config.padTokenId;
      out.attentionMask[i] = 0;
      out.mlmLabels[i] = -100;
    }
    // At least one MLM label per sample, inside the kept text.
    if (!out.mlmLabels.subarray(s * L, s * L + keep).some((l) => l !== -100)) out.mlmLabels[s * L + 1] = out.inputIds[s * L + 1] as number;
  }
  return out;
}

describe('text padded to the longest text of the micro-batch', () => {
  it('trimTextPadding drops only padding columns, keeping every real token and label', () => {
    const b = shortTexts(syntheticBatch(config, 3, 1), 6);
    const t = trimTextPadding(b);
    expect(t.textLength).toBe(6);
    for (let s = 0; s < 3; s++) {
      for (let k = 0; k < 6; k++) {
        expect(t.inputIds[s * 6 + k]).toBe(b.inputIds[s * b.textLength + k]);
        expect(t.mlmLabels[s * 6 + k]).toBe(b.mlmLabels[s * b.textLength + k]);
        expect(t.attentionMask[s * 6 + k]).toBe(b.attentionMask[s * b.textLength + k]);
      }
    }
    expect(trimTextPadding(t)).toBe(t); // nothing left to cut
    const full = syntheticBatch(config, 3, 1);
    full.attentionMask[2 * full.textLength + full.textLength - 1] = 1; // one sample fills the length
    expect(trimTextPadding(full)).toBe(full);
  });

  for (const backend of ['cpu', 'wasm'] as const) {
    describe(`on ${backend}`, () => {
      let model: M3AEModel;
      beforeAll(async () => {
        await chooseBackend({ backend });
        model = createModel(config, { seed: 4 });
      });
      afterAll(() => model.dispose());

      it('gives the gradients and losses of the batch as padded (dropout on)', async () => {
        const batch = shortTexts(syntheticBatch(config, 4, 9), 7);
        const normalizers = batchCounts(config, batch);
        const run = (textPadding: 'longest' | 'as-batched'): Promise<MicroBatchResult> => computeGradients(model, batch, { normalizers, training: true, textPadding });
        const padded = await run('as-batched');
        const trimmed = await run('longest');
        expect(trimmed.counts).toEqual(padded.counts);
        expect(trimmed.correct).toEqual(padded.correct);
        let dd = 0;
        let nn = 0;
        for (let i = 0; i < padded.grads.length; i++) {
          dd += ((trimmed.grads[i] as number) - (padded.grads[i] as number)) ** 2;
          nn += (padded.grads[i] as number) ** 2;
        }
        for (const o of ['mlm', 'mim', 'itm'] as const) expect(Math.abs(trimmed.sums[o] - padded.sums[o]) / Math.abs(padded.sums[o]), o).toBeLessThan(1e-6);
        expect(nn).toBeGreaterThan(0);
        console.info(`${backend}: trimmed vs padded gradient relative L2 ${Math.sqrt(dd / nn).toExponential(2)}`);
        expect(Math.sqrt(dd / nn)).toBeLessThan(1e-6);
      }, 60_000);
    });
  }
});
