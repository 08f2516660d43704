/**
 * MAE's patch maths on planar images: `patchify` / `unpatchify` between [B,3,H,W] and [B, N, P·P·3], and
 * `norm_pix` (each patch normalised by its own mean and variance) with its inverse for visualisation.
 */

/** MAE's `norm_pix_loss` epsilon: target = (x − mean) / sqrt(var + 1e-6). */
export const NORM_PIX_EPS = 1e-6;

function checkGeometry(size: number, patch: number): number {
  if (!(Number.isInteger(size) && Number.isInteger(patch) && patch > 0 && size > 0 && size % patch === 0)) {
    throw new RangeError(`image size ${size} and patch size ${patch}: expected positive integers with the patch dividing the size`);
  }
  return size / patch;
}

const rowTables = new Map<string, Int32Array>();

/**
 * The one patch walk: entry n·P + ky is where row ky of patch n = gy·g + gx (grid in row-major order) starts in a
 * channel plane, (gy·P + ky)·size + gx·P; its P pixels follow it. Made once per (size, patch) and kept: every loop
 * that moves patches (`patchify`, `unpatchify`, the MIM targets, the patch embedding's input) reads it.
 */
export function patchRowStarts(size: number, patch: number): Int32Array {
  const key = `${size}:${patch}`;
  let table = rowTables.get(key);
  if (!table) {
    const g = checkGeometry(size, patch);
    table = new Int32Array(g * g * patch);
    let k = 0;
    for (let gy = 0; gy < g; gy++) {
      for (let gx = 0; gx < g; gx++) {
        for (let ky = 0; ky < patch; ky++) table[k++] = (gy * patch + ky) * size + gx * patch;
      }
    }
    rowTables.set(key, table);
  }
  return table;
}

/**
 * MAE's `patchify`: images [B,3,H,W] → patches [B, N, P·P·3], patches in grid (row-major) order, each in
 * (ky, kx, c) order (the MIM target and `decoder_pred` layout: `mimTargets` in inputs.ts).
 */
export function patchify(pixels: Float32Array, batch: number, size: number, patch: number): Float32Array {
  const g = checkGeometry(size, patch);
  const plane = size * size;
  if (pixels.length !== batch * 3 * plane) throw new RangeError(`patchify: got ${pixels.length} values; expected ${batch}×3×${size}×${size} = ${batch * 3 * plane}`);
  const rows = patchRowStarts(size, patch);
  const out = new Float32Array(batch * g * g * 3 * patch * patch);
  let k = 0;
  for (let b = 0; b < batch; b++) {
    for (let r = 0; r < rows.length; r++) {
      const start = b * 3 * plane + (rows[r] as number);
      for (let at = start; at < start + patch; at++) {
        out[k++] = pixels[at] as number;
        out[k++] = pixels[at + plane] as number;
        out[k++] = pixels[at + 2 * plane] as number;
      }
    }
  }
  return out;
}

/** MAE's `unpatchify`: the inverse of {@link patchify}, patches [B, N, P·P·3] → images [B,3,H,W]. */
export function unpatchify(patches: Float32Array, batch: number, size: number, patch: number): Float32Array {
  const g = checkGeometry(size, patch);
  const plane = size * size;
  if (patches.length !== batch * 3 * plane) throw new RangeError(`unpatchify: got ${patches.length} values; expected ${batch}×${g * g}×${3 * patch * patch} = ${batch * 3 * plane}`);
  const rows = patchRowStarts(size, patch);
  const out = new Float32Array(batch * 3 * plane);
  let k = 0;
  for (let b = 0; b < batch; b++) {
    for (let r = 0; r < rows.length; r++) {
      const start = b * 3 * plane + (rows[r] as number);
      for (let at = start; at < start + patch; at++) {
        out[at] = patches[k++] as number;
        out[at + plane] = patches[k++] as number;
        out[at + 2 * plane] = patches[k++] as number;
      }
    }
  }
  return out;
}

/** Per-row mean and sqrt(unbiased variance + eps) of rows of `dim` values (as `torch.var`, MAE's norm_pix). */
export function patchStats(patches: Float32Array, dim: number): { mean: Float64Array; scale: Float64Array } {
  if (!(Number.isInteger(dim) && dim > 1 && patches.length % dim === 0)) throw new RangeError(`patchStats: ${patches.length} values are not rows of ${dim}`);
  const rows = patches.length / dim;
  const mean = new Float64Array(rows);
  const scale = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let m = 0;
    for (let i = o; i < o + dim; i++) m += patches[i] as number;
    m /= dim;
    let ss = 0;
    for (let i = o; i < o + dim; i++) ss += ((patches[i] as number) - m) ** 2;
    mean[r] = m;
    scale[r] = Math.sqrt(ss / (dim - 1) + NORM_PIX_EPS);
  }
  return { mean, scale };
}

/** norm_pix: each row of `patches` as (x − mean) / sqrt(var + eps) of itself (the MIM target). */
export function normalizePatches(patches: Float32Array, dim: number): Float32Array {
  const { mean, scale } = patchStats(patches, dim);
  const out = new Float32Array(patches.length);
  for (let r = 0; r < mean.length; r++) {
    const m = mean[r] as number;
    const s = scale[r] as number;
    for (let i = r * dim; i < (r + 1) * dim; i++) out[i] = ((patches[i] as number) - m) / s;
  }
  return out;
}

/**
 * Undoes norm_pix on predictions: row r of `prediction` × sqrt(var + eps) + mean of row r of `target` (the
 * original patch), as MAE's visualisation does — the model predicts each patch's shape, the target supplies
 * its brightness and contrast.
 */
export function unnormalizePatches(prediction: Float32Array, target: Float32Array, dim: number): Float32Array {
  if (prediction.length !== target.length) throw new RangeError(`unnormalizePatches: prediction has ${prediction.length} values, target ${target.length}`);
  const { mean, scale } = patchStats(target, dim);
  const out = new Float32Array(prediction.length);
  for (let r = 0; r < mean.length; r++) {
    const m = mean[r] as number;
    const s = scale[r] as number;
    for (let i = r * dim; i < (r + 1) * dim; i++) out[i] = (prediction[i] as number) * s + m;
  }
  return out;
}
