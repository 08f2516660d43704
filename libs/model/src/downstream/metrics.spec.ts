import { describe, expect, it } from 'vitest';
import { accuracy, recallAtK, vqaMetrics } from './metrics.js';
import { finetuneImageSize, finetuneTextLength, FINETUNE_DEFAULTS } from './tasks.js';
import { presetConfig } from '../config.js';

describe('VQA accuracy by answer type', () => {
  it('counts unseen answers (label −1) wrong and makes overall the weighted mix of open and closed', () => {
    const labels = [0, 1, -1, 2, 0, -1, 3];
    const preds = [0, 1, 0, 1, 0, 2, 3];
    const types = ['CLOSED', 'CLOSED', 'CLOSED', 'OPEN', 'OPEN', 'OPEN', 'OPEN'] as const;
    const m = vqaMetrics(preds, labels, [...types]);
    expect(m.closed).toEqual({ correct: 2, total: 3, accuracy: 2 / 3 });
    expect(m.open).toEqual({ correct: 2, total: 4, accuracy: 0.5 });
    expect(m.overall.correct).toBe(4);
    expect(m.overall.total).toBe(7);
    expect(m.overall.accuracy).toBeCloseTo((m.open.accuracy * 4 + m.closed.accuracy * 3) / 7, 12);
    expect(m.unseenAnswers).toBe(2);
    // A prediction of 0 for an unseen label never matches, even when 0 happens to be predicted.
    expect(accuracy([0, 0], [-1, 0])).toEqual({ correct: 1, total: 2, accuracy: 0.5 });
    expect(() => vqaMetrics([0], [0], ['open' as 'OPEN'])).toThrow(/OPEN or CLOSED/);
    expect(vqaMetrics([], [], []).overall.accuracy).toBe(0);
  });
});

describe('recall@K', () => {
  it('counts a caption shared by several images as correct for each of them', () => {
    // 3 images, 2 texts: text 0 describes images 0 and 1 (shared caption), text 1 describes image 2.
    const textImages = [[0, 1], [2]];
    // Scores [image × text]: image 1 prefers text 0 (its own, shared); image 2 prefers text 0 (wrong).
    const scores = [
      0.9, 0.1,
      0.8, 0.2,
      0.7, 0.6,
    ];
    const m = recallAtK(scores, 3, 2, textImages);
    expect(m.images).toBe(3);
    expect(m.texts).toBe(2);
    expect(m.i2t.r1).toBeCloseTo(2 / 3, 12);
    expect(m.i2t.r5).toBe(1);
    // Text 0's best image is image 0 (one of its two): correct. Text 1's best is image 2: correct.
    expect(m.t2i.r1).toBe(1);
    // With the caption attached to image 0 only, image 1 has no caption and is no query; image 2 still misses.
    const single = recallAtK(scores, 3, 2, [[0], [2]]);
    expect(single.images).toBe(2);
    expect(single.i2t.r1).toBe(0.5);
    expect(() => recallAtK(scores, 3, 2, [[0], [5]])).toThrow(/image index/);
  });

  it('gives R@1 ≤ R@5 ≤ R@10, ties broken by index, and perfect recall for a diagonal score matrix', () => {
    const n = 12;
    const diag = Array.from({ length: n * n }, (_, k) => (Math.floor(k / n) === k % n ? 1 : 0));
    const m = recallAtK(diag, n, n, Array.from({ length: n }, (_, i) => [i]));
    expect(m.i2t).toEqual({ r1: 1, r5: 1, r10: 1 });
    expect(m.t2i).toEqual({ r1: 1, r5: 1, r10: 1 });
    const flat = recallAtK(new Array<number>(n * n).fill(0), n, n, Array.from({ length: n }, (_, i) => [i]));
    // All tied: the top-k are the first k indices, so item i is found at K iff i < K.
    expect(flat.i2t.r1).toBeCloseTo(1 / n, 12);
    expect(flat.i2t.r5).toBeCloseTo(5 / n, 12);
    expect(flat.t2i.r10).toBeCloseTo(10 / n, 12);
  });
});

describe('fine-tuning defaults', () => {
  it('follow the official settings and scale the 384 px of base to smaller presets', () => {
    expect(FINETUNE_DEFAULTS['vqa-rad']).toMatchObject({ globalBatch: 64, epochs: 50, learningRate: 5e-6, lrMultiplierHead: 50, lrMultiplierMultiModal: 5, textLength: 32 });
    expect(FINETUNE_DEFAULTS.melinda.lrMultiplierHead).toBe(10);
    expect(FINETUNE_DEFAULTS.retrieval.negatives).toBe(15);
    expect(finetuneImageSize(presetConfig('base'))).toBe(384);
    expect(finetuneImageSize(presetConfig('small'))).toBe(176);
    expect(finetuneImageSize(presetConfig('tiny'))).toBe(40);
    expect(finetuneTextLength(presetConfig('tiny'), FINETUNE_DEFAULTS['vqa-rad'])).toBe(16);
  });
});
