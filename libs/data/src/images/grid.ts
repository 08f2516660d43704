import type { RgbImage } from './image.js';

export interface GridOptions {
  /** Integer upscaling of each image (nearest neighbour: patches stay crisp). @defaultValue so cells are ≥ 128 px */
  scale?: number;
  /** Pixels between and around cells. @defaultValue 4 */
  gap?: number;
  /** Grey level of the gaps. @defaultValue 255 */
  background?: number;
}

/** Lays out rows of equally sized size×size RGB images (HWC) into one RGB picture (encode it with `encodeRgb`). */
export function composeGrid(rows: readonly (readonly Uint8Array[])[], size: number, options: GridOptions = {}): RgbImage {
  const scale = options.scale ?? Math.max(1, Math.ceil(128 / size));
  const gap = options.gap ?? 4;
  const bg = options.background ?? 255;
  if (!(Number.isInteger(scale) && scale >= 1 && scale <= 64)) throw new RangeError(`grid scale: got ${scale}; expected an integer from 1 to 64`);
  if (!(Number.isInteger(gap) && gap >= 0)) throw new RangeError(`grid gap: got ${gap}; expected an integer ≥ 0`);
  const cols = Math.max(0, ...rows.map((r) => r.length));
  if (rows.length === 0 || cols === 0) throw new RangeError('grid: expected at least one image');
  const cell = size * scale;
  const width = gap + cols * (cell + gap);
  const height = gap + rows.length * (cell + gap);
  const data = new Uint8Array(width * height * 3).fill(bg);
  rows.forEach((row, r) => {
    row.forEach((img, col) => {
      if (img.length !== size * size * 3) throw new RangeError(`grid row ${r} image ${col}: got ${img.length} bytes; expected ${size * size * 3}`);
      const x0 = gap + col * (cell + gap);
      const y0 = gap + r * (cell + gap);
      for (let y = 0; y < cell; y++) {
        const sy = Math.floor(y / scale);
        let o = ((y0 + y) * width + x0) * 3;
        for (let x = 0; x < cell; x++) {
          const i = (sy * size + Math.floor(x / scale)) * 3;
          data[o++] = img[i] as number;
          data[o++] = img[i + 1] as number;
          data[o++] = img[i + 2] as number;
        }
      }
    });
  });
  return { width, height, data };
}
