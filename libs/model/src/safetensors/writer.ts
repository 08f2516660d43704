import { writeFileAtomic } from '@m3ae/protocol';
import { DTYPE_BYTES, elementCount, isSafetensorsDtype, matchesDtype, SAFETENSORS_DTYPES, type SafetensorsDtype } from './dtype.js';
import { SafetensorsError } from './errors.js';
import { METADATA_KEY } from './header.js';
import { assertLittleEndian } from './reader.js';

export interface TensorInput {
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** The dtype's typed array (F16/BF16: Uint16Array of bit patterns), or a Uint8Array of the raw LE bytes. */
  readonly data: ArrayBufferView;
}

export type TensorEntries = ReadonlyMap<string, TensorInput> | Iterable<readonly [string, TensorInput]>;

export interface WriteOptions {
  /** Free string → string map stored as `__metadata__`. */
  readonly metadata?: Readonly<Record<string, string>>;
}

interface Planned {
  readonly name: string;
  readonly bytes: Uint8Array;
}

export interface EncodedHeader {
  /** The 8-byte length prefix followed by the space-padded JSON header. */
  readonly prefix: Uint8Array;
  readonly tensors: readonly Planned[];
  readonly totalBytes: number;
}

/**
 * Lays tensors out in the order given (offsets contiguous from 0) and encodes the header. The JSON is padded
 * with spaces to a multiple of 8 bytes, as the reference writer does, so the data section starts aligned.
 */
export function encodeHeader(entries: TensorEntries, options: WriteOptions = {}): EncodedHeader {
  const header: Record<string, unknown> = {};
  if (options.metadata && Object.keys(options.metadata).length > 0) {
    for (const [k, v] of Object.entries(options.metadata)) {
      if (typeof v !== 'string') throw new SafetensorsError(`metadata ${k}: value must be a string, found ${typeof v}`);
    }
    header[METADATA_KEY] = { ...options.metadata };
  }
  const tensors: Planned[] = [];
  let offset = 0;
  for (const [name, t] of entries) {
    if (name === METADATA_KEY || name.length === 0) throw new SafetensorsError(`tensor name ${JSON.stringify(name)} is reserved or empty`);
    if (Object.prototype.hasOwnProperty.call(header, name)) throw new SafetensorsError(`tensor ${name}: given twice; names must be unique`);
    if (!isSafetensorsDtype(t.dtype)) throw new SafetensorsError(`tensor ${name}: dtype ${String(t.dtype)} is not one of ${SAFETENSORS_DTYPES.join(', ')}`);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(`tensor ${name}: shape [${t.shape.join(', ')}] must be non-negative integers`);
    }
    if (!(t.data instanceof Uint8Array) && !matchesDtype(t.dtype, t.data)) {
      throw new SafetensorsError(`tensor ${name}: data is a ${t.data.constructor.name}, which does not hold ${t.dtype} (pass the matching typed array or raw bytes as a Uint8Array)`);
    }
    const need = Number(elementCount(t.shape)) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== need) {
      throw new SafetensorsError(`tensor ${name}: data has ${t.data.byteLength} bytes but shape [${t.shape.join(', ')}] of ${t.dtype} needs ${need}`);
    }
    header[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + need] };
    tensors.push({ name, bytes: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) });
    offset += need;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const prefix = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(padded), true);
  prefix.set(json, 8);
  return { prefix, tensors, totalBytes: prefix.byteLength + offset };
}

/** The whole file image in memory (small files, tests, network blobs). */
export function encodeSafetensors(entries: TensorEntries, options: WriteOptions = {}): Uint8Array {
  assertLittleEndian();
  const h = encodeHeader(entries, options);
  const out = new Uint8Array(h.totalBytes);
  out.set(h.prefix, 0);
  let at = h.prefix.byteLength;
  for (const t of h.tensors) {
    out.set(t.bytes, at);
    at += t.bytes.byteLength;
  }
  return out;
}

export interface WriteResult {
  readonly path: string;
  readonly bytes: number;
}

/**
 * Writes a safetensors file atomically: a temporary file in the same directory, fsync, rename over the target,
 * fsync of the directory. A crash leaves either the old file or the new one, never a torn one. Tensors are
 * written one by one from their own buffers (no copy of the whole file in memory).
 */
export async function writeSafetensors(path: string, entries: TensorEntries, options: WriteOptions = {}): Promise<WriteResult> {
  assertLittleEndian();
  const h = encodeHeader(entries, options);
  await writeFileAtomic(path, [h.prefix, ...h.tensors.map((t) => t.bytes)]);
  return { path, bytes: h.totalBytes };
}
