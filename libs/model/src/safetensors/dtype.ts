/**
 * The safetensors element types we read and write, with their sizes in bytes. F16 and BF16 are held as their
 * raw 16-bit patterns (tfjs has no float16) and converted to float32 where a caller asks for it. The 8-bit
 * float types of newer files are not accepted: nothing in this project produces or needs them.
 */
export const SAFETENSORS_DTYPES = ['BOOL', 'U8', 'I8', 'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'F64', 'I64', 'U64'] as const;
export type SafetensorsDtype = (typeof SAFETENSORS_DTYPES)[number];

export const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
};

/** The typed array that holds each dtype's elements (F16/BF16: raw bit patterns; BOOL: 0/1 bytes). */
export interface DtypeArrays {
  BOOL: Uint8Array;
  U8: Uint8Array;
  I8: Int8Array;
  I16: Int16Array;
  U16: Uint16Array;
  F16: Uint16Array;
  BF16: Uint16Array;
  I32: Int32Array;
  U32: Uint32Array;
  F32: Float32Array;
  F64: Float64Array;
  I64: BigInt64Array;
  U64: BigUint64Array;
}

export type TensorData = DtypeArrays[SafetensorsDtype];

type ArrayCtor = { new (buffer: ArrayBuffer, byteOffset: number, length: number): TensorData; readonly BYTES_PER_ELEMENT: number };

const CTORS: Readonly<Record<SafetensorsDtype, ArrayCtor>> = {
  BOOL: Uint8Array,
  U8: Uint8Array,
  I8: Int8Array,
  I16: Int16Array,
  U16: Uint16Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I32: Int32Array,
  U32: Uint32Array,
  F32: Float32Array,
  F64: Float64Array,
  I64: BigInt64Array,
  U64: BigUint64Array,
};

export function isSafetensorsDtype(value: unknown): value is SafetensorsDtype {
  return typeof value === 'string' && (SAFETENSORS_DTYPES as readonly string[]).includes(value);
}

/** A view of `bytes` (whose byteOffset must be aligned to the element size) as the dtype's typed array. */
export function viewAs<D extends SafetensorsDtype>(dtype: D, bytes: Uint8Array): DtypeArrays[D] {
  const ctor = CTORS[dtype];
  return new ctor(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength / ctor.BYTES_PER_ELEMENT) as DtypeArrays[D];
}

/** True when `data` is the typed array class that holds `dtype` (a Uint8Array always means raw bytes). */
export function matchesDtype(dtype: SafetensorsDtype, data: ArrayBufferView): boolean {
  return data instanceof CTORS[dtype];
}

/** Number of elements of a shape, exactly (BigInt: a hostile shape must not overflow into a plausible size). */
export function elementCount(shape: readonly number[]): bigint {
  let n = 1n;
  for (const d of shape) n *= BigInt(d);
  return n;
}
