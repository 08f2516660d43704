import { mulberry32 } from '../mulberry32.js';

export interface CropBox {
  left: number;
  top: number;
  width: number;
  height: number;
}

export interface RandomResizedCropOptions {
  /** Fraction of the image area kept. @defaultValue [0.9, 1.0] (M3AE's `clip_resizedcrop`) */
  scale?: readonly [number, number];
  /** Aspect ratio (w/h) range, sampled log-uniformly. @defaultValue [3/4, 4/3] (torchvision) */
  ratio?: readonly [number, number];
}

/** Python's round(): halves go to the even neighbour. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * torchvision's `RandomResizedCrop.get_params`: up to 10 tries of an area fraction in `scale` and a log-uniform
 * aspect ratio in `ratio`, the box placed uniformly; if none fits, the central crop clamped to `ratio`.
 * Deterministic from `seed` (uint32; callers derive it per sample, e.g. `sampleSeed(seed, step, i, 'augment')`).
 */
export function randomResizedCropBox(width: number, height: number, seed: number, options: RandomResizedCropOptions = {}): CropBox {
  const [s0, s1] = options.scale ?? [0.9, 1.0];
  const [r0, r1] = options.ratio ?? [3 / 4, 4 / 3];
  if (!(s0 > 0 && s0 <= s1 && s1 <= 1)) throw new RangeError(`random-resized-crop: scale must satisfy 0 < min <= max <= 1, got [${s0}, ${s1}]`);
  if (!(r0 > 0 && r0 <= r1)) throw new RangeError(`random-resized-crop: ratio must satisfy 0 < min <= max, got [${r0}, ${r1}]`);
  const next = mulberry32(seed);
  const area = width * height;
  const logR0 = Math.log(r0);
  const logR1 = Math.log(r1);
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * (s0 + (s1 - s0) * next());
    const aspect = Math.exp(logR0 + (logR1 - logR0) * next());
    const w = roundHalfEven(Math.sqrt(targetArea * aspect));
    const h = roundHalfEven(Math.sqrt(targetArea / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = Math.floor(next() * (height - h + 1));
      const left = Math.floor(next() * (width - w + 1));
      return { left, top, width: w, height: h };
    }
  }
  const inRatio = width / height;
  let w = width;
  let h = height;
  if (inRatio < r0) h = roundHalfEven(w / r0);
  else if (inRatio > r1) w = roundHalfEven(h * r1);
  return { left: Math.floor((width - w) / 2), top: Math.floor((height - h) / 2), width: w, height: h };
}
