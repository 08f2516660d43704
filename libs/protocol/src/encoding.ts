import { createHash } from 'node:crypto';
import { endianness } from 'node:os';
import { crc32 } from 'node:zlib';
import { ProtocolError } from './errors.js';

/**
 * How a Float32Array travels: `f32` (the exact little-endian bytes), `bf16` (the upper 16 bits after
 * round-to-nearest-even: half the bytes, deterministic, the same dynamic range) or `fx53` (exact fixed point:
 * each value an integer number of quanta of 2^-{@link FIXED_FRACTION_BITS}, at most 2^53 − 1 in magnitude, stored
 * as a little-endian float64 — integer sums of such values are exact, so any grouping of a step's contributions
 * gives the same bits). Parameters always travel as f32; gradients may use any of them.
 */
export type TensorEncoding = 'f32' | 'bf16' | 'fx53';
export const TENSOR_ENCODINGS = ['f32', 'bf16', 'fx53'] as const;

/**
 * The run-wide quantum of `fx53` gradients is 2^-FIXED_FRACTION_BITS (9.1e-13). Known to every worker before it sums
 * its micro-batches; a protocol constant, so coordinator and workers cannot disagree on it. The representable range
 * of a value and of every partial sum is ±(2^53 − 1) quanta, i.e. |x| < 2^(53 − 40) = 8192.
 */
export const FIXED_FRACTION_BITS = 40;
const FIXED_SCALE = 2 ** FIXED_FRACTION_BITS;
const FIXED_UNIT = 2 ** -FIXED_FRACTION_BITS;
/** The largest |value| an `fx53` element or partial sum may reach: (2^53 − 1) quanta. */
export const FIXED_MAX_ABS = Number.MAX_SAFE_INTEGER * FIXED_UNIT;

/** A value or a sum that does not fit the fixed-point range (or is not finite): the sum is refused, never wrapped. */
export class FixedPointError extends ProtocolError {
  override readonly name = 'FixedPointError';
}

function fixedRangeError(what: string, element: number, value: number): FixedPointError {
  return new FixedPointError(
    `fx53 ${what} at element ${element} is ${value}; expected a finite value with |value| ≤ ${FIXED_MAX_ABS} ((2^53 − 1) quanta of 2^-${FIXED_FRACTION_BITS})`,
  );
}

/**
 * acc[i] += round(values[i] · 2^40), exactly (acc holds integer quanta). Throws {@link FixedPointError} naming the
 * element and the value when a value is not finite, or when it or the running sum leaves ±(2^53 − 1) quanta — before
 * anything is wrong: up to that bound every integer sum in float64 is exact. On a throw, `acc` is partly updated.
 */
export function quantizeInto(acc: Float64Array, values: Float32Array): void {
  if (acc.length !== values.length) throw new ProtocolError(`quantizeInto: accumulator of ${acc.length} values for ${values.length} values`);
  for (let i = 0; i < acc.length; i++) {
    const v = values[i] as number;
    // v · 2^40 is exact in float64 (a power-of-two scaling of an f32); Math.round rounds half up, the same everywhere.
    const q = Math.round(v * FIXED_SCALE);
    if (!(Math.abs(q) <= Number.MAX_SAFE_INTEGER)) throw fixedRangeError('gradient value', i, v);
    const s = (acc[i] as number) + q;
    if (!(Math.abs(s) <= Number.MAX_SAFE_INTEGER)) throw fixedRangeError('running sum', i, ((acc[i] as number) + q) * FIXED_UNIT);
    acc[i] = s;
  }
}

/**
 * acc[i] += the fx53 integers in `bytes`, exactly; the checks of {@link quantizeInto}, plus integrality of each value.
 * All or nothing: on a throw `acc` is as it was (the additions already made are undone, exactly).
 */
export function addFixedInto(acc: Float64Array, bytes: Uint8Array): void {
  checkLength(bytes, 'fx53', acc.length);
  const g = f64View(bytes);
  for (let i = 0; i < acc.length; i++) {
    const q = g[i] as number;
    const s = (acc[i] as number) + q;
    // One test on the fast path (NaN fails every comparison): an integer value, within range, and a sum within range.
    if (!(Math.abs(s) <= Number.MAX_SAFE_INTEGER && Math.abs(q) <= Number.MAX_SAFE_INTEGER && Math.floor(q) === q)) {
      for (let j = 0; j < i; j++) acc[j] = (acc[j] as number) - (g[j] as number);
      if (!Number.isSafeInteger(q)) throw new FixedPointError(`fx53 contribution at element ${i} holds ${q}; expected an integer number of quanta within ±(2^53 − 1)`);
      throw fixedRangeError('running sum', i, s * FIXED_UNIT);
    }
    acc[i] = s;
  }
}

/** The one conversion of an exact fixed-point sum to f32: out[i] = fround(acc[i] · 2^-40) (one rounding). */
export function fixedToF32(acc: Float64Array, out: Float32Array = new Float32Array(acc.length)): Float32Array {
  if (out.length !== acc.length) throw new ProtocolError(`fixedToF32: output length ${out.length}; expected ${acc.length}`);
  for (let i = 0; i < acc.length; i++) out[i] = (acc[i] as number) * FIXED_UNIT;
  return out;
}

/** The wire bytes of a fixed-point accumulator (a view, no copy). */
export function fixedBytes(acc: Float64Array): Uint8Array {
  return new Uint8Array(acc.buffer, acc.byteOffset, acc.byteLength);
}

/** Checksum algorithms: crc32 (≈2 GB/s here, catches corruption) or sha256 (≈1 GB/s). */
export type ChecksumAlgorithm = 'crc32' | 'sha256';
export const CHECKSUM_ALGORITHMS = ['crc32', 'sha256'] as const;

// The wire format is little-endian; typed-array views are only valid as such on a little-endian host.
if (endianness() !== 'LE') throw new ProtocolError('m3ae blobs are little-endian; this host is big-endian');

export function bytesPerElement(encoding: TensorEncoding): number {
  return encoding === 'f32' ? 4 : encoding === 'bf16' ? 2 : 8;
}

/** f32 bytes of `values`, without copying. */
export function f32Bytes(values: Float32Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

/** bfloat16 by round-to-nearest-even on the bit pattern (NaN stays a quiet NaN with its sign). */
export function toBf16(values: Float32Array, out = new Uint16Array(values.length)): Uint16Array {
  if (out.length !== values.length) throw new ProtocolError(`toBf16: output length ${out.length}; expected ${values.length}`);
  const u32 = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < u32.length; i++) {
    const u = u32[i] as number;
    // No overflow past 2^32: the largest non-NaN pattern is -Inf (0xff800000), and NaNs take the other branch.
    out[i] = (u & 0x7fffffff) > 0x7f800000 ? (u >>> 16) | 0x0040 : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** Encodes for the wire. For f32 this is a view of `values` (no copy). */
export function encodeTensor(values: Float32Array, encoding: TensorEncoding): Uint8Array {
  if (encoding === 'f32') return f32Bytes(values);
  if (encoding === 'fx53') {
    const acc = new Float64Array(values.length);
    quantizeInto(acc, values);
    return fixedBytes(acc);
  }
  const h = toBf16(values);
  return new Uint8Array(h.buffer, h.byteOffset, h.byteLength);
}

function checkLength(bytes: Uint8Array, encoding: TensorEncoding, elements: number): void {
  if (bytes.byteLength !== elements * bytesPerElement(encoding)) {
    throw new ProtocolError(`${encoding} tensor of ${elements} elements needs ${elements * bytesPerElement(encoding)} bytes; got ${bytes.byteLength}`);
  }
}

/** Views `bytes` as Float32Array when aligned, else copies (f32 only). */
function f32View(bytes: Uint8Array): Float32Array {
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  return new Float32Array(bytes.slice().buffer);
}

function f64View(bytes: Uint8Array): Float64Array {
  if (bytes.byteOffset % 8 === 0) return new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8);
  return new Float64Array(bytes.slice().buffer);
}

function u16View(bytes: Uint8Array): Uint16Array {
  if (bytes.byteOffset % 2 === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  return new Uint16Array(bytes.slice().buffer);
}

/** Decodes wire bytes into a Float32Array (a view for aligned f32 bytes). */
export function decodeTensor(bytes: Uint8Array, encoding: TensorEncoding, elements: number): Float32Array {
  checkLength(bytes, encoding, elements);
  if (encoding === 'f32') return f32View(bytes);
  if (encoding === 'fx53') return fixedToF32(f64View(bytes));
  const h = u16View(bytes);
  const out = new Float32Array(elements);
  const u32 = new Uint32Array(out.buffer);
  for (let i = 0; i < elements; i++) u32[i] = (h[i] as number) << 16;
  return out;
}

/**
 * acc[i] += decoded[i] without materialising the decoded tensor. Summing contributions one after another
 * in a fixed order with this is what makes the reduction bitwise reproducible.
 */
export function addEncodedInto(acc: Float32Array, bytes: Uint8Array, encoding: TensorEncoding): void {
  if (encoding === 'fx53') throw new ProtocolError('fx53 contributions are summed exactly with addFixedInto, not into an f32 accumulator');
  checkLength(bytes, encoding, acc.length);
  if (encoding === 'f32') {
    const g = f32View(bytes);
    for (let i = 0; i < acc.length; i++) acc[i] = (acc[i] as number) + (g[i] as number);
    return;
  }
  const h = u16View(bytes);
  // Decode in blocks into a small f32 scratch: bf16 → f32 is a 16-bit shift of the pattern.
  const block = new Float32Array(Math.min(65536, acc.length));
  const bu = new Uint32Array(block.buffer);
  for (let start = 0; start < acc.length; start += block.length) {
    const n = Math.min(block.length, acc.length - start);
    for (let j = 0; j < n; j++) bu[j] = (h[start + j] as number) << 16;
    for (let j = 0; j < n; j++) acc[start + j] = (acc[start + j] as number) + (block[j] as number);
  }
}

/** The number of NaN or ±Inf values in encoded bytes (checked on the bit patterns, no decoding). */
export function countNonFinite(bytes: Uint8Array, encoding: TensorEncoding): number {
  let bad = 0;
  if (encoding === 'f32') {
    const u = bytes.byteOffset % 4 === 0 ? new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2) : new Uint32Array(bytes.slice().buffer);
    for (let i = 0; i < u.length; i++) if (((u[i] as number) & 0x7f800000) === 0x7f800000) bad++;
  } else if (encoding === 'fx53') {
    const g = f64View(bytes);
    for (let i = 0; i < g.length; i++) if (!Number.isFinite(g[i])) bad++;
  } else {
    const h = u16View(bytes);
    for (let i = 0; i < h.length; i++) if (((h[i] as number) & 0x7f80) === 0x7f80) bad++;
  }
  return bad;
}

/** An incremental checksum over the chunks of a blob; the result reads `crc32:0123abcd` or `sha256:<64 hex>`. */
export class Checksum {
  private crc = 0;
  private readonly sha;
  constructor(readonly algorithm: ChecksumAlgorithm) {
    this.sha = algorithm === 'sha256' ? createHash('sha256') : undefined;
  }
  update(bytes: Uint8Array): this {
    if (this.sha) this.sha.update(bytes);
    else this.crc = crc32(bytes, this.crc);
    return this;
  }
  digest(): string {
    return this.sha ? `sha256:${this.sha.digest('hex')}` : `crc32:${(this.crc >>> 0).toString(16).padStart(8, '0')}`;
  }
}

export function checksumOf(algorithm: ChecksumAlgorithm, ...parts: Uint8Array[]): string {
  const c = new Checksum(algorithm);
  for (const p of parts) c.update(p);
  return c.digest();
}

/** The algorithm a checksum string was made with. */
export function checksumAlgorithm(checksum: string): ChecksumAlgorithm {
  const alg = checksum.slice(0, checksum.indexOf(':'));
  if (alg === 'crc32' || alg === 'sha256') return alg;
  throw new ProtocolError(`checksum ${JSON.stringify(checksum.slice(0, 20))} has an unknown algorithm; expected crc32:… or sha256:…`);
}

/** SHA-256 (hex) of a Float32Array's bytes in order: the `params_sha256` of checkpoints and tests. */
export function sha256OfFloats(values: Float32Array): string {
  return createHash('sha256').update(f32Bytes(values)).digest('hex');
}
