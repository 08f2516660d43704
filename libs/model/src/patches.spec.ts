import { describe, expect, it } from 'vitest';
import { mimTargets, patchesForEmbedding } from './inputs.js';
import { normalizePatches, patchify, unnormalizePatches, unpatchify } from './patches.js';
import { HashStream } from './random.js';

function randomPixels(n: number, seed: number): Float32Array {
  const r = new HashStream(seed);
  return Float32Array.from({ length: n }, () => r.normal());
}

describe('reconstruction maths', () => {
  const B = 2;
  const S = 12;
  const P = 4;
  const N = (S / P) ** 2;
  const dim = 3 * P * P;
  const pixels = randomPixels(B * 3 * S * S, 5);

  it('patchify and unpatchify are inverse, in MAE (ky, kx, c) order, and agree with the MIM target', () => {
    const patches = patchify(pixels, B, S, P);
    expect(patches.length).toBe(B * N * dim);
    expect(unpatchify(patches, B, S, P)).toEqual(pixels);
    // Patch n of image b, element (ky, kx, c) is pixel (c, gy·P + ky, gx·P + kx).
    const b = 1;
    const n = 5;
    const [gy, gx] = [Math.floor(n / (S / P)), n % (S / P)];
    for (const [ky, kx, c] of [[0, 0, 0], [1, 3, 2], [3, 2, 1]] as const) {
      expect(patches[(b * N + n) * dim + (ky * P + kx) * 3 + c]).toBe(pixels[b * 3 * S * S + c * S * S + (gy * P + ky) * S + gx * P + kx]);
    }
    // The same values as the training target (without norm_pix), every patch.
    const all = { sample: Int32Array.from({ length: B * N }, (_, i) => Math.floor(i / N)), patch: Int32Array.from({ length: B * N }, (_, i) => i % N) };
    expect(patchify(pixels, B, S, P)).toEqual(mimTargets(pixels, S, P, all, false));
    // …and a permutation within each patch of the patch-embedding input (c, ky, kx).
    const emb = patchesForEmbedding(pixels, B, S, P);
    for (let r = 0; r < B * N; r++) {
      const a = Array.from(patches.subarray(r * dim, (r + 1) * dim)).sort((x, y) => x - y);
      const e = Array.from(emb.subarray(r * dim, (r + 1) * dim)).sort((x, y) => x - y);
      expect(a).toEqual(e);
    }
    expect(() => patchify(pixels, B, S, 5)).toThrow(/patch dividing the size/);
    expect(() => unpatchify(patches.subarray(1), B, S, P)).toThrow(/expected 2×9×48/);
  });

  it('norm_pix matches the training target, and un-normalising with the target patch inverts it', () => {
    const patches = patchify(pixels, B, S, P);
    const all = { sample: Int32Array.from({ length: B * N }, (_, i) => Math.floor(i / N)), patch: Int32Array.from({ length: B * N }, (_, i) => i % N) };
    const normed = normalizePatches(patches, dim);
    const target = mimTargets(pixels, S, P, all, true);
    for (let i = 0; i < normed.length; i++) expect(normed[i]).toBeCloseTo(target[i] as number, 5);
    // Each normalised patch has mean 0 and unbiased variance ≈ 1.
    const row = Array.from(normed.subarray(0, dim));
    const mean = row.reduce((a, v) => a + v, 0) / dim;
    expect(mean).toBeCloseTo(0, 6);
    expect(row.reduce((a, v) => a + (v - mean) ** 2, 0) / (dim - 1)).toBeCloseTo(1, 4);
    // A perfect norm_pix prediction un-normalises to the original pixels.
    const back = unnormalizePatches(normed, patches, dim);
    for (let i = 0; i < back.length; i++) expect(back[i]).toBeCloseTo(patches[i] as number, 5);
    // Brightness and contrast come from the target: the same prediction on a brighter, contrastier patch.
    const brighter = patches.map((v) => 2 * v + 3);
    const lifted = unnormalizePatches(normed, brighter, dim);
    for (let i = 0; i < lifted.length; i++) expect(lifted[i]).toBeCloseTo(brighter[i] as number, 4);
  });
});
