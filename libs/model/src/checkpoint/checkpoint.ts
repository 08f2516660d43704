import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import type { OptimizerState, ParamLayout } from '@m3ae/protocol';
import { SafetensorsError, SafetensorsFile, writeSafetensors, type TensorInput, type TensorInfo } from '../safetensors/index.js';

/** The parameter layout a checkpoint is written for (the model's `ParamManifest` is one). */
export type CheckpointManifest = ParamLayout;
export type { OptimizerState };

export interface CheckpointState {
  /** Training step this state is after. */
  readonly step: number;
  readonly manifest: CheckpointManifest;
  /** Flat trainable parameters, canonical order (manifest offsets). */
  readonly params: Float32Array;
  /** Values of non-trainable parameters (the fixed sin-cos `mim_head.decoder_pos_embed`), stored so the file is a complete state dict. */
  readonly fixedParams?: ReadonlyMap<string, Float32Array>;
  readonly optimizer?: OptimizerState;
  /** The model configuration, stored as JSON under `config`. */
  readonly config?: unknown;
  /** Free fields for the trainer (sampler position, data-manifest hash, run id, …). Reserved keys are refused. */
  readonly metadata?: Readonly<Record<string, string>>;
}

export class CheckpointError extends Error {
  override readonly name = 'CheckpointError';
}

export const CHECKPOINT_FORMAT = 'm3ae-checkpoint';
export const CHECKPOINT_FORMAT_VERSION = '1';
const OPT_M = 'optimizer.m.';
const OPT_V = 'optimizer.v.';
/** Metadata keys written by this module; a trainer's own fields may not reuse them. */
export const RESERVED_METADATA_KEYS = ['format', 'format_version', 'step', 'manifest_hash', 'params_sha256', 'param_count', 'fixed_params', 'config', 'optimizer_step'] as const;

/** SHA-256 (hex) of the trainable parameters' float32 bytes in canonical order, i.e. of the flat buffer. */
export function paramsSha256(params: Float32Array): string {
  return createHash('sha256').update(new Uint8Array(params.buffer, params.byteOffset, params.byteLength)).digest('hex');
}

function checkStep(step: number, field: string): void {
  if (!Number.isSafeInteger(step) || step < 0) throw new CheckpointError(`${field}: got ${step}; expected a non-negative integer`);
}

function checkLength(arr: Float32Array, want: number, field: string): void {
  if (arr.length !== want) throw new CheckpointError(`${field}: got ${arr.length} values; expected ${want} (manifest size)`);
}

/**
 * Tensors of a checkpoint in file order: every parameter under its model name (F32, our layout), then AdamW's
 * `optimizer.m.<name>` and `optimizer.v.<name>` for every trainable parameter. Views of the flat buffers: no copy.
 */
function checkpointTensors(state: CheckpointState): [string, TensorInput][] {
  const { manifest, params, optimizer } = state;
  checkStep(state.step, 'step');
  checkLength(params, manifest.size, 'params');
  if (optimizer) {
    checkStep(optimizer.step, 'optimizer.step');
    checkLength(optimizer.m, manifest.size, 'optimizer.m');
    checkLength(optimizer.v, manifest.size, 'optimizer.v');
  }
  const out: [string, TensorInput][] = [];
  const slice = (flat: Float32Array, e: CheckpointManifest['entries'][number]): Float32Array =>
    flat.subarray(e.offset ?? 0, (e.offset ?? 0) + sizeOf(e.shape));
  for (const e of manifest.entries) {
    if (e.trainable) {
      out.push([e.name, { dtype: 'F32', shape: e.shape, data: slice(params, e) }]);
    } else {
      const fixed = state.fixedParams?.get(e.name);
      if (!fixed) throw new CheckpointError(`fixedParams.${e.name}: missing; expected the values of this non-trainable parameter`);
      if (fixed.length !== sizeOf(e.shape)) throw new CheckpointError(`fixedParams.${e.name}: got ${fixed.length} values; expected ${sizeOf(e.shape)}`);
      out.push([e.name, { dtype: 'F32', shape: e.shape, data: fixed }]);
    }
  }
  if (optimizer) {
    for (const prefix of [OPT_M, OPT_V]) {
      const flat = prefix === OPT_M ? optimizer.m : optimizer.v;
      for (const e of manifest.entries) if (e.trainable) out.push([prefix + e.name, { dtype: 'F32', shape: e.shape, data: slice(flat, e) }]);
    }
  }
  return out;
}

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Writes one checkpoint file atomically (temp file, fsync, rename, directory fsync). Returns its params hash. */
export async function writeCheckpoint(path: string, state: CheckpointState): Promise<{ path: string; bytes: number; paramsSha256: string }> {
  const extra = state.metadata ?? {};
  for (const k of RESERVED_METADATA_KEYS) {
    if (k in extra) throw new CheckpointError(`metadata.${k}: reserved for the checkpoint itself; use another key`);
  }
  const tensors = checkpointTensors(state);
  const sha = paramsSha256(state.params);
  const metadata: Record<string, string> = {
    ...extra,
    format: CHECKPOINT_FORMAT,
    format_version: CHECKPOINT_FORMAT_VERSION,
    step: String(state.step),
    manifest_hash: state.manifest.hash,
    params_sha256: sha,
    param_count: String(state.manifest.size),
    // Names of the non-trainable tensors, so a reader without the manifest knows which ones params_sha256 skips.
    fixed_params: JSON.stringify(state.manifest.entries.filter((e) => !e.trainable).map((e) => e.name)),
  };
  if (state.config !== undefined) metadata['config'] = JSON.stringify(state.config);
  if (state.optimizer) metadata['optimizer_step'] = String(state.optimizer.step);
  const { bytes } = await writeSafetensors(path, tensors, { metadata });
  return { path, bytes, paramsSha256: sha };
}

/** What a checkpoint's header says, without reading tensor data. */
export interface CheckpointInfo {
  readonly path: string;
  readonly step: number;
  readonly manifestHash: string;
  readonly paramsSha256: string;
  readonly paramCount: number;
  /** The stored configuration (parsed JSON), if any. */
  readonly config: unknown;
  readonly optimizerStep: number | null;
  /** Non-trainable parameters (stored, but not covered by params_sha256). */
  readonly fixedParams: readonly string[];
  readonly tensorCount: number;
  readonly fileBytes: number;
  /** Every metadata field, including the trainer's own. */
  readonly metadata: Readonly<Record<string, string>>;
}

function intField(meta: Readonly<Record<string, string>>, key: string, path: string): number {
  const raw = meta[key];
  const v = raw === undefined ? NaN : Number(raw);
  if (!Number.isSafeInteger(v) || v < 0) throw new CheckpointError(`${path}: metadata ${key} is ${JSON.stringify(raw)}; expected a non-negative integer`);
  return v;
}

function infoOf(file: SafetensorsFile, fileBytes: number): CheckpointInfo {
  const meta = file.metadata;
  const path = file.path;
  if (meta['format'] !== CHECKPOINT_FORMAT) {
    throw new CheckpointError(`${path}: metadata format is ${JSON.stringify(meta['format'])}; expected "${CHECKPOINT_FORMAT}" (not an M3AE checkpoint)`);
  }
  if (meta['format_version'] !== CHECKPOINT_FORMAT_VERSION) {
    throw new CheckpointError(`${path}: metadata format_version is ${JSON.stringify(meta['format_version'])}; expected "${CHECKPOINT_FORMAT_VERSION}"`);
  }
  let config: unknown = null;
  if (meta['config'] !== undefined) {
    try {
      config = JSON.parse(meta['config']);
    } catch {
      throw new CheckpointError(`${path}: metadata config is not valid JSON`);
    }
  }
  let fixedParams: string[] = [];
  try {
    const parsed: unknown = JSON.parse(meta['fixed_params'] ?? '[]');
    if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) throw new Error();
    fixedParams = parsed as string[];
  } catch {
    throw new CheckpointError(`${path}: metadata fixed_params is ${JSON.stringify(meta['fixed_params'])}; expected a JSON array of names`);
  }
  const sha = meta['params_sha256'] ?? '';
  if (!/^[0-9a-f]{64}$/.test(sha)) throw new CheckpointError(`${path}: metadata params_sha256 is ${JSON.stringify(sha)}; expected 64 hex digits`);
  return {
    path,
    step: intField(meta, 'step', path),
    manifestHash: meta['manifest_hash'] ?? '',
    paramsSha256: sha,
    paramCount: intField(meta, 'param_count', path),
    config,
    optimizerStep: meta['optimizer_step'] === undefined ? null : intField(meta, 'optimizer_step', path),
    fixedParams,
    tensorCount: file.header.tensors.length,
    fileBytes,
    metadata: meta,
  };
}

/** Reads and checks a checkpoint's header (cheap: no tensor data). */
export async function readCheckpointInfo(path: string): Promise<CheckpointInfo> {
  const file = await SafetensorsFile.open(path);
  try {
    return infoOf(file, (await stat(path)).size);
  } finally {
    await file.close();
  }
}

export interface LoadedCheckpoint {
  readonly info: CheckpointInfo;
  readonly step: number;
  readonly params: Float32Array;
  readonly fixedParams: ReadonlyMap<string, Float32Array>;
  readonly optimizer: OptimizerState | null;
  readonly config: unknown;
  readonly metadata: Readonly<Record<string, string>>;
}

export interface LoadOptions {
  /** Recompute the parameters' SHA-256 and compare with the stored one. @defaultValue true */
  readonly verifyHash?: boolean;
}

/**
 * Loads a checkpoint for the given manifest: the stored manifest hash must match, every parameter (and optimizer
 * slot, when present) must be there with the manifest's shape as F32, and the parameters' SHA-256 must match the
 * stored one. Each tensor is read straight into the flat buffers.
 */
export async function loadCheckpoint(path: string, manifest: CheckpointManifest, options: LoadOptions = {}): Promise<LoadedCheckpoint> {
  const file = await SafetensorsFile.open(path);
  try {
    const info = infoOf(file, (await stat(path)).size);
    if (info.manifestHash !== manifest.hash) {
      throw new CheckpointError(
        `${path}: written for parameter manifest ${info.manifestHash}, but this model's manifest is ${manifest.hash} (a different configuration?)`,
      );
    }
    if (info.paramCount !== manifest.size) throw new CheckpointError(`${path}: param_count is ${info.paramCount}; expected ${manifest.size}`);
    const expect = (name: string, shape: readonly number[]): TensorInfo => {
      if (!file.has(name)) throw new CheckpointError(`${path}: tensor ${name} is missing`);
      const t = file.info(name);
      if (t.dtype !== 'F32') throw new CheckpointError(`${path}: tensor ${name} has dtype ${t.dtype}; expected F32`);
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw new CheckpointError(`${path}: tensor ${name} has shape [${t.shape.join(', ')}]; expected [${shape.join(', ')}]`);
      }
      return t;
    };
    const readInto = async (name: string, shape: readonly number[], flat: Float32Array, offset: number): Promise<void> => {
      expect(name, shape);
      const target = flat.subarray(offset, offset + sizeOf(shape));
      await file.readBytesInto(name, new Uint8Array(target.buffer, target.byteOffset, target.byteLength));
    };
    const params = new Float32Array(manifest.size);
    const fixedParams = new Map<string, Float32Array>();
    for (const e of manifest.entries) {
      if (e.trainable) {
        await readInto(e.name, e.shape, params, e.offset ?? 0);
      } else {
        const values = new Float32Array(sizeOf(e.shape));
        await readInto(e.name, e.shape, values, 0);
        fixedParams.set(e.name, values);
      }
    }
    if ((options.verifyHash ?? true) && paramsSha256(params) !== info.paramsSha256) {
      throw new CheckpointError(`${path}: the parameters' SHA-256 is ${paramsSha256(params)} but the file records ${info.paramsSha256} (corrupt file)`);
    }
    let optimizer: OptimizerState | null = null;
    if (info.optimizerStep !== null) {
      const m = new Float32Array(manifest.size);
      const v = new Float32Array(manifest.size);
      for (const e of manifest.entries) {
        if (!e.trainable) continue;
        await readInto(OPT_M + e.name, e.shape, m, e.offset ?? 0);
        await readInto(OPT_V + e.name, e.shape, v, e.offset ?? 0);
      }
      optimizer = { step: info.optimizerStep, m, v };
    }
    const known = new Set(manifest.entries.map((e) => e.name));
    const unknown = file.names().filter((n) => !known.has(n) && !n.startsWith(OPT_M) && !n.startsWith(OPT_V));
    if (unknown.length > 0) throw new CheckpointError(`${path}: tensors not in the manifest: ${unknown.slice(0, 10).join(', ')}${unknown.length > 10 ? ', …' : ''}`);
    return { info, step: info.step, params, fixedParams, optimizer, config: info.config, metadata: info.metadata };
  } catch (e) {
    if (e instanceof SafetensorsError) throw new CheckpointError(e.message);
    throw e;
  } finally {
    await file.close();
  }
}
