import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import sharp from 'sharp';
import { CheckpointError, loadCheckpoint, readCheckpointInfo, type CheckpointInfo } from './checkpoint/checkpoint.js';
import { listStepFiles, resolveCheckpointPath } from './checkpoint/directory.js';
import { mimKeepCount, mimReadoutLayer, numPatches, parseConfig, patchDim, resolveConfig, type M3AEConfig } from './config.js';
import { Dropout } from './dropout.js';
import { keyBiasFromMask, mimShuffle, patchesForEmbedding, robertaPositionIds } from './inputs.js';
import { createModel, setParamsFromFlat, type M3AEModel } from './model.js';
import { fusion, gatherRows, mimDecoder, mimPredict, textEncoder, visionEncoder, type Ctx } from './network.js';
import { paramsFromMap } from './ops.js';
import { hashWords, HashStream } from './random.js';

/**
 * Qualitative MIM outputs, as the MAE visualisations show them: for each image the original, the masked
 * input and the reconstruction — the decoder's prediction un-normalised back to pixels (norm_pix undone per
 * patch with the target patch's own mean and variance, then CLIP's mean/std undone), visible patches pasted
 * back. Also the grid the coordinator renders of fixed validation images every N steps.
 */

/**
 * CLIP's per-channel mean and standard deviation on [0, 1] pixels: the same numbers as `CLIP_MEAN`/`CLIP_STD`
 * of @m3ae/data, repeated here because the model and the data lib never import each other (contracts §2).
 */
export const CLIP_PIXEL_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_PIXEL_STD = [0.26862954, 0.26130258, 0.27577711] as const;

/** MAE's `norm_pix_loss` epsilon: target = (x − mean) / sqrt(var + 1e-6). */
export const NORM_PIX_EPS = 1e-6;

function checkGeometry(size: number, patch: number): number {
  if (!(Number.isInteger(size) && Number.isInteger(patch) && patch > 0 && size > 0 && size % patch === 0)) {
    throw new RangeError(`image size ${size} and patch size ${patch}: expected positive integers with the patch dividing the size`);
  }
  return size / patch;
}

/**
 * MAE's `patchify`: images [B,3,H,W] → patches [B, N, P·P·3], patches in grid (row-major) order, each in
 * (ky, kx, c) order (the MIM target and `decoder_pred` layout, contracts §4).
 */
export function patchify(pixels: Float32Array, batch: number, size: number, patch: number): Float32Array {
  const g = checkGeometry(size, patch);
  const plane = size * size;
  if (pixels.length !== batch * 3 * plane) throw new RangeError(`patchify: got ${pixels.length} values; expected ${batch}×3×${size}×${size} = ${batch * 3 * plane}`);
  const dim = 3 * patch * patch;
  const out = new Float32Array(batch * g * g * dim);
  let k = 0;
  for (let b = 0; b < batch; b++) {
    for (let gy = 0; gy < g; gy++) {
      for (let gx = 0; gx < g; gx++) {
        for (let ky = 0; ky < patch; ky++) {
          for (let kx = 0; kx < patch; kx++) {
            const at = b * 3 * plane + (gy * patch + ky) * size + gx * patch + kx;
            out[k++] = pixels[at] as number;
            out[k++] = pixels[at + plane] as number;
            out[k++] = pixels[at + 2 * plane] as number;
          }
        }
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
  const out = new Float32Array(batch * 3 * plane);
  let k = 0;
  for (let b = 0; b < batch; b++) {
    for (let gy = 0; gy < g; gy++) {
      for (let gx = 0; gx < g; gx++) {
        for (let ky = 0; ky < patch; ky++) {
          for (let kx = 0; kx < patch; kx++) {
            const at = b * 3 * plane + (gy * patch + ky) * size + gx * patch + kx;
            out[at] = patches[k++] as number;
            out[at + plane] = patches[k++] as number;
            out[at + 2 * plane] = patches[k++] as number;
          }
        }
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

/** CLIP-normalised planar pixels [3,H,W] → 8-bit interleaved RGB (HWC): (v·std + mean)·255, rounded and clamped. */
export function clipToRgb(pixels: Float32Array, size: number, offset = 0): Uint8Array {
  const plane = size * size;
  if (offset < 0 || offset + 3 * plane > pixels.length) throw new RangeError(`clipToRgb: ${pixels.length} values cannot hold a 3×${size}×${size} image at offset ${offset}`);
  const out = new Uint8Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const std = CLIP_PIXEL_STD[c] as number;
    const mean = CLIP_PIXEL_MEAN[c] as number;
    for (let p = 0; p < plane; p++) {
      const v = Math.round(((pixels[offset + c * plane + p] as number) * std + mean) * 255);
      out[p * 3 + c] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return out;
}

/** 8-bit interleaved RGB (HWC) → CLIP-normalised planar pixels [3,H,W] (the data lib's `normalizeRgb`). */
export function rgbToClip(rgb: Uint8Array, size: number): Float32Array {
  const plane = size * size;
  if (rgb.length !== 3 * plane) throw new RangeError(`rgbToClip: got ${rgb.length} bytes; expected ${3 * plane} for ${size}×${size} RGB`);
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const std = CLIP_PIXEL_STD[c] as number;
    const mean = CLIP_PIXEL_MEAN[c] as number;
    for (let p = 0; p < plane; p++) out[c * plane + p] = ((rgb[p * 3 + c] as number) / 255 - mean) / std;
  }
  return out;
}

/**
 * Masking noise for visualisation, [B, N] uniforms from (seed, image index): the same patches are hidden in
 * every grid of a run, so grids of different steps compare like for like.
 */
export function visualisationNoise(batch: number, patches: number, seed = 0): Float32Array {
  const out = new Float32Array(batch * patches);
  for (let b = 0; b < batch; b++) {
    const s = new HashStream(hashWords(seed, b, 0x7669736d));
    for (let n = 0; n < patches; n++) out[b * patches + n] = s.uniform();
  }
  return out;
}

/** What the MIM pass reads: images, their (unmasked) texts and the masking noise. */
export interface MimInput {
  batchSize: number;
  /** [B,3,H,W] CLIP-normalised. */
  pixelValues: Float32Array;
  /** [B,L] token ids (the official MIM pass reads the unmasked caption). */
  inputIds: Int32Array;
  /** [B,L] 1 = token, 0 = padding. */
  attentionMask: Int32Array;
  /** [B,N] uniforms; the floor(N·(1 − mimMaskRatio)) smallest of each row are kept (MAE argsort). */
  mimNoise: Float32Array;
}

export interface MimPrediction {
  /** `decoder_pred` for every patch, [B, N, P·P·3] in (ky, kx, c) order (norm_pix space when normPixLoss). */
  prediction: Float32Array;
  /** [B, N]: 1 where the patch was removed (MAE's mask), 0 where visible. */
  mask: Uint8Array;
  /** Patches kept per image. */
  keep: number;
}

function checkInput(c: M3AEConfig, x: MimInput): number {
  const B = x.batchSize;
  const fail = (field: string, got: number, want: string): never => {
    throw new RangeError(`${field}: got ${got} values; expected ${want}`);
  };
  if (!(Number.isInteger(B) && B >= 1)) throw new RangeError(`batchSize: got ${B}; expected a positive integer`);
  if (x.pixelValues.length !== B * 3 * c.imageSize ** 2) fail('pixelValues', x.pixelValues.length, `${B}×3×${c.imageSize}×${c.imageSize}`);
  if (x.mimNoise.length !== B * numPatches(c)) fail('mimNoise', x.mimNoise.length, `${B}×${numPatches(c)}`);
  const L = x.inputIds.length / B;
  if (!(Number.isInteger(L) && L >= 1 && L <= c.maxTextLength)) fail('inputIds', x.inputIds.length, `${B}×L with 1 ≤ L ≤ maxTextLength = ${c.maxTextLength}`);
  if (x.attentionMask.length !== x.inputIds.length) fail('attentionMask', x.attentionMask.length, `${x.inputIds.length} (as inputIds)`);
  for (let i = 0; i < x.inputIds.length; i++) {
    const v = x.inputIds[i] as number;
    if (!(v >= 0 && v < c.vocabSize)) throw new RangeError(`inputIds[${i}]: got ${v}; expected a token id in [0, ${c.vocabSize})`);
  }
  return L;
}

/**
 * The MIM pass of pre-training (full text, masked image, `mimLayer` fusion layers, decoder), in evaluation
 * mode, with `decoder_pred` applied to every patch rather than only the removed ones.
 */
export async function predictMim(model: M3AEModel, input: MimInput): Promise<MimPrediction> {
  const c = model.config;
  const L = checkInput(c, input);
  const B = input.batchSize;
  const N = numPatches(c);
  const keep = mimKeepCount(c);
  const dim = patchDim(c);
  const sh = mimShuffle(input.mimNoise, B, N, keep);
  const keptIdx = new Int32Array(B * keep);
  const patchIndex = new Int32Array(B * keep);
  for (let s = 0; s < B; s++) {
    for (let j = 0; j < keep; j++) {
      const idx = sh.idsShuffle[s * N + j] as number;
      keptIdx[s * keep + j] = idx;
      patchIndex[s * keep + j] = 1 + idx;
    }
  }
  const visibleRows = B * (1 + keep);
  const restoreIndex = new Int32Array(B * (N + 1));
  const patchRows = new Int32Array(B * N);
  const mask = new Uint8Array(B * N);
  for (let s = 0; s < B; s++) {
    restoreIndex[s * (N + 1)] = s * (1 + keep);
    for (let n = 0; n < N; n++) {
      const rank = sh.idsRestore[s * N + n] as number;
      restoreIndex[s * (N + 1) + 1 + n] = rank < keep ? s * (1 + keep) + 1 + rank : visibleRows;
      patchRows[s * N + n] = s * (N + 1) + 1 + n;
      mask[s * N + n] = rank < keep ? 0 : 1;
    }
  }
  const patches = patchesForEmbedding(input.pixelValues, B, c.imageSize, c.patchSize, { indices: keptIdx, perSample: keep });
  const notPad = new Float32Array(input.inputIds.length);
  for (let i = 0; i < notPad.length; i++) notPad[i] = input.inputIds[i] === c.padTokenId ? 0 : 1;
  const out = tf.tidy(() => {
    const ctx: Ctx = { p: paramsFromMap(model.params), c, batch: B, drop: Dropout.off() };
    const keyBias = tf.tensor4d(keyBiasFromMask(input.attentionMask), [B, 1, 1, L]);
    const text = textEncoder(ctx, {
      ids: tf.tensor1d(input.inputIds, 'int32'),
      positionIds: tf.tensor1d(robertaPositionIds(input.inputIds, B, L, c.padTokenId), 'int32'),
      notPad: tf.tensor2d(notPad, [notPad.length, 1]),
      keyBias,
      length: L,
    });
    const image = visionEncoder(ctx, tf.tensor2d(patches, [B * keep, dim]), tf.tensor1d(patchIndex, 'int32'));
    const fused = fusion(ctx, text, L, image, keep + 1, keyBias, mimReadoutLayer(c), 'image');
    const decoded = mimDecoder(ctx, fused.image, tf.tensor1d(restoreIndex, 'int32'));
    return mimPredict(ctx, gatherRows(decoded, tf.tensor1d(patchRows, 'int32')));
  });
  try {
    return { prediction: (await out.data()) as Float32Array, mask, keep };
  } finally {
    out.dispose();
  }
}

/** One row of a reconstruction grid: three size×size RGB images (HWC). */
export interface ReconstructionRow {
  size: number;
  original: Uint8Array;
  /** Removed patches shown as zeros of the normalised input, i.e. CLIP's mean colour (grey). */
  masked: Uint8Array;
  /** The prediction un-normalised to pixels, visible patches pasted back from the original. */
  reconstruction: Uint8Array;
  maskedPatches: number;
  /** This image's MIM loss: mean over removed patches of the mean squared error against the (norm_pix) target. */
  loss: number;
}

/** Original, masked input and reconstruction of each image (evaluation mode). */
export async function reconstructImages(model: M3AEModel, input: MimInput): Promise<ReconstructionRow[]> {
  const c = model.config;
  const { prediction, mask } = await predictMim(model, input);
  const B = input.batchSize;
  const S = c.imageSize;
  const P = c.patchSize;
  const N = numPatches(c);
  const dim = patchDim(c);
  const target = patchify(input.pixelValues, B, S, P);
  const predPixels = c.normPixLoss ? unnormalizePatches(prediction, target, dim) : prediction;
  const lossTarget = c.normPixLoss ? normalizePatches(target, dim) : target;
  const pasted = new Float32Array(target.length);
  const hidden = new Float32Array(target.length);
  const rows: ReconstructionRow[] = [];
  for (let b = 0; b < B; b++) {
    let se = 0;
    let removed = 0;
    for (let n = 0; n < N; n++) {
      const o = (b * N + n) * dim;
      if (mask[b * N + n] === 1) {
        removed++;
        pasted.set(predPixels.subarray(o, o + dim), o);
        for (let i = o; i < o + dim; i++) se += ((prediction[i] as number) - (lossTarget[i] as number)) ** 2;
      } else {
        pasted.set(target.subarray(o, o + dim), o);
        hidden.set(target.subarray(o, o + dim), o);
      }
    }
    rows.push({ size: S, original: new Uint8Array(0), masked: new Uint8Array(0), reconstruction: new Uint8Array(0), maskedPatches: removed, loss: removed > 0 ? se / (removed * dim) : 0 });
  }
  const recon = unpatchify(pasted, B, S, P);
  const maskedImages = unpatchify(hidden, B, S, P);
  rows.forEach((row, b) => {
    row.original = clipToRgb(input.pixelValues, S, b * 3 * S * S);
    row.masked = clipToRgb(maskedImages, S, b * 3 * S * S);
    row.reconstruction = clipToRgb(recon, S, b * 3 * S * S);
  });
  return rows;
}

/** 8-bit RGB pixels, interleaved, row-major. */
export interface RgbGrid {
  width: number;
  height: number;
  data: Uint8Array;
}

export interface GridOptions {
  /** Integer upscaling of each image (nearest neighbour: patches stay crisp). @defaultValue so cells are ≥ 128 px */
  scale?: number;
  /** Pixels between and around cells. @defaultValue 4 */
  gap?: number;
  /** Grey level of the gaps. @defaultValue 255 */
  background?: number;
}

/** Lays out rows of equally sized RGB images (HWC) into one RGB picture. */
export function composeGrid(rows: readonly (readonly Uint8Array[])[], size: number, options: GridOptions = {}): RgbGrid {
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

export async function encodePng(grid: RgbGrid): Promise<Buffer> {
  return await sharp(grid.data, { raw: { width: grid.width, height: grid.height, channels: 3 } }).png({ compressionLevel: 6 }).toBuffer();
}

/** The grid of {@link reconstructImages} (one row per image: original · masked · reconstruction) as PNG bytes. */
export async function renderReconstructionGrid(model: M3AEModel, input: MimInput, options: GridOptions = {}): Promise<{ png: Buffer; rows: ReconstructionRow[]; width: number; height: number }> {
  const rows = await reconstructImages(model, input);
  const grid = composeGrid(rows.map((r) => [r.original, r.masked, r.reconstruction]), model.config.imageSize, options);
  return { png: await encodePng(grid), rows, width: grid.width, height: grid.height };
}

export interface CheckpointModel {
  model: M3AEModel;
  /** The checkpoint file read. */
  path: string;
  info: CheckpointInfo;
}

/**
 * A model with a checkpoint's parameters: its stored configuration (optionally with another mask ratio: the
 * parameters do not depend on it), built on the current backend. The caller disposes of `model`.
 */
export async function modelFromCheckpoint(dirOrFile: string, overrides: { mimMaskRatio?: number } = {}): Promise<CheckpointModel> {
  const path = await resolveCheckpointPath(dirOrFile);
  const info = await readCheckpointInfo(path);
  if (info.config === null || info.config === undefined) throw new CheckpointError(`${path}: no model configuration stored (metadata config); expected a checkpoint written by the trainer`);
  let config = resolveConfig(info.config, `${path} config`);
  if (overrides.mimMaskRatio !== undefined) config = parseConfig({ ...config, mimMaskRatio: overrides.mimMaskRatio }, 'mask ratio override');
  const model = createModel(config, { zeroInit: true });
  try {
    const loaded = await loadCheckpoint(path, model.manifest);
    setParamsFromFlat(model, loaded.params);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, path, info };
}

/** One validation example, ready for the model. */
export interface ValidationSample {
  /** [3,H,W] CLIP-normalised. */
  pixelValues: Float32Array;
  /** [L] token ids and mask (L = maxTextLength). */
  inputIds: Int32Array;
  attentionMask: Int32Array;
}

/** What {@link validationSamples} reads: structurally @m3ae/data's `ShardDataset` and `TextTokenizer`. */
export interface ValidationSource {
  readonly size: number;
  get(index: number): Promise<{ text: string; image: { data: Uint8Array; width: number; height: number } }>;
}
export interface ValidationTokenizer {
  encode(text: string, maxLength: number): { inputIds: Int32Array; attentionMask: Int32Array };
}

/**
 * Fixed validation examples from a shard dataset: `count` indices spread evenly over it (or the given ones),
 * images normalised, captions tokenised at the model's text length.
 */
export async function validationSamples(options: { dataset: ValidationSource; tokenizer: ValidationTokenizer; config: M3AEConfig; count?: number; indices?: readonly number[] }): Promise<ValidationSample[]> {
  const { dataset, tokenizer, config } = options;
  const count = options.count ?? 4;
  const indices = options.indices ?? Array.from({ length: Math.min(count, dataset.size) }, (_, i) => Math.floor((i * dataset.size) / Math.min(count, dataset.size)));
  const out: ValidationSample[] = [];
  for (const index of indices) {
    if (!(Number.isInteger(index) && index >= 0 && index < dataset.size)) throw new RangeError(`validation index ${index}: expected an integer in [0, ${dataset.size})`);
    const s = await dataset.get(index);
    if (s.image.width !== config.imageSize || s.image.height !== config.imageSize) {
      throw new RangeError(`validation sample ${index}: image is ${s.image.width}×${s.image.height}; expected the model's ${config.imageSize}×${config.imageSize}`);
    }
    const enc = tokenizer.encode(s.text, config.maxTextLength);
    out.push({ pixelValues: rgbToClip(s.image.data, config.imageSize), inputIds: enc.inputIds, attentionMask: enc.attentionMask });
  }
  return out;
}

/** The samples as one {@link MimInput} batch, with visualisation noise from `seed`. */
export function batchSamples(config: M3AEConfig, samples: readonly ValidationSample[], seed = 0): MimInput {
  const B = samples.length;
  if (B === 0) throw new RangeError('expected at least one sample');
  const L = samples[0]?.inputIds.length ?? 0;
  const plane = 3 * config.imageSize ** 2;
  const input: MimInput = {
    batchSize: B,
    pixelValues: new Float32Array(B * plane),
    inputIds: new Int32Array(B * L),
    attentionMask: new Int32Array(B * L),
    mimNoise: visualisationNoise(B, numPatches(config), seed),
  };
  samples.forEach((s, b) => {
    if (s.pixelValues.length !== plane) throw new RangeError(`sample ${b}: pixelValues has ${s.pixelValues.length} values; expected ${plane}`);
    if (s.inputIds.length !== L || s.attentionMask.length !== L) throw new RangeError(`sample ${b}: text length ${s.inputIds.length}; expected ${L} like sample 0`);
    input.pixelValues.set(s.pixelValues, b * plane);
    input.inputIds.set(s.inputIds, b * L);
    input.attentionMask.set(s.attentionMask, b * L);
  });
  return input;
}

const GRID_FILE_RE = /^recon-(\d+)\.png$/;

export function reconstructionGridFileName(step: number): string {
  return `recon-${step}.png`;
}

/** The reconstruction grids of a directory, oldest step first. */
export async function listReconstructionGrids(dir: string): Promise<{ step: number; path: string }[]> {
  return await listStepFiles(dir, GRID_FILE_RE);
}

export interface ValidationGridOptions {
  config: M3AEConfig;
  /** The fixed validation examples (see {@link validationSamples}). */
  samples: readonly ValidationSample[];
  /** Where `recon-<step>.png` files go (the checkpoint directory). */
  dir: string;
  /** Grids kept (newest by step). @defaultValue 3 */
  keep?: number;
  /** Seed of the masking noise (fixed for the run). @defaultValue 0 */
  seed?: number;
  grid?: GridOptions;
}

/**
 * Renders the reconstruction grid of fixed validation images for the coordinator: `render(step, params)`
 * after a checkpoint (or `renderCheckpoint(path)`), written atomically as `dir/recon-<step>.png`, the newest
 * `keep` kept; `latest()` gives the newest PNG for the run page. Holds one model (created on the current
 * tfjs backend: choose it before the first render); the forward pass runs on the caller's thread.
 */
export class ValidationGridRenderer {
  private model: M3AEModel | undefined;
  private readonly input: MimInput;
  private readonly keep: number;
  private newest: { step: number; png: Buffer } | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: ValidationGridOptions) {
    this.keep = options.keep ?? 3;
    if (!(Number.isInteger(this.keep) && this.keep >= 1)) throw new RangeError(`keep: got ${options.keep}; expected an integer ≥ 1`);
    this.input = batchSamples(options.config, options.samples, options.seed ?? 0);
  }

  /** Picks up the newest grid already in `dir` (after a coordinator restart). */
  async loadLatest(): Promise<{ step: number; path: string } | undefined> {
    const all = await listReconstructionGrids(this.options.dir);
    const last = all[all.length - 1];
    if (last && (!this.newest || last.step > this.newest.step)) this.newest = { step: last.step, png: await readFile(last.path) };
    return last;
  }

  /** Renders the grid of the flat trainable parameters (manifest order) after `step` steps. Calls run one at a time. */
  async render(step: number, params: Float32Array): Promise<{ step: number; path: string; png: Buffer; rows: ReconstructionRow[] }> {
    const run = this.queue.then(() => this.renderNow(step, params));
    this.queue = run.catch(() => undefined);
    return await run;
  }

  /** Renders the grid of a checkpoint file's parameters (its step). */
  async renderCheckpoint(path: string): Promise<{ step: number; path: string; png: Buffer; rows: ReconstructionRow[] }> {
    const model = this.ensureModel();
    const loaded = await loadCheckpoint(path, model.manifest);
    return await this.render(loaded.step, loaded.params);
  }

  /** The newest grid's PNG bytes (the run page's `latestGrid`). */
  latest(): Buffer | undefined {
    return this.newest?.png;
  }

  get latestStep(): number | undefined {
    return this.newest?.step;
  }

  dispose(): void {
    this.model?.dispose();
    this.model = undefined;
  }

  private ensureModel(): M3AEModel {
    this.model ??= createModel(this.options.config, { zeroInit: true });
    return this.model;
  }

  private async renderNow(step: number, params: Float32Array): Promise<{ step: number; path: string; png: Buffer; rows: ReconstructionRow[] }> {
    if (!(Number.isSafeInteger(step) && step >= 0)) throw new RangeError(`step: got ${step}; expected a non-negative integer`);
    const model = this.ensureModel();
    setParamsFromFlat(model, params);
    const { png, rows } = await renderReconstructionGrid(model, this.input, this.options.grid);
    const dir = this.options.dir;
    await mkdir(dir, { recursive: true });
    const path = join(dir, reconstructionGridFileName(step));
    const tmp = `${path}.tmp-${process.pid}`;
    await writeFile(tmp, png);
    await rename(tmp, path);
    if (!this.newest || step >= this.newest.step) this.newest = { step, png };
    const all = await listReconstructionGrids(dir);
    for (const old of all.slice(0, Math.max(0, all.length - this.keep))) await rm(old.path, { force: true });
    return { step, path, png, rows };
  }
}
