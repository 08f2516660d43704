import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chooseBackend } from './backend.js';
import { presetConfig } from './config.js';
import { createModel, type M3AEModel } from './model.js';
import { batchCounts, computeGradients, computeLosses, type LossNormalizers } from './pretrain.js';
import { syntheticBatch } from './synthetic.js';

/**
 * Central finite differences against computeGradients on the cpu backend. The function is the sum of the
 * three normalised losses with dropout on (the masks are a fixed function of the seeds, so it is smooth).
 * float32: the loss (≈ 9) carries ~1e-6 rounding, so with a step of h = 2e-2 the difference quotient is good to
 * ~1e-5; each checked element is the one with the largest gradient in its tensor.
 */
describe('finite differences (cpu, tiny)', () => {
  const config = presetConfig('tiny');
  const batch = syntheticBatch(config, 2, 31);
  let model: M3AEModel;
  let normalizers: LossNormalizers;

  beforeAll(async () => {
    await chooseBackend({ backend: 'cpu' });
    model = createModel(config, { seed: 5 });
    normalizers = batchCounts(config, batch);
  });
  afterAll(async () => {
    model.dispose();
    await chooseBackend({ backend: 'wasm' });
  });

  const loss = async (): Promise<number> => {
    const r = await computeLosses(model, batch, { training: true });
    return r.sums.mlm / normalizers.mlm + r.sums.mim / normalizers.mim + r.sums.itm / normalizers.itm;
  };

  const setElement = (name: string, index: number, value: number): void => {
    const v = model.param(name);
    const data = v.dataSync().slice() as Float32Array;
    data[index] = value;
    tf.tidy(() => v.assign(tf.tensor(data, v.shape)));
  };

  it('agree with the analytic gradient across every module', async () => {
    const g = await computeGradients(model, batch, { normalizers, training: true });
    const names = [
      'vision_encoder.visual.patch_embed.weight',
      'vision_encoder.visual.class_embedding',
      'vision_encoder.visual.positional_embedding',
      'vision_encoder.visual.transformer.resblocks.1.attn.k_proj.weight',
      'vision_encoder.visual.ln_post.weight',
      'language_encoder.embeddings.word_embeddings.weight',
      'language_encoder.embeddings.position_embeddings.weight',
      'language_encoder.encoder.layer.0.attention.output.LayerNorm.weight',
      'modality_type_embeddings.weight',
      'multi_modal_language_layers.0.crossattention.self.value.weight',
      'multi_modal_language_layers.1.intermediate.dense.bias',
      'multi_modal_vision_pooler.dense.weight',
      'mlm_head.transform.LayerNorm.bias',
      'mlm_head.bias',
      'mim_head.mask_token',
      'mim_head.decoder.resblocks.0.mlp.c_fc.weight',
      'itm_head.fc.weight',
    ];
    const h = 2e-2;
    const report: string[] = [];
    for (const name of names) {
      const e = model.manifest.entries.find((x) => x.name === name);
      if (!e || e.offset === null) throw new Error(`no trainable ${name}`);
      const size = e.shape.reduce((a, b) => a * b, 1);
      const grads = g.grads.subarray(e.offset, e.offset + size);
      let best = 0;
      for (let i = 1; i < size; i++) if (Math.abs(grads[i] ?? 0) > Math.abs(grads[best] ?? 0)) best = i;
      const analytic = grads[best] ?? 0;
      const x0 = model.param(name).dataSync()[best] ?? 0;
      setElement(name, best, x0 + h);
      const up = await loss();
      setElement(name, best, x0 - h);
      const down = await loss();
      setElement(name, best, x0);
      const numeric = (up - down) / (2 * h);
      report.push(`${name}[${best}]: analytic ${analytic.toExponential(4)} numeric ${numeric.toExponential(4)}`);
      expect(Math.abs(analytic), name).toBeGreaterThan(1e-4);
      expect(Math.abs(numeric - analytic), report[report.length - 1]).toBeLessThan(0.03 * Math.abs(analytic) + 2e-5);
    }
  });
});
