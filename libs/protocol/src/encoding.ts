import { createHash } from 'node:crypto';
import { endianness } from 'node:os';
import { crc32 } from 'node:zlib';
import { ProtocolError } from './errors.js';

/**
 * How a Float32Array travels: `f32` (the exact little-endian bytes) or `bf16` (the upper 16 bits after
 * round-to-nearest-even: half the bytes, deterministic, the same dynamic range). Parameters always travel
 * as f32; gradients may use either.
 */
export type TensorEncoding = 'f32' | 'bf16';
export const TENSOR_ENCODINGS = ['f32', 'bf16'] as const;

/** Checksum algorithms: crc32 (≈2 GB/s here, catches corruption) or sha256 (≈1 GB/s). */
export type ChecksumAlgorithm = 'crc32' | 'sha256';
export const CHECKSUM_ALGORITHMS = ['crc32', 'sha256'] as const;

// The wire format is little-endian; typed-array views are only valid as such on a little-endian host.
if (endianness() !== 'LE') throw new ProtocolError('m3ae blobs are little-endian; this host is big-endian');

export function bytesPerElement(encoding: TensorEncoding): number {
  return encoding === 'f32' ? 4 : 2;
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

function u16View(bytes: Uint8Array): Uint16Array {
  if (bytes.byteOffset % 2 === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  return new Uint16Array(bytes.slice().buffer);
}

/** Decodes wire bytes into a Float32Array (a view for aligned f32 bytes). */
export function decodeTensor(bytes: Uint8Array, encoding: TensorEncoding, elements: number): Float32Array {
  checkLength(bytes, encoding, elements);
  if (encoding === 'f32') return f32View(bytes);
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
