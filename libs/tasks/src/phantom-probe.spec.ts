import { describe, expect, it } from 'vitest';
import { patchMeanBaseline } from './phantom-probe.js';

describe('phantom probe', () => {
  // One 8×8 RGB image in 2×2 patches of 4×4 (dim 48); noise orders the patches, the first `keep` are visible.
  const size = 8;
  const patch = 4;
  const noise = Float32Array.from([0.1, 0.9, 0.5, 0.3]); // kept: patch 0 (0.1); masked: 3, 2, 1

  it('the patch-mean baseline is 0 on flat patches and (dim - 1) / dim on any non-flat one', () => {
    const flat = new Float32Array(3 * size * size).fill(0.25);
    expect(patchMeanBaseline(flat, 1, size, patch, noise, 1)).toEqual({ loss: 0, patches: 3 });
    // Targets normalised per patch with the unbiased variance (as the official normalised-pixel loss): their mean
    // square is Σ(x - μ)² / (Σ(x - μ)² / (dim - 1)) / dim = (dim - 1) / dim, up to the 1e-6 in the denominator.
    const pixels = Float32Array.from({ length: 3 * size * size }, (_, i) => Math.sin(i * 1.7) * (1 + (i % 5)));
    const r = patchMeanBaseline(pixels, 1, size, patch, noise, 1);
    expect(r.patches).toBe(3);
    expect(r.loss).toBeCloseTo(47 / 48, 5);
  });

  it('counts only the masked patches of every image', () => {
    const pixels = new Float32Array(2 * 3 * size * size).fill(1);
    const two = Float32Array.from([...noise, ...noise]);
    expect(patchMeanBaseline(pixels, 2, size, patch, two, 3).patches).toBe(2);
  });
});
