/**
 * Bicubic resampling exactly as PyTorch's `F.interpolate(mode='bicubic', align_corners=False)`: Keys' cubic
 * convolution with a = -0.75, source coordinate (dst + 0.5) · in/out − 0.5 (not clamped), the 4×4 taps read with
 * indices clamped to the border. The official code resizes CLIP's 14×14 position grid to 18×18 this way.
 */
const A = -0.75;

// Evaluated in float64 and rounded once: PyTorch evaluates in float32, so the two agree to a few float32 ulps
// (a different kernel or coordinate convention would differ by orders of magnitude more).
function cubic1(x: number): number {
  return ((A + 2) * x - (A + 3)) * x * x + 1; // |x| ≤ 1
}

function cubic2(x: number): number {
  return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; // 1 < |x| < 2
}

/** The four tap weights for fractional offset t ∈ [0, 1). */
export function cubicWeights(t: number): [number, number, number, number] {
  return [cubic2(t + 1), cubic1(t), cubic1(1 - t), cubic2(2 - t)];
}

interface Taps {
  readonly index: Int32Array; // [out, 4] clamped source indices
  readonly weight: Float64Array; // [out, 4]
}

function taps(inSize: number, outSize: number): Taps {
  const index = new Int32Array(outSize * 4);
  const weight = new Float64Array(outSize * 4);
  const scale = inSize / outSize;
  for (let o = 0; o < outSize; o++) {
    const real = scale * (o + 0.5) - 0.5;
    const i0 = Math.floor(real);
    const w = cubicWeights(real - i0);
    for (let k = 0; k < 4; k++) {
      index[o * 4 + k] = Math.min(Math.max(i0 - 1 + k, 0), inSize - 1);
      weight[o * 4 + k] = w[k] as number;
    }
  }
  return { index, weight };
}

/** Resizes an image laid out [H, W, C] (channels last, as a position grid [gy, gx, D]) to [outH, outW, C]. */
export function resizeBicubicHWC(src: Float32Array, h: number, w: number, c: number, outH: number, outW: number): Float32Array {
  if (src.length !== h * w * c) throw new RangeError(`resizeBicubicHWC: got ${src.length} values; expected ${h}·${w}·${c} = ${h * w * c}`);
  const ty = taps(h, outH);
  const tx = taps(w, outW);
  const out = new Float32Array(outH * outW * c);
  const acc = new Float64Array(c);
  for (let oy = 0; oy < outH; oy++) {
    for (let ox = 0; ox < outW; ox++) {
      acc.fill(0);
      for (let ky = 0; ky < 4; ky++) {
        const row = (ty.index[oy * 4 + ky] as number) * w;
        const wy = ty.weight[oy * 4 + ky] as number;
        for (let kx = 0; kx < 4; kx++) {
          const wxy = wy * (tx.weight[ox * 4 + kx] as number);
          const base = (row + (tx.index[ox * 4 + kx] as number)) * c;
          for (let ch = 0; ch < c; ch++) acc[ch] = (acc[ch] as number) + wxy * (src[base + ch] as number);
        }
      }
      out.set(acc, (oy * outW + ox) * c);
    }
  }
  return out;
}

/**
 * CLIP position embeddings [1 + g², D] resized to [1 + gAfter², D]: the class row is kept, the g×g grid is
 * resampled bicubically (the official `adapt_position_encoding`).
 */
export function resizePositionEmbedding(pos: Float32Array, dim: number, gridAfter: number): Float32Array {
  const rows = pos.length / dim;
  const g = Math.round(Math.sqrt(rows - 1));
  if (!Number.isInteger(rows) || g * g + 1 !== rows) {
    throw new RangeError(`position embedding has ${rows} rows of ${dim}; expected 1 + a square number`);
  }
  if (g === gridAfter) return pos.slice();
  const grid = resizeBicubicHWC(pos.subarray(dim), g, g, dim, gridAfter, gridAfter);
  const out = new Float32Array((1 + gridAfter * gridAfter) * dim);
  out.set(pos.subarray(0, dim), 0);
  out.set(grid, dim);
  return out;
}
