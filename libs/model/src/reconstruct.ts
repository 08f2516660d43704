import * as tf from '@tensorflow/tfjs-core';
import { mimKeepCount, mimReadoutLayer, numPatches, patchDim, type M3AEConfig } from './config.js';
import { Dropout } from './dropout.js';
import { keyBiasFromMask, mimPlan, patchesForEmbedding, robertaPositionIds } from './inputs.js';
import type { M3AEModel } from './model.js';
import { fusion, gatherRows, mimDecoder, mimPredict, textEncoder, visionEncoder, type Ctx } from './network.js';
import { paramsFromMap } from './ops.js';
import { normalizePatches, patchify, unnormalizePatches, unpatchify } from './patches.js';
import { hashWords, HashStream } from './random.js';

/**
 * Qualitative MIM outputs, as the MAE visualisations show them: for each image the original, the masked
 * input and the reconstruction — the decoder's prediction un-normalised (norm_pix undone per patch with the
 * target patch's own mean and variance), visible patches pasted back — all in the model's CLIP-normalised
 * pixel space. Turning them into pictures (RGB, grids, PNG) is `@m3ae/qualitative`'s.
 */

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
  const { keptIdx, patchIndex, restoreIndex, masked: mask } = mimPlan(input.mimNoise, B, N, keep);
  // Every patch's row of the decoder's sequence (the class token's rows left out).
  const patchRows = new Int32Array(B * N);
  for (let s = 0; s < B; s++) {
    for (let n = 0; n < N; n++) patchRows[s * N + n] = s * (N + 1) + 1 + n;
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

/** One image's reconstruction: three [3,S,S] CLIP-normalised images, as the model reads them. */
export interface ReconstructionRow {
  size: number;
  original: Float32Array;
  /** Removed patches shown as zeros of the normalised input, i.e. CLIP's mean colour (grey). */
  masked: Float32Array;
  /** The prediction un-normalised to pixels, visible patches pasted back from the original. */
  reconstruction: Float32Array;
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
  const scores: { maskedPatches: number; loss: number }[] = [];
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
    scores.push({ maskedPatches: removed, loss: removed > 0 ? se / (removed * dim) : 0 });
  }
  const recon = unpatchify(pasted, B, S, P);
  const maskedImages = unpatchify(hidden, B, S, P);
  const image = (all: Float32Array, b: number): Float32Array => all.slice(b * 3 * S * S, (b + 1) * 3 * S * S);
  return scores.map((score, b) => ({ size: S, original: image(input.pixelValues, b), masked: image(maskedImages, b), reconstruction: image(recon, b), ...score }));
}
