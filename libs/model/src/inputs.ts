/**
 * Input preparation in plain JavaScript (no tensors, nothing that needs a gradient): patch extraction,
 * MIM targets, RoBERTa position ids, MAE's argsort of the masking noise.
 */

import { NORM_PIX_EPS, patchRowStarts } from './patches.js';

/**
 * Patches for the patch embedding, in the conv kernel's (c, ky, kx) order: [B·N, 3·P·P], patches in grid
 * order (row-major). `only` selects patches per sample (e.g. the kept ones), in the given order.
 */
export function patchesForEmbedding(pixels: Float32Array, batch: number, size: number, patch: number, only?: { indices: Int32Array; perSample: number }): Float32Array {
  const starts = patchRowStarts(size, patch);
  const g = size / patch;
  const n = g * g;
  const per = only ? only.perSample : n;
  const dim = 3 * patch * patch;
  const out = new Float32Array(batch * per * dim);
  const plane = size * size;
  for (let b = 0; b < batch; b++) {
    const img = b * 3 * plane;
    for (let j = 0; j < per; j++) {
      const first = (only ? (only.indices[b * per + j] ?? 0) : j) * patch;
      let o = (b * per + j) * dim;
      for (let c = 0; c < 3; c++) {
        for (let ky = first; ky < first + patch; ky++) {
          const row = img + c * plane + (starts[ky] as number);
          for (let kx = 0; kx < patch; kx++) out[o++] = pixels[row + kx] ?? 0;
        }
      }
    }
  }
  return out;
}

/**
 * MAE `patchify` of selected patches in (ky, kx, c) order, optionally normalised per patch
 * (`norm_pix_loss`: (x − mean) / sqrt(var + 1e-6), var unbiased as torch.var). Returns [rows, P·P·3] for the
 * (sample, patch) pairs given.
 */
export function mimTargets(pixels: Float32Array, size: number, patch: number, pairs: { sample: Int32Array; patch: Int32Array }, normPix: boolean): Float32Array {
  const starts = patchRowStarts(size, patch);
  const dim = 3 * patch * patch;
  const rows = pairs.sample.length;
  const out = new Float32Array(rows * dim);
  const plane = size * size;
  for (let r = 0; r < rows; r++) {
    const img = (pairs.sample[r] ?? 0) * 3 * plane;
    const first = (pairs.patch[r] ?? 0) * patch;
    const o = r * dim;
    let k = o;
    for (let ky = first; ky < first + patch; ky++) {
      const start = img + (starts[ky] as number);
      for (let at = start; at < start + patch; at++) {
        for (let c = 0; c < 3; c++) out[k++] = pixels[at + c * plane] ?? 0;
      }
    }
    if (normPix) {
      let mean = 0;
      for (let i = o; i < o + dim; i++) mean += out[i] ?? 0;
      mean /= dim;
      let ss = 0;
      for (let i = o; i < o + dim; i++) ss += ((out[i] ?? 0) - mean) ** 2;
      const inv = 1 / Math.sqrt(ss / (dim - 1) + NORM_PIX_EPS);
      for (let i = o; i < o + dim; i++) out[i] = ((out[i] ?? 0) - mean) * inv;
    }
  }
  return out;
}

/** HF `create_position_ids_from_input_ids`: non-padding tokens count up from padTokenId + 1; padding gets padTokenId. */
export function robertaPositionIds(ids: Int32Array, batch: number, length: number, pad: number): Int32Array {
  const out = new Int32Array(batch * length);
  for (let b = 0; b < batch; b++) {
    let count = 0;
    for (let i = 0; i < length; i++) {
      const k = b * length + i;
      if (ids[k] !== pad) {
        count++;
        out[k] = count + pad;
      } else out[k] = pad;
    }
  }
  return out;
}

export interface MimShuffle {
  /** [B, N]: patch indices sorted by ascending noise (the first `keep` are kept, in this order). */
  idsShuffle: Int32Array;
  /** [B, N]: rank of each patch in idsShuffle (argsort of idsShuffle). */
  idsRestore: Int32Array;
  keep: number;
}

/** MAE's `argsort(noise)` per sample (ties broken by index, i.e. a stable sort). */
export function mimShuffle(noise: Float32Array, batch: number, n: number, keep: number): MimShuffle {
  const idsShuffle = new Int32Array(batch * n);
  const idsRestore = new Int32Array(batch * n);
  const order = new Array<number>(n);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < n; i++) order[i] = i;
    const base = b * n;
    order.sort((x, y) => (noise[base + x] ?? 0) - (noise[base + y] ?? 0) || x - y);
    for (let r = 0; r < n; r++) {
      const idx = order[r] ?? 0;
      idsShuffle[base + r] = idx;
      idsRestore[base + idx] = r;
    }
  }
  return { idsShuffle, idsRestore, keep };
}

/** The index arrays of one MIM pass (MAE's random masking of the patches), from the shuffle of the noise. */
export interface MimPlan {
  /** [B·keep]: grid index of each kept patch, per sample in shuffle order (the vision encoder's patches). */
  keptIdx: Int32Array;
  /** [B·keep]: each kept patch's row of positional_embedding (row 0 is the class token's). */
  patchIndex: Int32Array;
  /**
   * [B·(N+1)]: the decoder's sequence per sample, [cls, N patches in grid order], as rows of the encoder output
   * (B·(1+keep) rows, class token first) for the visible ones and of the mask token (row B·(1+keep)) for the removed.
   */
  restoreIndex: Int32Array;
  /** [B·N]: 1 where the patch is removed, in grid order. */
  masked: Uint8Array;
}

export function mimPlan(noise: Float32Array, batch: number, n: number, keep: number): MimPlan {
  const sh = mimShuffle(noise, batch, n, keep);
  const keptIdx = new Int32Array(batch * keep);
  const patchIndex = new Int32Array(batch * keep);
  for (let s = 0; s < batch; s++) {
    for (let j = 0; j < keep; j++) {
      const idx = sh.idsShuffle[s * n + j] ?? 0;
      keptIdx[s * keep + j] = idx;
      patchIndex[s * keep + j] = 1 + idx;
    }
  }
  const visibleRows = batch * (1 + keep);
  const restoreIndex = new Int32Array(batch * (n + 1));
  const masked = new Uint8Array(batch * n);
  for (let s = 0; s < batch; s++) {
    restoreIndex[s * (n + 1)] = s * (1 + keep);
    for (let i = 0; i < n; i++) {
      const rank = sh.idsRestore[s * n + i] ?? 0;
      restoreIndex[s * (n + 1) + 1 + i] = rank < keep ? s * (1 + keep) + 1 + rank : visibleRows;
      masked[s * n + i] = rank < keep ? 0 : 1;
    }
  }
  return { keptIdx, patchIndex, restoreIndex, masked };
}

/** Additive attention bias [B, L] from a 0/1 mask: 0 for real tokens, −1e9 for padding. */
export function keyBiasFromMask(mask: Int32Array): Float32Array {
  const out = new Float32Array(mask.length);
  for (let i = 0; i < mask.length; i++) out[i] = mask[i] === 1 ? 0 : -1e9;
  return out;
}
