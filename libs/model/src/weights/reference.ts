import * as tf from '@tensorflow/tfjs-core';
import type { PretrainBatch } from '../batch.js';
import { numPatches, type M3AEConfig } from '../config.js';
import { flattenNamed, setParamsFromFlat, type M3AEModel } from '../model.js';
import { SafetensorsFile, writeSafetensors, type TensorInput } from '../safetensors/index.js';
import { exportOfficial, importOfficial, WeightsError, type ImportOptions, type WeightImport } from './official.js';
import { fileSource } from './source.js';
import { showShape } from './transforms.js';

/**
 * The reference interface of `m3ae model forward`: weights under the official names and one batch in a
 * safetensors file, so the model can be compared with a PyTorch implementation on identical inputs.
 */

/** Batch-file tensor names (batch-first, as the official code's batch dict) and our `PretrainBatch` fields. */
export const BATCH_FILE_TENSORS = {
  pixel_values: 'pixelValues',
  input_ids: 'inputIds',
  attention_mask: 'attentionMask',
  mlm_input_ids: 'mlmInputIds',
  mlm_labels: 'mlmLabels',
  mim_noise: 'mimNoise',
  itm_pixel_values: 'itmPixelValues',
  itm_labels: 'itmLabels',
} as const;

/** Optional: per-sample dropout seeds (only matter in training mode; zeros otherwise). */
export const BATCH_FILE_OPTIONAL = ['dropout_seeds'] as const;

export class BatchFileError extends Error {
  override readonly name = 'BatchFileError';
}

/**
 * Reads a batch file: float tensors may be F32/F16/BF16/F64, integer tensors I64/I32/I16/I8/U8/BOOL (range-
 * checked into int32). Shapes are checked against each other and the configuration; every error names the
 * tensor, what it has and what was expected. Returns the batch and the names of tensors it did not use.
 */
export async function readBatchFile(path: string, config: M3AEConfig): Promise<{ batch: PretrainBatch; unused: string[] }> {
  const file = await SafetensorsFile.open(path);
  try {
    const need = (name: string): readonly number[] => {
      if (!file.has(name)) throw new BatchFileError(`${path}: tensor ${name} is missing; a batch file holds ${Object.keys(BATCH_FILE_TENSORS).join(', ')}`);
      return file.info(name).shape;
    };
    const check = (name: string, expected: readonly number[]): void => {
      const got = need(name);
      if (got.length !== expected.length || got.some((d, i) => d !== expected[i])) {
        throw new BatchFileError(`${path}: tensor ${name} has shape ${showShape(got)}; expected ${showShape(expected)}`);
      }
    };
    const pix = need('pixel_values');
    if (pix.length !== 4 || pix[1] !== 3 || pix[2] !== config.imageSize || pix[3] !== config.imageSize) {
      throw new BatchFileError(`${path}: tensor pixel_values has shape ${showShape(pix)}; expected [B, 3, ${config.imageSize}, ${config.imageSize}] (config.imageSize)`);
    }
    const B = pix[0] as number;
    if (B < 1) throw new BatchFileError(`${path}: tensor pixel_values holds no sample`);
    const ids = need('input_ids');
    if (ids.length !== 2 || ids[0] !== B) throw new BatchFileError(`${path}: tensor input_ids has shape ${showShape(ids)}; expected [${B}, L]`);
    const L = ids[1] as number;
    if (L < 1 || L > config.maxTextLength) throw new BatchFileError(`${path}: tensor input_ids has ${L} positions; expected 1 … ${config.maxTextLength} (config.maxTextLength)`);
    const N = numPatches(config);
    const S = config.imageSize;
    for (const n of ['attention_mask', 'mlm_input_ids', 'mlm_labels']) check(n, [B, L]);
    check('mim_noise', [B, N]);
    check('itm_pixel_values', [B, 3, S, S]);
    check('itm_labels', [B]);
    const floats = async (n: string): Promise<Float32Array> => (await file.readFloat32(n)).data;
    const ints = async (n: string): Promise<Int32Array> => (await file.readInt32(n)).data;
    let dropoutSeeds: Int32Array = new Int32Array(B);
    if (file.has('dropout_seeds')) {
      check('dropout_seeds', [B]);
      dropoutSeeds = await ints('dropout_seeds');
    }
    const batch: PretrainBatch = {
      batchSize: B,
      imageSize: S,
      textLength: L,
      pixelValues: await floats('pixel_values'),
      inputIds: await ints('input_ids'),
      attentionMask: await ints('attention_mask'),
      mlmInputIds: await ints('mlm_input_ids'),
      mlmLabels: await ints('mlm_labels'),
      mimNoise: await floats('mim_noise'),
      itmPixelValues: await floats('itm_pixel_values'),
      itmLabels: await ints('itm_labels'),
      dropoutSeeds,
    };
    const known = new Set<string>([...Object.keys(BATCH_FILE_TENSORS), ...BATCH_FILE_OPTIONAL]);
    return { batch, unused: file.names().filter((n) => !known.has(n)) };
  } finally {
    await file.close();
  }
}

/** Writes a batch file (integer tensors as I64, as PyTorch holds them, or I32). */
export async function writeBatchFile(path: string, b: PretrainBatch, options: { intDtype?: 'I64' | 'I32'; metadata?: Record<string, string> } = {}): Promise<void> {
  const B = b.batchSize;
  const L = b.textLength;
  const S = b.imageSize;
  const N = b.mimNoise.length / B;
  const int = (data: Int32Array, shape: number[]): TensorInput =>
    options.intDtype === 'I32' ? { dtype: 'I32', shape, data } : { dtype: 'I64', shape, data: BigInt64Array.from(data, (v) => BigInt(v)) };
  const tensors: [string, TensorInput][] = [
    ['pixel_values', { dtype: 'F32', shape: [B, 3, S, S], data: b.pixelValues }],
    ['input_ids', int(b.inputIds, [B, L])],
    ['attention_mask', int(b.attentionMask, [B, L])],
    ['mlm_input_ids', int(b.mlmInputIds, [B, L])],
    ['mlm_labels', int(b.mlmLabels, [B, L])],
    ['mim_noise', { dtype: 'F32', shape: [B, N], data: b.mimNoise }],
    ['itm_pixel_values', { dtype: 'F32', shape: [B, 3, S, S], data: b.itmPixelValues }],
    ['itm_labels', int(b.itmLabels, [B])],
    ['dropout_seeds', int(b.dropoutSeeds, [B])],
  ];
  await writeSafetensors(path, tensors, options.metadata ? { metadata: options.metadata } : {});
}

/** Reads weights under the official names from a safetensors file (see `importOfficial`). */
export async function readOfficialWeights(path: string, config: M3AEConfig, options?: ImportOptions): Promise<WeightImport> {
  const file = await SafetensorsFile.open(path);
  try {
    return await importOfficial(fileSource(file), config, options);
  } finally {
    await file.close();
  }
}

/** Writes our parameters (or gradients) under the official names and PyTorch layouts, as F32 safetensors. */
export async function writeOfficialWeights(
  path: string,
  params: ReadonlyMap<string, Float32Array>,
  config: M3AEConfig,
  options: { allowMissing?: boolean; metadata?: Record<string, string> } = {},
): Promise<{ keys: number; bytes: number }> {
  const official = exportOfficial(params, config, { allowMissing: options.allowMissing ?? false });
  const { bytes } = await writeSafetensors(
    path,
    [...official].map(([k, t]): [string, TensorInput] => [k, { dtype: 'F32', shape: t.shape, data: t.data }]),
    options.metadata ? { metadata: options.metadata } : {},
  );
  return { keys: official.size, bytes };
}

/** Our parameter values (canonical names) into a model: every parameter, trainable or fixed, must be given. */
export function setModelParams(model: M3AEModel, params: ReadonlyMap<string, Float32Array>): void {
  for (const e of model.manifest.entries) {
    const v = params.get(e.name);
    const size = e.shape.reduce((a, b) => a * b, 1);
    if (!v) throw new WeightsError(`parameter ${e.name} is missing`);
    if (v.length !== size) throw new WeightsError(`parameter ${e.name} has ${v.length} values; expected ${showShape(e.shape)} = ${size}`);
  }
  setParamsFromFlat(model, flattenNamed(model.manifest, params));
  for (const e of model.manifest.entries) {
    if (e.trainable) continue;
    const variable = model.param(e.name);
    tf.tidy(() => variable.assign(tf.tensor(params.get(e.name) as Float32Array, [...e.shape], 'float32')));
  }
}

/** The model's parameters (trainable and fixed) as named arrays, canonical order. */
export async function getModelParams(model: M3AEModel): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const e of model.manifest.entries) out.set(e.name, ((await model.param(e.name).data()) as Float32Array).slice());
  return out;
}
