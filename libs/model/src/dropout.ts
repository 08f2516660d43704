import * as tf from '@tensorflow/tfjs-core';
import { hash32, hashWords } from './random.js';

/**
 * Deterministic per-sample dropout. The mask of sample b at dropout site s of forward pass `pass` is a pure
 * function of (dropoutSeeds[b], pass, s, element index within the sample): the same sample gets the same
 * mask in whatever micro-batch, process or backend it is computed. Sites are numbered in call order, which
 * is fixed by the configuration and the pass.
 */
export class Dropout {
  private site = 0;

  constructor(
    private readonly seeds: Int32Array | null,
    private readonly rate: number,
    private readonly pass: number,
  ) {}

  /** No dropout (evaluation, or rate 0). */
  static off(): Dropout {
    return new Dropout(null, 0, 0);
  }

  get active(): boolean {
    return this.seeds !== null && this.rate > 0;
  }

  /**
   * A mask of shape [B, ...perSample] with values 0 or 1/(1−rate) (inverted dropout, as PyTorch), or
   * undefined when inactive. Always advances the site counter so numbering does not depend on `active`.
   */
  mask(perSample: readonly number[]): tf.Tensor | undefined {
    const site = this.site++;
    if (!this.active || !this.seeds) return undefined;
    const seeds = this.seeds;
    const per = perSample.reduce((a, b) => a * b, 1);
    const values = new Float32Array(seeds.length * per);
    const keep = 1 / (1 - this.rate);
    // Compare 24-bit uniforms against an integer threshold: u < rate drops.
    const threshold = Math.round(this.rate * 16777216);
    for (let b = 0; b < seeds.length; b++) {
      const key = hashWords(seeds[b] ?? 0, this.pass, site);
      const base = b * per;
      for (let i = 0; i < per; i++) {
        values[base + i] = hash32(key ^ Math.imul(i, 0x9e3779b9)) >>> 8 < threshold ? 0 : keep;
      }
    }
    return tf.tensor(values, [seeds.length, ...perSample], 'float32');
  }

  /** x · mask for x of shape [B·rows, cols] (mask drawn as [B, rows, cols]). */
  apply2d(x: tf.Tensor2D, batch: number): tf.Tensor2D {
    const m = this.mask([x.shape[0] / batch, x.shape[1]]);
    return m ? tf.mul(x, tf.reshape(m, x.shape)) : x;
  }
}
