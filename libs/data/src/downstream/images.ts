import { ImageDecodeError } from '../images/errors.js';
import { randomResizedCropToRgb, resizeToRgb, type RgbImage } from '../images/image.js';
import type { SkipLog } from '../skip-log.js';

/**
 * Images of a downstream dataset at one size. Downstream sets are small (VQA-RAD: 315 images), so the centre-resized
 * RGB of every image is kept after its first decode (93 KB per image at 176 px); random-resized crops are decoded
 * afresh each time because every step draws a new box.
 */
export class ImageStore {
  private readonly cache = new Map<string, Promise<RgbImage>>();

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`ImageStore: size must be a positive integer, got ${String(size)}`);
  }

  /** M3AE's evaluation transform (short side to `size`, centre crop), cached. */
  center(path: string): Promise<RgbImage> {
    let p = this.cache.get(path);
    if (!p) {
      p = resizeToRgb(path, this.size);
      this.cache.set(path, p);
      // A failed decode is not kept: the caller decides whether the image is skipped.
      p.catch(() => this.cache.delete(path));
    }
    return p;
  }

  /** `RandomResizedCrop(size, scale)` with a per-sample seed (M3AE's `clip_resizedcrop`, scale (0.9, 1.0)). */
  crop(path: string, seed: number, scale: readonly [number, number] = [0.9, 1.0]): Promise<RgbImage> {
    return randomResizedCropToRgb(path, this.size, seed, { scale });
  }

  get cachedCount(): number {
    return this.cache.size;
  }

  /**
   * Decodes every distinct image once (filling the cache) and returns the items whose image decodes; the others
   * are logged as `unreadable-image` and counted, never a crash later in the middle of training.
   */
  async keepReadable<T extends { imagePath: string; id: string; provenance?: { file: string; line: number } }>(
    items: readonly T[],
    log: SkipLog,
    concurrency = 4,
  ): Promise<T[]> {
    const paths = [...new Set(items.map((i) => i.imagePath))];
    const bad = new Map<string, string>();
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let k = next++; k < paths.length; k = next++) {
        const path = paths[k] as string;
        try {
          await this.center(path);
        } catch (e) {
          if (!(e instanceof ImageDecodeError)) throw e;
          bad.set(path, e.message);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, paths.length)) }, worker));
    if (bad.size === 0) return [...items];
    const kept: T[] = [];
    for (const item of items) {
      const why = bad.get(item.imagePath);
      if (why === undefined) kept.push(item);
      else log.skip('unreadable-image', item.provenance?.file ?? item.imagePath, item.provenance?.line ?? 0, `${item.id}: ${why}`);
    }
    return kept;
  }
}
