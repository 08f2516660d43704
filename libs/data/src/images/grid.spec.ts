import { describe, expect, it } from 'vitest';
import { composeGrid } from './grid.js';
import { CLIP_MEAN, CLIP_STD, denormalizeRgb, normalizeRgb } from './normalize.js';

describe('denormalizeRgb', () => {
  it('undoes CLIP mean/std exactly for every byte value, and clamps out-of-range values', () => {
    const size = 16;
    const rgb = Uint8Array.from({ length: size * size * 3 }, (_, i) => (i * 37 + 11) % 256);
    const chw = normalizeRgb(rgb, size, size);
    expect(denormalizeRgb(chw, size, size)).toEqual(rgb);
    // The red plane of value 0 is −mean/std.
    expect(chw[0]).toBeCloseTo(((rgb[0] as number) / 255 - CLIP_MEAN[0]) / CLIP_STD[0], 5);
    const extreme = new Float32Array(3 * 4).fill(100);
    extreme.fill(-100, 0, 4);
    expect(Array.from(denormalizeRgb(extreme, 2, 2).subarray(0, 3))).toEqual([0, 255, 255]);
    // Zero (a model's masked-patch fill) is CLIP's mean colour.
    expect(Array.from(denormalizeRgb(new Float32Array(3), 1, 1))).toEqual(CLIP_MEAN.map((m) => Math.round(m * 255)));
    // An image of a batch buffer, read at its offset.
    const two = new Float32Array(2 * chw.length);
    two.set(chw, chw.length);
    expect(denormalizeRgb(two, size, size, chw.length)).toEqual(rgb);
    expect(() => denormalizeRgb(chw, size, size, 1)).toThrow(/cannot hold a 3x16x16 image at offset 1/);
  });
});

describe('composeGrid', () => {
  it('lays images out in a grid, upscaled by nearest neighbour', () => {
    const a = new Uint8Array(2 * 2 * 3).fill(10);
    const b = new Uint8Array(2 * 2 * 3).fill(200);
    b.set([1, 2, 3], 3); // pixel (0, 1) of b
    const g = composeGrid([[a, b], [b, a]], 2, { scale: 3, gap: 1, background: 255 });
    expect([g.width, g.height]).toEqual([1 + 2 * 7, 1 + 2 * 7]);
    const px = (x: number, y: number): number[] => Array.from(g.data.subarray((y * g.width + x) * 3, (y * g.width + x) * 3 + 3));
    expect(px(0, 0)).toEqual([255, 255, 255]);
    expect(px(1, 1)).toEqual([10, 10, 10]);
    // b starts at x = 1 + 7 = 8; its pixel (0, 1) covers x 11..13 of rows 1..3.
    expect(px(11, 1)).toEqual([1, 2, 3]);
    expect(px(13, 3)).toEqual([1, 2, 3]);
    expect(px(14, 3)).toEqual([255, 255, 255]);
    expect(() => composeGrid([[a, new Uint8Array(3)]], 2)).toThrow(/row 0 image 1: got 3 bytes; expected 12/);
  });
});
