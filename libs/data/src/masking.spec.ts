import { describe, expect, it } from 'vitest';
import { IGNORE_INDEX, maskTokens, type MaskingVocabulary } from './masking.js';

// RoBERTa's layout: <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4, ordinary tokens from 5.
const vocab: MaskingVocabulary = { specialIds: new Set([0, 1, 2, 3, 4]), vocabSize: 1000, special: { mask: 4 } };
const L = 64;

/** <s> t1 … tn </s> <pad>…: n content tokens with ids 5..(5+n) cycling. */
function sample(n: number): { inputIds: Int32Array; attentionMask: Int32Array } {
  const inputIds = new Int32Array(L).fill(1);
  const attentionMask = new Int32Array(L);
  inputIds[0] = 0;
  for (let i = 1; i <= n; i++) inputIds[i] = 5 + ((i * 37) % 900);
  inputIds[n + 1] = 2;
  attentionMask.fill(1, 0, n + 2);
  return { inputIds, attentionMask };
}

describe('maskTokens', () => {
  it('follows 15% / 80-10-10 and never chooses special or padding tokens', () => {
    let eligible = 0;
    let chosen = 0;
    let toMask = 0;
    let toRandom = 0;
    let kept = 0;
    let violations = 0;
    for (let s = 0; s < 3000; s++) {
      const n = 10 + (s % 50);
      const { inputIds, attentionMask } = sample(n);
      const r = maskTokens({ inputIds, attentionMask, vocab, seed: 1, step: 7, sampleIndex: s });
      eligible += n;
      let labelled = 0;
      for (let i = 0; i < L; i++) {
        const label = r.mlmLabels[i] as number;
        if (label === IGNORE_INDEX) {
          if (r.mlmInputIds[i] !== inputIds[i]) violations++; // unchosen tokens are untouched
          continue;
        }
        labelled++;
        if (label !== inputIds[i] || attentionMask[i] !== 1 || vocab.specialIds.has(inputIds[i] as number)) violations++;
        const now = r.mlmInputIds[i] as number;
        if (now === 4) toMask++;
        else if (now === label) kept++;
        else {
          toRandom++;
          if (now < 0 || now >= vocab.vocabSize) violations++;
        }
      }
      if (labelled !== r.count) violations++;
      chosen += r.count;
    }
    expect(violations).toBe(0);
    // eligible ≈ 103,500: sd of the rate ≈ 0.0011; of the 80/10/10 shares among ≈15,500 chosen ≈ 0.003
    expect(Math.abs(chosen / eligible - 0.15)).toBeLessThan(0.005);
    expect(Math.abs(toMask / chosen - 0.8)).toBeLessThan(0.015);
    // a random draw may hit the original id (1 in 1000), which counts as kept here
    expect(Math.abs(toRandom / chosen - 0.1)).toBeLessThan(0.012);
    expect(Math.abs(kept / chosen - 0.1)).toBeLessThan(0.012);
  });

  it('is a function of (seed, step, sampleIndex, position) only', () => {
    const { inputIds, attentionMask } = sample(50);
    const a = maskTokens({ inputIds, attentionMask, vocab, seed: 3, step: 2, sampleIndex: 99 });
    expect(maskTokens({ inputIds, attentionMask, vocab, seed: 3, step: 2, sampleIndex: 99 })).toEqual(a);
    expect(maskTokens({ inputIds, attentionMask, vocab, seed: 3, step: 2, sampleIndex: 98 }).mlmLabels).not.toEqual(a.mlmLabels);
    expect(maskTokens({ inputIds, attentionMask, vocab, seed: 3, step: 3, sampleIndex: 99 }).mlmLabels).not.toEqual(a.mlmLabels);
    expect(maskTokens({ inputIds, attentionMask, vocab, seed: 4, step: 2, sampleIndex: 99 }).mlmLabels).not.toEqual(a.mlmLabels);
    // A shorter max length sees the same fate for the positions it keeps.
    const short = maskTokens({ inputIds: inputIds.slice(0, 20), attentionMask: attentionMask.slice(0, 20), vocab, seed: 3, step: 2, sampleIndex: 99 });
    expect(short.mlmLabels).toEqual(a.mlmLabels.slice(0, 20));
    expect(short.mlmInputIds).toEqual(a.mlmInputIds.slice(0, 20));
  });

  it('keeps the reference behaviour that a sample may get no masked token', () => {
    let zero = 0;
    for (let s = 0; s < 200; s++) {
      const { inputIds, attentionMask } = sample(3);
      const r = maskTokens({ inputIds, attentionMask, vocab, seed: 0, step: 0, sampleIndex: s });
      if (r.count === 0) {
        zero++;
        expect(r.mlmLabels.every((x) => x === IGNORE_INDEX)).toBe(true);
        expect(r.mlmInputIds).toEqual(inputIds);
      }
    }
    expect(zero).toBeGreaterThan(100); // 0.85^3 ≈ 61% of 3-token texts
  });

  it('writes into the given arrays and checks its inputs', () => {
    const { inputIds, attentionMask } = sample(30);
    const out = { mlmInputIds: new Int32Array(L), mlmLabels: new Int32Array(L) };
    const r = maskTokens({ inputIds, attentionMask, vocab, seed: 1, step: 1, sampleIndex: 1, out });
    expect(r.mlmInputIds).toBe(out.mlmInputIds);
    expect(maskTokens({ inputIds, attentionMask, vocab, seed: 1, step: 1, sampleIndex: 1, probability: 1 }).count).toBe(30);
    expect(maskTokens({ inputIds, attentionMask, vocab, seed: 1, step: 1, sampleIndex: 1, probability: 0 }).count).toBe(0);
    expect(() => maskTokens({ inputIds, attentionMask, vocab, seed: 1, step: 1, sampleIndex: 1, probability: 1.5 })).toThrow(/mlmProbability must be in \[0, 1\], got 1.5/);
    expect(() => maskTokens({ inputIds, attentionMask: new Int32Array(3), vocab, seed: 1, step: 1, sampleIndex: 1 })).toThrow(/attentionMask has length 3, expected 64/);
  });
});
