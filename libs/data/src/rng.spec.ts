import { describe, expect, it } from 'vitest';
import { CounterRng, hashUniforms, permutation, philox4x32, sampleSeed, seededPermutation } from './rng.js';

const hex = (a: Uint32Array): string => [...a].map((x) => x.toString(16).padStart(8, '0')).join(' ');

describe('philox4x32', () => {
  it('matches the Random123 known-answer vectors for Philox4x32-10', () => {
    expect(hex(philox4x32(0, 0, 0, 0, 0, 0))).toBe('6627e8d5 e169c58d bc57ac4c 9b00dbd8');
    const f = 0xffffffff;
    expect(hex(philox4x32(f, f, f, f, f, f))).toBe('408f276d 41c83b0e a20bc7c6 6d5451fd');
    expect(hex(philox4x32(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0))).toBe(
      'd16cfe09 94fdcceb 5001e420 24126ea1',
    );
  });
});

describe('counter-based streams', () => {
  // Computed once with this implementation. If any of these change, checkpoints stop being reproducible:
  // a resumed run would mask different tokens than the run that wrote the checkpoint.
  it('keeps its known values forever', () => {
    expect(Array.from(hashUniforms(0, 0, 0, 'mlm', 4))).toEqual([0.17893141508102417, 0.07533085346221924, 0.9881725311279297, 0.6348825693130493]);
    expect(Array.from(hashUniforms(42, 1000, 123456, 'mim', 3))).toEqual([0.6870022416114807, 0.5381030440330505, 0.6792989373207092]);
    expect(sampleSeed(7, 3, 11, 'dropout')).toBe(3895390793);
    expect(sampleSeed(2 ** 40 + 5, 2 ** 32 - 1, 2 ** 32 - 1, 'dropout')).toBe(3547308927);
    expect(Array.from(seededPermutation(10, 0, 0, 0, 'epochPermutation'))).toEqual([0, 6, 8, 1, 3, 9, 4, 2, 7, 5]);
    const r = new CounterRng(1, 2, 3, 'itmNegative');
    expect([r.nextInt(1000), r.nextInt(1000), r.nextDouble()]).toEqual([741, 820, 0.7893710115050173]);
  });

  it('is a pure function of its address and differs between addresses', () => {
    const a = hashUniforms(5, 9, 17, 'mlm', 64);
    expect(hashUniforms(5, 9, 17, 'mlm', 64)).toEqual(a);
    // A prefix of a longer draw is the shorter draw: counts never shift other values.
    expect(hashUniforms(5, 9, 17, 'mlm', 10)).toEqual(a.subarray(0, 10));
    for (const other of [
      hashUniforms(6, 9, 17, 'mlm', 64),
      hashUniforms(5, 10, 17, 'mlm', 64),
      hashUniforms(5, 9, 18, 'mlm', 64),
      hashUniforms(5, 9, 17, 'mim', 64),
      hashUniforms(5 + 2 ** 32, 9, 17, 'mlm', 64),
    ]) {
      expect(other).not.toEqual(a);
    }
  });

  it('gives uniforms in [0,1) with the right mean, variance and histogram', () => {
    const n = 200_000;
    const u = hashUniforms(123, 0, 0, 'mim', n);
    let sum = 0;
    let sq = 0;
    const bins = new Array<number>(20).fill(0);
    let outside = 0;
    for (const x of u) {
      if (!(x >= 0 && x < 1)) outside++;
      sum += x;
      sq += x * x;
      bins[Math.floor(x * 20)] = (bins[Math.floor(x * 20)] ?? 0) + 1;
    }
    expect(outside).toBe(0);
    const mean = sum / n;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.005); // sd of the mean ≈ 0.00065
    expect(Math.abs(sq / n - mean * mean - 1 / 12)).toBeLessThan(0.002);
    // Chi-square with 19 degrees of freedom: 43.8 is the 0.999 quantile.
    const expected = n / 20;
    const chi2 = bins.reduce((acc, b) => acc + (b - expected) ** 2 / expected, 0);
    expect(chi2).toBeLessThan(43.8);
  });

  it('nextInt covers [0,n) evenly and never leaves it', () => {
    const rng = new CounterRng(9, 1, 2, 'itmNegative');
    const n = 7;
    const counts = new Array<number>(n).fill(0);
    const draws = 70_000;
    let outside = 0;
    for (let i = 0; i < draws; i++) {
      const k = rng.nextInt(n);
      if (!(Number.isInteger(k) && k >= 0 && k < n)) outside++;
      else counts[k] = (counts[k] ?? 0) + 1;
    }
    expect(outside).toBe(0);
    const chi2 = counts.reduce((acc, c) => acc + (c - draws / n) ** 2 / (draws / n), 0);
    expect(chi2).toBeLessThan(22.5); // 6 degrees of freedom, 0.999 quantile
  });

  it('permutations are permutations, and every position is hit uniformly', () => {
    const n = 5;
    const firstCounts = new Array<number>(n).fill(0);
    const trials = 20_000;
    for (let t = 0; t < trials; t++) {
      const p = seededPermutation(n, 77, t, 0, 'epochPermutation');
      if (t < 100) expect([...p].sort()).toEqual([0, 1, 2, 3, 4]);
      const first = p[0] ?? 0;
      firstCounts[first] = (firstCounts[first] ?? 0) + 1;
    }
    const chi2 = firstCounts.reduce((acc, c) => acc + (c - trials / n) ** 2 / (trials / n), 0);
    expect(chi2).toBeLessThan(18.5); // 4 degrees of freedom, 0.999 quantile
    expect(permutation(0, new CounterRng(0, 0, 0, 'mlm'))).toEqual(new Uint32Array(0));
  });

  it('rejects bad addresses with the field, value and expectation', () => {
    expect(() => hashUniforms(-1, 0, 0, 'mlm', 1)).toThrow(/seed must be a non-negative safe integer, got -1/);
    expect(() => hashUniforms(0, 1.5, 0, 'mlm', 1)).toThrow(/step must be an integer in \[0, 2\^32\), got 1.5/);
    expect(() => hashUniforms(0, 0, 2 ** 32, 'mlm', 1)).toThrow(/sampleIndex must be an integer/);
    expect(() => hashUniforms(0, 0, 0, 'nope' as 'mlm', 1)).toThrow(/stream must be one of mlm, mim/);
    expect(() => new CounterRng(0, 0, 0, 'mlm').nextInt(0)).toThrow(/n must be an integer in \[1, 2\^32\], got 0/);
  });
});
