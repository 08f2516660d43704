import * as tf from '@tensorflow/tfjs-core';
import { gridSize, type M3AEConfig } from './config.js';
import { buildManifest, parameterSpecs, shapeSize, sincos2d, type ManifestEntry, type ParamManifest, type ParamSpec } from './params.js';
import { HashStream, hashWords } from './random.js';
import { ParamVariables } from './variables.js';
import { deviceKernel, FLAT_SPLIT, flatSplit } from './kernels/device.js';

export interface CreateModelOptions {
  /** Seed of the parameter initialisation. @defaultValue 0 (the official seed) */
  readonly seed?: number;
  /**
   * Skip the random initialisation and fill every parameter with zeros (except the fixed sin-cos table), for
   * callers that load weights right after (import, checkpoint restore). @defaultValue false
   */
  readonly zeroInit?: boolean;
}

let nextModelId = 0;

/**
 * An M3AE model: its configuration and its parameters in one flat, canonically ordered name → tf.Variable map.
 * Map keys are the canonical (official) names; the tfjs variable names carry a per-model prefix
 * (`m3ae<id>/…`) because tfjs variable names are global to the engine.
 */
export class M3AEModel extends ParamVariables {
  readonly id: number;
  readonly config: M3AEConfig;
  readonly manifest: ParamManifest;
  readonly specs: readonly ParamSpec[];

  constructor(config: M3AEConfig, options: CreateModelOptions = {}) {
    const id = nextModelId++;
    const specs = parameterSpecs(config);
    const seed = options.seed ?? 0;
    super(specs, `m3ae${id}`, (spec, index) => (options.zeroInit && spec.init.kind !== 'sincos2d' ? new Float32Array(shapeSize(spec.shape)) : initialValues(config, spec, seed, index)));
    this.id = id;
    this.config = config;
    this.specs = specs;
    this.manifest = buildManifest(specs);
  }
}

/** Creates a model with seeded initialisation (as the official code initialises each module). */
export function createModel(config: M3AEConfig, options: CreateModelOptions = {}): M3AEModel {
  return new M3AEModel(config, options);
}

/** Initial values of one parameter: a pure function of (config, spec, seed, canonical index). */
export function initialValues(config: M3AEConfig, spec: ParamSpec, seed: number, index: number): Float32Array {
  const n = shapeSize(spec.shape);
  const out = new Float32Array(n);
  const init = spec.init;
  switch (init.kind) {
    case 'zeros':
      return out;
    case 'ones':
      return out.fill(1);
    case 'sincos2d':
      return sincos2d(config.decoderHiddenSize, gridSize(config));
    case 'normal': {
      const s = new HashStream(hashWords(seed, index, 0x6e6f726d));
      for (let i = 0; i < n; i++) out[i] = s.normal() * init.std;
      if (init.zeroRow !== undefined) {
        const cols = spec.shape[spec.shape.length - 1] ?? 1;
        out.fill(0, init.zeroRow * cols, (init.zeroRow + 1) * cols);
      }
      return out;
    }
    case 'uniform': {
      const s = new HashStream(hashWords(seed, index, 0x756e6966));
      for (let i = 0; i < n; i++) out[i] = (2 * s.uniform() - 1) * init.bound;
      return out;
    }
  }
}

/** What the flat-buffer helpers need of a model (the pre-training `M3AEModel` or a `DownstreamModel`). */
export interface FlatParamModel {
  readonly manifest: ParamManifest;
  param(name: string): tf.Variable;
}

/** The trainable parameters as one Float32Array in manifest order (flattened on the device, one read). */
export async function flattenParams(model: FlatParamModel): Promise<Float32Array> {
  const parts: tf.Variable[] = [];
  for (const e of model.manifest.entries) if (e.offset !== null) parts.push(model.param(e.name));
  if (parts.length === 0) return new Float32Array(0);
  const flat = tf.tidy(() => tf.concat(parts.map((v) => tf.reshape(v, [-1]))));
  try {
    return (await flat.data()) as Float32Array;
  } finally {
    flat.dispose();
  }
}

/** Values of one upload of `setParamsFromFlat` on a device at most (a parameter larger than this goes alone). */
const UPLOAD_CHUNK_VALUES = 16 * 2 ** 20;

/**
 * Assigns every trainable parameter from a flat buffer in manifest order. Where the backend splits on the device
 * (`flatSplit`), consecutive parameters go up in uploads of up to 64 MiB, each cut into the parameters by buffer copies:
 * an upload per parameter costs about as much JavaScript as a program, and each ends a compute pass. `uploadValues`:
 * the largest upload in values (tests).
 */
export function setParamsFromFlat(model: FlatParamModel, flat: Float32Array, uploadValues = UPLOAD_CHUNK_VALUES): void {
  if (flat.length !== model.manifest.size) {
    throw new Error(`setParamsFromFlat: got ${flat.length} values; expected ${model.manifest.size} (manifest ${model.manifest.hash.slice(0, 12)})`);
  }
  const entries = model.manifest.entries.filter((e) => e.offset !== null);
  if (!deviceKernel(FLAT_SPLIT)) {
    for (const e of entries) {
      const size = shapeSize(e.shape);
      const v = model.param(e.name);
      tf.tidy(() => v.assign(tf.tensor(flat.subarray(e.offset ?? 0, (e.offset ?? 0) + size), [...e.shape], 'float32')));
    }
    return;
  }
  // Consecutive entries in groups of at most `uploadValues` values (manifest offsets are contiguous); an entry larger
  // than that is a group of its own.
  const sizes = entries.map((e) => shapeSize(e.shape));
  for (let first = 0; first < entries.length; ) {
    let end = first + 1;
    let values = sizes[first] as number;
    while (end < entries.length && values + (sizes[end] as number) <= uploadValues) values += sizes[end++] as number;
    const start = (entries[first] as ManifestEntry).offset ?? 0;
    tf.tidy(() => {
      const parts = flatSplit(tf.tensor1d(flat.subarray(start, start + values)), sizes.slice(first, end));
      entries.slice(first, end).forEach((e, i) => model.param(e.name).assign(tf.reshape(parts[i] as tf.Tensor, [...e.shape])));
    });
    first = end;
  }
}

/** Splits a flat buffer (parameters or gradients) into named views, in manifest order (no copy). */
export function unflatten(manifest: ParamManifest, flat: Float32Array): Map<string, Float32Array> {
  if (flat.length !== manifest.size) throw new Error(`unflatten: got ${flat.length} values; expected ${manifest.size}`);
  const out = new Map<string, Float32Array>();
  for (const e of manifest.entries) {
    if (e.offset === null) continue;
    out.set(e.name, flat.subarray(e.offset, e.offset + shapeSize(e.shape)));
  }
  return out;
}

/** Packs named arrays into one flat buffer in manifest order (missing names stay zero). */
export function flattenNamed(manifest: ParamManifest, named: ReadonlyMap<string, ArrayLike<number>>): Float32Array {
  const flat = new Float32Array(manifest.size);
  for (const e of manifest.entries) {
    if (e.offset === null) continue;
    const a = named.get(e.name);
    if (!a) continue;
    if (a.length !== shapeSize(e.shape)) throw new Error(`flattenNamed: ${e.name} has ${a.length} values; expected ${shapeSize(e.shape)}`);
    flat.set(a, e.offset);
  }
  return flat;
}
