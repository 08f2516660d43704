import { SafetensorsError } from './errors.js';
import type { SafetensorsDtype, TensorData } from './dtype.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half (binary16) bit pattern → float32 value, exactly (every half is representable). */
export function float16BitsToFloat32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** float32 value → IEEE half bit pattern, rounding to nearest even (overflow → ±Infinity), like numpy/PyTorch. */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0] as number;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal: ±0
    const m = mant | 0x800000; // implicit leading one
    const shift = 14 - e;
    let half = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rest > mid || (rest === mid && (half & 1) === 1)) half += 1;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1)) half += 1; // may carry into the exponent: correct
  return sign | half;
}

/** bfloat16 bit pattern → float32 (the upper half of a float32). */
export function bfloat16BitsToFloat32(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0] as number;
}

/** float32 → bfloat16 bit pattern, rounding to nearest even (NaN stays a quiet NaN), like PyTorch. */
export function float32ToBfloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0] as number;
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff;
  const rounded = x + 0x7fff + ((x >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/** Any floating (or integer) tensor's elements as float32; F32 data is returned as is, not copied. */
export function toFloat32(dtype: SafetensorsDtype, data: TensorData, name: string): Float32Array {
  if (data instanceof Float32Array) return data;
  const out = new Float32Array(data.length);
  switch (dtype) {
    case 'F16': {
      const src = data as Uint16Array;
      for (let i = 0; i < src.length; i++) out[i] = float16BitsToFloat32(src[i] as number);
      return out;
    }
    case 'BF16': {
      const src = data as Uint16Array;
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < src.length; i++) bits[i] = (src[i] as number) << 16;
      return out;
    }
    case 'I64':
    case 'U64': {
      const src = data as BigInt64Array | BigUint64Array;
      for (let i = 0; i < src.length; i++) out[i] = Number(src[i]);
      return out;
    }
    case 'BOOL':
    case 'U8':
    case 'I8':
    case 'I16':
    case 'U16':
    case 'I32':
    case 'U32':
    case 'F64':
      out.set(data as Exclude<TensorData, BigInt64Array | BigUint64Array>);
      return out;
    case 'F32':
      throw new SafetensorsError(`tensor ${name}: F32 data is not a Float32Array`);
  }
}

/**
 * Any integer tensor's elements as int32, checked: a value outside the int32 range is an error naming the tensor,
 * the element and the value (token ids and labels are small; a huge one means a broken file, not something to wrap).
 */
export function toInt32(dtype: SafetensorsDtype, data: TensorData, name: string): Int32Array {
  if (dtype === 'I32') return data as Int32Array;
  const out = new Int32Array(data.length);
  switch (dtype) {
    case 'I64': {
      // Little-endian halves: the value fits int32 iff the high word is the sign extension of the low word.
      const src = data as BigInt64Array;
      const halves = new Int32Array(src.buffer, src.byteOffset, src.length * 2);
      for (let i = 0; i < src.length; i++) {
        const lo = halves[2 * i] as number;
        if ((halves[2 * i + 1] as number) !== lo >> 31) throw outOfRange(name, i, String(src[i]));
        out[i] = lo;
      }
      return out;
    }
    case 'U64': {
      const src = data as BigUint64Array;
      for (let i = 0; i < src.length; i++) {
        const v = src[i] as bigint;
        if (v > 0x7fffffffn) throw outOfRange(name, i, String(v));
        out[i] = Number(v);
      }
      return out;
    }
    case 'U32': {
      const src = data as Uint32Array;
      for (let i = 0; i < src.length; i++) {
        const v = src[i] as number;
        if (v > 0x7fffffff) throw outOfRange(name, i, String(v));
        out[i] = v;
      }
      return out;
    }
    case 'BOOL':
    case 'U8':
    case 'I8':
    case 'I16':
    case 'U16':
      out.set(data as Uint8Array | Int8Array | Int16Array | Uint16Array);
      return out;
    case 'F16':
    case 'BF16':
    case 'F32':
    case 'F64':
      throw new SafetensorsError(`tensor ${name}: dtype ${dtype} where an integer dtype (I64, I32, I16, I8, U8, BOOL, …) was expected`);
  }
}

function outOfRange(name: string, index: number, value: string): SafetensorsError {
  return new SafetensorsError(`tensor ${name}: element ${index} is ${value}, outside the int32 range [-2147483648, 2147483647]`);
}
