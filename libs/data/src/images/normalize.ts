/** CLIP's per-channel mean and standard deviation (RGB, on [0,1] pixels), as M3AE's CLIP transform uses. */
export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

const SCALE = CLIP_STD.map((s) => 1 / (255 * s));
const BIAS = CLIP_MEAN.map((m, c) => -m / CLIP_STD[c]);

/**
 * Interleaved RGB bytes (HWC) → CLIP-normalised planar floats (CHW): (v / 255 - mean) / std per channel.
 * Writes into `out` at `offset` when given (a batch buffer: offset = b·3·H·W), else into a new array.
 * A plain loop with the division folded into one multiply-add: this runs for every sample in every worker.
 */
export function normalizeRgb(data: Uint8Array, width: number, height: number, out?: Float32Array, offset = 0): Float32Array {
  const plane = width * height;
  if (data.length !== plane * 3) {
    throw new RangeError(`normalizeRgb: expected ${plane * 3} bytes for ${width}x${height} RGB, got ${data.length}`);
  }
  const dst = out ?? new Float32Array(plane * 3);
  if (offset < 0 || offset + plane * 3 > dst.length) {
    throw new RangeError(`normalizeRgb: output of length ${dst.length} cannot hold ${plane * 3} values at offset ${offset}`);
  }
  const s0 = SCALE[0], s1 = SCALE[1], s2 = SCALE[2];
  const b0 = BIAS[0], b1 = BIAS[1], b2 = BIAS[2];
  const o1 = offset + plane;
  const o2 = offset + 2 * plane;
  for (let p = 0, i = 0; p < plane; p++, i += 3) {
    dst[offset + p] = data[i] * s0 + b0;
    dst[o1 + p] = data[i + 1] * s1 + b1;
    dst[o2 + p] = data[i + 2] * s2 + b2;
  }
  return dst;
}

/**
 * The inverse of {@link normalizeRgb}: CLIP-normalised planar floats [3,H,W] (read at `offset`) → 8-bit
 * interleaved RGB (HWC), (v·std + mean)·255 rounded and clamped — how a model's image-space output is shown.
 */
export function denormalizeRgb(pixels: Float32Array, width: number, height: number, offset = 0): Uint8Array {
  const plane = width * height;
  if (offset < 0 || offset + 3 * plane > pixels.length) {
    throw new RangeError(`denormalizeRgb: ${pixels.length} values cannot hold a 3x${width}x${height} image at offset ${offset}`);
  }
  const out = new Uint8Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const std = CLIP_STD[c] as number;
    const mean = CLIP_MEAN[c] as number;
    for (let p = 0; p < plane; p++) {
      const v = Math.round(((pixels[offset + c * plane + p] as number) * std + mean) * 255);
      out[p * 3 + c] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return out;
}
