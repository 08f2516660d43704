import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdamW } from '../adamw.js';
import { chooseBackend } from '../backend.js';
import { presetConfig } from '../config.js';
import { createModel, flattenParams, unflatten } from '../model.js';
import { modelManifest } from '../params.js';
import { syntheticTaskBatch } from '../synthetic.js';
import { createDownstreamModel, downstreamManifest, flattenDownstream, loadPretrained, setDownstreamFromFlat, type DownstreamModel } from './downstream-model.js';
import { computeTaskGradients, computeTaskOutputs, retrievalScores, type DownstreamBatch } from './objective.js';
import { finetuneImageSize, FINETUNE_DEFAULTS } from './tasks.js';

function slice(b: DownstreamBatch, start: number, end: number): DownstreamBatch {
  const K = b.textsPerExample;
  const L = b.textLength;
  const plane = 3 * b.imageSize * b.imageSize;
  return {
    ...b,
    batchSize: end - start,
    pixelValues: b.pixelValues.slice(start * plane, end * plane),
    inputIds: b.inputIds.slice(start * K * L, end * K * L),
    attentionMask: b.attentionMask.slice(start * K * L, end * K * L),
    labels: b.labels.slice(start, end),
    dropoutSeeds: b.dropoutSeeds.slice(start * K, end * K),
  };
}

function norm(a: Float32Array): number {
  let s = 0;
  for (const v of a) s += v * v;
  return Math.sqrt(s);
}

function segment(model: DownstreamModel, flat: Float32Array, name: string): Float32Array {
  const e = model.manifest.entries.find((x) => x.name === name);
  if (!e || e.offset === null) throw new Error(`no ${name}`);
  return flat.subarray(e.offset, e.offset + e.shape.reduce((a, b) => a * b, 1));
}

describe('downstream heads and objectives (tiny, wasm)', () => {
  const config = presetConfig('tiny');
  let vqa: DownstreamModel;

  beforeAll(async () => {
    await chooseBackend({ backend: 'wasm' });
    vqa = createDownstreamModel(config, { kind: 'vqa', outputs: 7 }, { seed: 3 });
  });
  afterAll(() => vqa.dispose());

  it('builds the official head layout on the 2·hidden joint feature, without the pre-training heads', () => {
    const names = vqa.manifest.entries.map((e) => e.name);
    const shape = (n: string): readonly number[] | undefined => vqa.manifest.entries.find((e) => e.name === n)?.shape;
    expect(shape('vqa_head.0.weight')).toEqual([64, 64]);
    expect(shape('vqa_head.1.weight')).toEqual([64]);
    expect(shape('vqa_head.3.weight')).toEqual([64, 7]);
    expect(shape('vqa_head.3.bias')).toEqual([7]);
    expect(names.some((n) => n.startsWith('mlm_head') || n.startsWith('mim_head') || n.startsWith('itm_head'))).toBe(false);
    expect(names).toContain('multi_modal_vision_pooler.dense.weight');
    const cls = downstreamManifest(config, { kind: 'classification', outputs: 7 });
    expect(cls.entries.map((e) => e.name)).toContain('cls_head.3.weight');
    expect(cls.hash).not.toBe(vqa.manifest.hash);
    const irtr = downstreamManifest(config, { kind: 'retrieval', outputs: 1 });
    expect(irtr.entries.find((e) => e.name === 'irtr_head.weight')?.shape).toEqual([64, 1]);
    expect(() => downstreamManifest(config, { kind: 'retrieval', outputs: 2 })).toThrow(/1 output/);
  });

  it('gives logits [B, answers] and a gradient that matches finite differences', async () => {
    const batch = syntheticTaskBatch(config, 3, 1, 7, 5);
    const out = await computeTaskOutputs(vqa, batch);
    expect(out.classes).toBe(7);
    expect(out.logits.length).toBe(21);
    const g = await computeTaskGradients(vqa, batch, { normalizer: 3, training: false });
    expect(g.sum).toBeCloseTo(out.sum, 3);
    expect(g.count).toBe(3);
    // Every part of the model gets a gradient: head, fusion, both encoders.
    for (const n of ['vqa_head.3.weight', 'vqa_head.0.weight', 'multi_modal_language_layers.1.output.dense.weight', 'vision_encoder.visual.patch_embed.weight', 'language_encoder.encoder.layer.0.attention.self.query.weight']) {
      expect(norm(segment(vqa, g.grads, n)), n).toBeGreaterThan(0);
    }
    // Central differences on the largest-gradient coordinates of two parameters (float32: loose tolerance).
    const flat = await flattenDownstream(vqa);
    try {
      for (const name of ['vqa_head.3.weight', 'multi_modal_vision_pooler.dense.weight']) {
        const e = vqa.manifest.entries.find((x) => x.name === name);
        const offset = e?.offset ?? 0;
        const seg = segment(vqa, g.grads, name);
        let k = 0;
        for (let i = 1; i < seg.length; i++) if (Math.abs(seg[i] ?? 0) > Math.abs(seg[k] ?? 0)) k = i;
        const eps = 1e-2;
        const at = async (delta: number): Promise<number> => {
          const f = flat.slice();
          f[offset + k] = (f[offset + k] ?? 0) + delta;
          setDownstreamFromFlat(vqa, f);
          return (await computeTaskOutputs(vqa, batch)).sum / 3;
        };
        const fd = ((await at(eps)) - (await at(-eps))) / (2 * eps);
        expect(Math.abs(fd - (seg[k] ?? 0)) / Math.abs(seg[k] ?? 1), name).toBeLessThan(0.05);
      }
    } finally {
      setDownstreamFromFlat(vqa, flat);
    }
  });

  it('scores VQA answers with the named loss (bce-sum official, bce-mean, softmax) and refuses an unknown one', async () => {
    const batch = syntheticTaskBatch(config, 3, 1, 7, 5);
    batch.labels[2] = -1; // an answer outside the vocabulary
    const logits = (await computeTaskOutputs(vqa, batch)).logits;
    const bce = (x: number, t: number): number => Math.max(x, 0) - x * t + Math.log1p(Math.exp(-Math.abs(x)));
    let bceSum = 0;
    let ce = 0;
    for (let i = 0; i < 3; i++) {
      const row = Array.from(logits.subarray(i * 7, i * 7 + 7));
      const l = batch.labels[i] as number;
      row.forEach((x, j) => (bceSum += bce(x, j === l ? 1 : 0)));
      const m = Math.max(...row);
      if (l >= 0) ce += m + Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0)) - (row[l] as number);
    }
    const same = (loss: 'bce-sum' | 'bce-mean' | 'softmax'): DownstreamModel => {
      const m = createDownstreamModel(config, { kind: 'vqa', outputs: 7, loss }, { seed: 3 });
      return m;
    };
    const expected = { 'bce-sum': bceSum, 'bce-mean': bceSum / 7, softmax: ce } as const;
    for (const loss of ['bce-sum', 'bce-mean', 'softmax'] as const) {
      const m = same(loss);
      try {
        const out = await computeTaskOutputs(m, batch);
        expect(out.sum, loss).toBeCloseTo(expected[loss], 3);
        const g = await computeTaskGradients(m, batch, { normalizer: 3, training: false });
        expect(g.sum, loss).toBeCloseTo(expected[loss], 3);
      } finally {
        m.dispose();
      }
    }
    // The official loss is the default: a head without `loss` scores as bce-sum.
    expect((await computeTaskOutputs(vqa, batch)).sum).toBeCloseTo(bceSum, 3);
    const bad = createDownstreamModel(config, { kind: 'vqa', outputs: 7, loss: 'hinge' as 'softmax' }, { seed: 3 });
    try {
      await expect(computeTaskOutputs(bad, batch)).rejects.toThrow(/head\.loss: got "hinge"; expected one of bce-sum, bce-mean, softmax/);
    } finally {
      bad.dispose();
    }
  });

  it('a question-only model (inputs: text) answers the same whatever the image; the full model does not', async () => {
    const a = syntheticTaskBatch(config, 3, 1, 7, 5);
    const b = { ...a, pixelValues: syntheticTaskBatch(config, 3, 1, 7, 6).pixelValues };
    const textOnly = createDownstreamModel(config, { kind: 'vqa', outputs: 7, inputs: 'text' }, { seed: 3 });
    try {
      const [ta, tb] = [await computeTaskOutputs(textOnly, a), await computeTaskOutputs(textOnly, b)];
      expect(Array.from(tb.logits)).toEqual(Array.from(ta.logits));
      const [fa, fb] = [await computeTaskOutputs(vqa, a), await computeTaskOutputs(vqa, b)];
      expect(Math.max(...Array.from(fa.logits, (x, i) => Math.abs(x - (fb.logits[i] as number))))).toBeGreaterThan(1e-6);
      // Its vision encoder still trains (on the blank image), so the manifests are the same.
      expect(textOnly.manifest.hash).toBe(vqa.manifest.hash);
    } finally {
      textOnly.dispose();
    }
  });

  it('sums micro-batch gradients to the whole batch (dropout on), and leaks no tensor', async () => {
    const batch = syntheticTaskBatch(config, 4, 1, 7, 9);
    const before = tf.memory().numTensors;
    const whole = await computeTaskGradients(vqa, batch, { normalizer: 4, training: true });
    const a = await computeTaskGradients(vqa, slice(batch, 0, 1), { normalizer: 4, training: true });
    const b = await computeTaskGradients(vqa, slice(batch, 1, 4), { normalizer: 4, training: true });
    expect(tf.memory().numTensors).toBe(before);
    expect(a.sum + b.sum).toBeCloseTo(whole.sum, 3);
    expect(a.correct + b.correct).toBe(whole.correct);
    const summed = a.grads.map((v, i) => v + (b.grads[i] ?? 0));
    const diff = summed.map((v, i) => v - (whole.grads[i] ?? 0));
    expect(norm(diff) / norm(whole.grads)).toBeLessThan(1e-4);
    // Dropout changes the result (it is on), deterministically (same seeds → same gradient).
    const again = await computeTaskGradients(vqa, batch, { normalizer: 4, training: true });
    expect(Array.from(again.grads)).toEqual(Array.from(whole.grads));
    const evalMode = await computeTaskGradients(vqa, batch, { normalizer: 4, training: false });
    expect(evalMode.sum).not.toBeCloseTo(whole.sum, 4);
  });

  it('counts an answer outside the vocabulary (label −1) wrong, with an all-zero BCE target', async () => {
    const batch = syntheticTaskBatch(config, 2, 1, 7, 13);
    batch.labels[1] = -1;
    const out = await computeTaskOutputs(vqa, batch);
    expect(out.correct).toBeLessThanOrEqual(1);
    // Row 1's loss is Σ_c softplus(x_c): recompute it from the logits.
    let row1 = 0;
    for (let j = 0; j < 7; j++) row1 += Math.log1p(Math.exp(out.logits[7 + j] ?? 0));
    const only0 = await computeTaskOutputs(vqa, slice(batch, 0, 1));
    expect(out.sum - only0.sum).toBeCloseTo(row1, 3);
    const bad = syntheticTaskBatch(config, 2, 1, 7, 13);
    bad.labels[0] = 7;
    await expect(computeTaskOutputs(vqa, bad)).rejects.toThrow(/labels\[0\]: got 7/);
  });

  it('retrieval: K captions per image, cross-entropy on the true one, and pair scores that agree with the batched pass', async () => {
    const irtr = createDownstreamModel(config, { kind: 'retrieval', outputs: 1 }, { seed: 4 });
    try {
      const batch = syntheticTaskBatch(config, 2, 4, 1, 21);
      batch.labels.fill(0);
      const g = await computeTaskGradients(irtr, batch, { normalizer: 2, training: true });
      expect(norm(segment(irtr, g.grads, 'irtr_head.weight'))).toBeGreaterThan(0);
      const out = await computeTaskOutputs(irtr, batch);
      expect(out.classes).toBe(4);
      // Image b with its 4 texts, scored pair by pair by retrievalScores, equals row b of the batched logits.
      const L = batch.textLength;
      const plane = 3 * config.imageSize * config.imageSize;
      const tensors = tf.memory().numTensors;
      const scores = await retrievalScores(
        irtr,
        { pixelValues: batch.pixelValues, nImages: 2, inputIds: batch.inputIds, attentionMask: batch.attentionMask, nTexts: 8, textLength: L },
        { textChunk: 3, imageChunk: 1 },
      );
      expect(scores.length).toBe(16);
      expect(tf.memory().numTensors).toBe(tensors);
      for (let b = 0; b < 2; b++) for (let k = 0; k < 4; k++) expect(scores[b * 8 + b * 4 + k]).toBeCloseTo(out.logits[b * 4 + k] ?? NaN, 4);
      expect(plane).toBeGreaterThan(0);
      // The log-softmax loss of example b is logsumexp(scores) − score[0].
      let expected = 0;
      for (let b = 0; b < 2; b++) {
        const row = Array.from(out.logits.subarray(b * 4, b * 4 + 4));
        const m = Math.max(...row);
        expected += m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0)) - (row[0] ?? 0);
      }
      expect(out.sum).toBeCloseTo(expected, 4);
    } finally {
      irtr.dispose();
    }
  });

  it('loads pre-trained weights: backbone copied, positions resized to the fine-tuning size, irtr head = ITM match row', async () => {
    const pre = createModel(config, { seed: 11 });
    const ftConfig = presetConfig('tiny', { imageSize: finetuneImageSize(config) });
    expect(ftConfig.imageSize).toBe(40);
    const irtr = createDownstreamModel(ftConfig, { kind: 'retrieval', outputs: 1 }, { seed: 1 });
    try {
      const params = unflatten(modelManifest(config), await flattenParams(pre));
      const report = loadPretrained(irtr, { config, params });
      expect(report.resized).toEqual(['vision_encoder.visual.positional_embedding']);
      expect(report.initialised).toEqual([]);
      const flat = await flattenDownstream(irtr);
      expect(Array.from(segment(irtr, flat, 'language_encoder.encoder.layer.0.attention.self.query.weight'))).toEqual(Array.from(params.get('language_encoder.encoder.layer.0.attention.self.query.weight') ?? []));
      expect(segment(irtr, flat, 'vision_encoder.visual.positional_embedding').length).toBe(26 * 32);
      // Class row kept as is.
      expect(Array.from(segment(irtr, flat, 'vision_encoder.visual.positional_embedding').subarray(0, 32))).toEqual(Array.from((params.get('vision_encoder.visual.positional_embedding') ?? new Float32Array()).subarray(0, 32)));
      const itmW = params.get('itm_head.fc.weight') ?? new Float32Array();
      const irtrW = segment(irtr, flat, 'irtr_head.weight');
      for (let r = 0; r < 64; r++) expect(irtrW[r]).toBe(itmW[2 * r + 1]);
      expect(segment(irtr, flat, 'irtr_head.bias')[0]).toBe((params.get('itm_head.fc.bias') ?? new Float32Array(2))[1]);
      const other = presetConfig('tiny', { hiddenSize: 48, numHeads: 2 });
      const bad = createDownstreamModel(presetConfig('tiny'), { kind: 'vqa', outputs: 3 });
      try {
        expect(() => loadPretrained(bad, { config: other, params })).toThrow(/hiddenSize = 48/);
      } finally {
        bad.dispose();
      }
    } finally {
      pre.dispose();
      irtr.dispose();
    }
  });

  it('fine-tunes a tiny model on a separable task: the loss falls and accuracy rises, with no tensor leak', async () => {
    // Label = whether the image is bright or dark; the text carries no information.
    const cls = createDownstreamModel(config, { kind: 'classification', outputs: 2 }, { seed: 2 });
    try {
      const make = (seed: number): DownstreamBatch => {
        const b = syntheticTaskBatch(config, 8, 1, 2, seed);
        const plane = 3 * config.imageSize * config.imageSize;
        for (let i = 0; i < 8; i++) {
          const shift = b.labels[i] === 1 ? 1.5 : -1.5;
          for (let j = 0; j < plane; j++) b.pixelValues[i * plane + j] = (b.pixelValues[i * plane + j] ?? 0) * 0.3 + shift;
        }
        return b;
      };
      const evalBatch = make(1000);
      const start = await computeTaskOutputs(cls, evalBatch);
      const opt = new AdamW(cls.manifest, { learningRate: 1e-3, totalSteps: 30, warmupFraction: 0.1, lrMultiplierHead: FINETUNE_DEFAULTS.melinda.lrMultiplierHead });
      const params = await flattenDownstream(cls);
      const tensors = tf.memory().numTensors;
      for (let step = 0; step < 30; step++) {
        const g = await computeTaskGradients(cls, make(step), { normalizer: 8, training: true });
        opt.update(params, g.grads);
        setDownstreamFromFlat(cls, params);
      }
      expect(tf.memory().numTensors).toBe(tensors);
      const end = await computeTaskOutputs(cls, evalBatch);
      expect(end.sum).toBeLessThan(start.sum * 0.5);
      expect(end.correct).toBeGreaterThanOrEqual(7);
      expect(end.correct).toBeGreaterThan(start.correct);
    } finally {
      cls.dispose();
    }
  }, 120_000);
});
