import * as tf from '@tensorflow/tfjs-core';
import { deviceKernel, DROPOUT, fusedDropout, keyedMask, type DeviceKeys, type MaskKeys } from './kernels/device.js';
import { residualAdd } from './ops.js';
import { hashWords } from './random.js';

/**
 * Deterministic per-sample dropout. The mask of sample b at dropout site s of forward pass `pass` is a pure
 * function of (dropoutSeeds[b], pass, s, element index within the sample): the same sample gets the same
 * mask in whatever micro-batch, process or backend it is computed. Sites are numbered in call order, which
 * is fixed by the configuration and the pass.
 */
export class Dropout {
  private site = 0;
  /** This pass's keys on the device, a table of `sites` sites × B (`deviceKeys`). */
  private table: { keys: tf.Tensor1D; sites: number } | undefined;

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
    const k = this.lazyMask(perSample, canonical);
    return k && keyedMask(k);
  }

  /** The mask of `mask` not yet made: what makes it (`keyedMask`, or a device kernel that uses its values); the same site numbering. */
  lazyMask(perSample: readonly number[], canonical: readonly number[] = perSample): MaskKeys | undefined {
    const site = this.site++;
    if (!this.active || !this.seeds) return undefined;
    const device = deviceKernel(DROPOUT) ? { device: this.deviceKeys(site) } : {};
    return { keys: this.keys(site), shape: [...perSample], canonical: [...canonical], threshold: this.threshold, keep: 1 / (1 - this.rate), ...device };
  }

  /**
   * x · mask for x of shape [B·rows, cols] (mask drawn as [B, rows, cols]); the mask made inside one kernel each way
   * where the backend has it (`fusedDropout`: the same values and products).
   */
  apply2d(x: tf.Tensor2D, batch: number): tf.Tensor2D {
    if (deviceKernel(DROPOUT)) {
      const site = this.site++;
      return this.active ? fusedDropout(x, this.deviceKeys(site), batch, this.threshold, 1 / (1 - this.rate)) : x;
    }
    const m = this.mask([x.shape[0] / batch, x.shape[1]]);
    return m ? tf.mul(x, tf.reshape(m, x.shape)) : x;
  }

  /**
   * `apply2d(x, batch) + residual` (a residual connection after dropout, as BERT's output layers): one program each way
   * where the backend has the dropout kernel (`fusedDropout` with the residual as addend), else `residualAdd`.
   */
  applyAndAdd(x: tf.Tensor2D, batch: number, residual: tf.Tensor2D): tf.Tensor2D {
    if (!deviceKernel(DROPOUT) || !this.active) return residualAdd(this.apply2d(x, batch), residual);
    return fusedDropout(x, this.deviceKeys(this.site++), batch, this.threshold, 1 / (1 - this.rate), residual);
  }

  /**
   * A site's keys where the device's kernels read them: every site's keys of this pass in one table, uploaded once
   * (sites 0 … 63 at first, twice as many when a site passes the end; an upload per site and direction cost about as
   * much JavaScript as a program). Made in the caller's scope (the forward pass's tidy); the kernels save it for the
   * backward pass.
   */
  private deviceKeys(site: number): DeviceKeys {
    const seeds = this.seeds ?? new Int32Array(0);
    if (!this.table || this.table.keys.isDisposed || site >= this.table.sites) {
      const sites = Math.max(64, 2 ** Math.ceil(Math.log2(site + 1)));
      const values = new Int32Array(sites * seeds.length);
      for (let s = 0; s < sites; s++) values.set(this.keys(s), s * seeds.length);
      this.table = { keys: tf.tensor1d(values, 'int32'), sites };
    }
    return { table: this.table.keys, offset: site * seeds.length };
  }

  /** The per-sample keys of a site (call only when active). */
  private keys(site: number): Int32Array {
    return Int32Array.from(this.seeds ?? [], (seed) => hashWords(seed, this.pass, site));
  }

  /** Drop where a 24-bit uniform is below this. */
  private get threshold(): number {
    return Math.round(this.rate * 16777216);
  }
}
