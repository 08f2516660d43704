import * as tf from '@tensorflow/tfjs-core';
import { dropoutMask } from './kernels/device.js';
import { hashWords } from './random.js';

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
   * undefined when inactive; made on the device where the backend can (`dropoutMask`), bit-equal everywhere.
   * Element indices are those of `canonical` (default: perSample itself; same rank, no smaller), so a site whose
   * sequences may be cut shorter draws the same mask for the elements that remain.
   * Always advances the site counter so numbering does not depend on `active`.
   */
  mask(perSample: readonly number[], canonical: readonly number[] = perSample): tf.Tensor | undefined {
    const site = this.site++;
    if (!this.active || !this.seeds) return undefined;
    const keys = Int32Array.from(this.seeds, (seed) => hashWords(seed, this.pass, site));
    const threshold = Math.round(this.rate * 16777216);
    return tf.tidy(() => tf.reshape(dropoutMask(keys, { shape: perSample, canonical }, threshold, 1 / (1 - this.rate)), [keys.length, ...perSample]));
  }

  /** x · mask for x of shape [B·rows, cols] (mask drawn as [B, rows, cols]). */
  apply2d(x: tf.Tensor2D, batch: number): tf.Tensor2D {
    const m = this.mask([x.shape[0] / batch, x.shape[1]]);
    return m ? tf.mul(x, tf.reshape(m, x.shape)) : x;
  }
}
