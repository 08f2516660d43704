import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  SafetensorsError,
  SafetensorsFile,
  bfloat16BitsToFloat32,
  decodeSafetensors,
  encodeSafetensors,
  float16BitsToFloat32,
  float32ToBfloat16Bits,
  float32ToFloat16Bits,
  readSafetensors,
  toInt32,
  writeSafetensors,
  type TensorInput,
} from './index.js';

/** A file image built by hand from the format description: u64 LE length, JSON, raw LE data. */
function handMade(header: string, data: Uint8Array, declaredLength?: bigint): Uint8Array {
  const json = Buffer.from(header, 'utf8');
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, declaredLength ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function le(values: number[], bytesEach: 1 | 2 | 4, signed = true): Uint8Array {
  const b = Buffer.alloc(values.length * bytesEach);
  values.forEach((v, i) => {
    if (bytesEach === 1) b.writeUInt8(v & 0xff, i);
    else if (bytesEach === 2) b.writeUInt16LE(v & 0xffff, i * 2);
    else if (signed) b.writeInt32LE(v, i * 4);
    else b.writeUInt32LE(v, i * 4);
  });
  return new Uint8Array(b);
}

function err(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SafetensorsError);
    return (e as Error).message;
  }
  throw new Error('expected a SafetensorsError');
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'm3ae-st-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('reading bytes laid out by the specification', () => {
  // I32 [2,2] = 1,2,3,-4 ; F16 [3] = 1, -2, 65504 ; BF16 [2] = 1, -0.5 ; I64 [2] = 7, -1 ; U8 [3] ; F64 [1] ; BOOL [2]
  const f64 = Buffer.alloc(8);
  f64.writeDoubleLE(Math.PI);
  const i64 = Buffer.alloc(16);
  i64.writeBigInt64LE(7n, 0);
  i64.writeBigInt64LE(-1n, 8);
  const parts = [le([1, 2, 3, -4], 4), le([0x3c00, 0xc000, 0x7bff], 2), le([0x3f80, 0xbf00], 2), new Uint8Array(i64), le([0, 128, 255], 1), new Uint8Array(f64), le([1, 0], 1)];
  const data = new Uint8Array(Buffer.concat(parts));
  const header = JSON.stringify({
    __metadata__: { format: 'pt', note: 'hand made' },
    a: { dtype: 'I32', shape: [2, 2], data_offsets: [0, 16] },
    h: { dtype: 'F16', shape: [3], data_offsets: [16, 22] },
    b: { dtype: 'BF16', shape: [2], data_offsets: [22, 26] },
    l: { dtype: 'I64', shape: [2], data_offsets: [26, 42] },
    u: { dtype: 'U8', shape: [3], data_offsets: [42, 45] },
    d: { dtype: 'F64', shape: [1, 1], data_offsets: [45, 53] },
    z: { dtype: 'BOOL', shape: [2], data_offsets: [53, 55] },
  });
  const image = handMade(header, data);

  it('decodes every dtype, at unaligned offsets, with metadata', () => {
    const { metadata, tensors } = decodeSafetensors(image);
    expect(metadata).toEqual({ format: 'pt', note: 'hand made' });
    expect([...tensors.keys()]).toEqual(['a', 'h', 'b', 'l', 'u', 'd', 'z']);
    expect(tensors.get('a')).toMatchObject({ dtype: 'I32', shape: [2, 2] });
    expect(Array.from(tensors.get('a')?.data as Int32Array)).toEqual([1, 2, 3, -4]);
    expect(Array.from(tensors.get('l')?.data as BigInt64Array)).toEqual([7n, -1n]);
    expect(Array.from(tensors.get('u')?.data as Uint8Array)).toEqual([0, 128, 255]);
    expect((tensors.get('d')?.data as Float64Array)[0]).toBe(Math.PI);
    expect(Array.from(tensors.get('z')?.data as Uint8Array)).toEqual([1, 0]);
  });

  it('reads the same from a file by offset, converting F16/BF16 to float32 and I64 to int32', async () => {
    const path = join(dir, 'hand.safetensors');
    await writeFile(path, image);
    const f = await SafetensorsFile.open(path);
    try {
      expect(f.names()).toEqual(['a', 'h', 'b', 'l', 'u', 'd', 'z']);
      expect(Array.from((await f.readFloat32('h')).data)).toEqual([1, -2, 65504]);
      expect(Array.from((await f.readFloat32('b')).data)).toEqual([1, -0.5]);
      expect(Array.from((await f.readInt32('l')).data)).toEqual([7, -1]);
      expect(Array.from((await f.readInt32('u')).data)).toEqual([0, 128, 255]);
      expect(Array.from((await f.readFloat32('a')).data)).toEqual([1, 2, 3, -4]);
      expect((await f.readFloat32('d')).data[0]).toBeCloseTo(Math.PI, 6);
      await expect(f.readInt32('h')).rejects.toThrow('tensor h: dtype F16 where an integer dtype');
      await expect(f.read('nope')).rejects.toThrow('no tensor named nope');
    } finally {
      await f.close();
    }
  });

  it('writes exactly the layout the specification describes (header padded with spaces to 8 bytes)', () => {
    const bytes = encodeSafetensors(
      new Map<string, TensorInput>([
        ['x', { dtype: 'I32', shape: [2], data: new Int32Array([5, -6]) }],
        ['y', { dtype: 'U8', shape: [1], data: new Uint8Array([9]) }],
      ]),
      { metadata: { k: 'v' } },
    );
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const json = Buffer.from(bytes.subarray(8, 8 + n)).toString('utf8');
    expect(json.trimEnd()).toBe('{"__metadata__":{"k":"v"},"x":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"U8","shape":[1],"data_offsets":[8,9]}}');
    expect(/^ *$/.test(json.slice(json.trimEnd().length))).toBe(true);
    expect(Array.from(bytes.subarray(8 + n))).toEqual([5, 0, 0, 0, 0xfa, 0xff, 0xff, 0xff, 9]);
  });
});

describe('round trips', () => {
  it('writes atomically and reads back every dtype bit for bit, including empty and scalar tensors', async () => {
    const rnd = (n: number): number[] => Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 43758.5453);
    const entries = new Map<string, TensorInput>([
      ['f32', { dtype: 'F32', shape: [3, 5], data: Float32Array.from(rnd(15)) }],
      ['f64', { dtype: 'F64', shape: [4], data: Float64Array.from(rnd(4)) }],
      ['f16', { dtype: 'F16', shape: [7], data: Uint16Array.from(rnd(7), (v) => float32ToFloat16Bits(v / 1e4)) }],
      ['bf16', { dtype: 'BF16', shape: [7], data: Uint16Array.from(rnd(7), (v) => float32ToBfloat16Bits(v)) }],
      ['i64', { dtype: 'I64', shape: [2], data: BigInt64Array.from([-(2n ** 62n), 2n ** 40n]) }],
      ['i32', { dtype: 'I32', shape: [3], data: Int32Array.from([-2147483648, 0, 2147483647]) }],
      ['i16', { dtype: 'I16', shape: [2], data: Int16Array.from([-32768, 32767]) }],
      ['i8', { dtype: 'I8', shape: [2], data: Int8Array.from([-128, 127]) }],
      ['u8', { dtype: 'U8', shape: [2], data: Uint8Array.from([0, 255]) }],
      ['bool', { dtype: 'BOOL', shape: [2], data: Uint8Array.from([1, 0]) }],
      ['u16', { dtype: 'U16', shape: [1], data: Uint16Array.from([65535]) }],
      ['u32', { dtype: 'U32', shape: [1], data: Uint32Array.from([4294967295]) }],
      ['u64', { dtype: 'U64', shape: [1], data: BigUint64Array.from([2n ** 64n - 1n]) }],
      ['empty', { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) }],
      ['scalar', { dtype: 'F32', shape: [], data: Float32Array.from([42]) }],
      ['raw', { dtype: 'F32', shape: [2], data: new Uint8Array(new Float32Array([1.5, -2]).buffer) }],
    ]);
    const path = join(dir, 'all.safetensors');
    await writeFile(path, 'old contents');
    const { bytes } = await writeSafetensors(path, entries, { metadata: { step: '12' } });
    expect((await readFile(path)).byteLength).toBe(bytes);
    expect((await readdir(dir)).filter((f) => f.includes('.tmp-'))).toEqual([]);
    const back = await readSafetensors(path);
    expect(back.metadata).toEqual({ step: '12' });
    expect([...back.tensors.keys()]).toEqual([...entries.keys()]);
    for (const [name, t] of entries) {
      const r = back.tensors.get(name);
      if (!r) throw new Error(`${name} missing`);
      expect(r.dtype, name).toBe(t.dtype);
      expect(r.shape, name).toEqual(t.shape);
      expect(Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength).equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)), name).toBe(true);
    }
    expect(Array.from((back.tensors.get('raw')?.data as Float32Array) ?? [])).toEqual([1.5, -2]);
  });

  it('rejects tensors that cannot be written, naming the tensor', () => {
    expect(err(() => encodeSafetensors([['w', { dtype: 'F32', shape: [2, 2], data: new Float32Array(3) }]]))).toBe(
      'tensor w: data has 12 bytes but shape [2, 2] of F32 needs 16',
    );
    expect(err(() => encodeSafetensors([['w', { dtype: 'F32', shape: [2], data: new Int32Array(2) }]]))).toMatch(/tensor w: data is a Int32Array, which does not hold F32/);
    expect(err(() => encodeSafetensors([['__metadata__', { dtype: 'F32', shape: [0], data: new Float32Array(0) }]]))).toMatch(/reserved/);
    expect(err(() => encodeSafetensors([['w', { dtype: 'F8' as 'F32', shape: [0], data: new Float32Array(0) }]]))).toMatch(/dtype F8 is not one of/);
  });
});

describe('16-bit floats', () => {
  it('float16: every finite bit pattern survives half → float32 → half, and rounding is to nearest even', () => {
    for (let h = 0; h < 0x10000; h++) {
      const isNaN16 = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (isNaN16) {
        expect(Number.isNaN(float16BitsToFloat32(h))).toBe(true);
        continue;
      }
      const back = float32ToFloat16Bits(float16BitsToFloat32(h));
      if (back !== h) throw new Error(`0x${h.toString(16)} → 0x${back.toString(16)}`);
    }
    expect(float32ToFloat16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(float32ToFloat16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(float32ToFloat16Bits(65520)).toBe(0x7c00); // rounds past the largest half: infinity
    expect(float32ToFloat16Bits(2 ** -25)).toBe(0); // half of the smallest subnormal, tie → 0
    expect(float32ToFloat16Bits(1.5 * 2 ** -25)).toBe(1);
    expect(float32ToFloat16Bits(NaN) & 0x7e00).toBe(0x7e00);
  });

  it('bfloat16: exact widening and round to nearest even', () => {
    expect(bfloat16BitsToFloat32(0x3f80)).toBe(1);
    expect(bfloat16BitsToFloat32(0xc040)).toBe(-3);
    expect(float32ToBfloat16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie → even
    expect(float32ToBfloat16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(Number.isNaN(bfloat16BitsToFloat32(float32ToBfloat16Bits(NaN)))).toBe(true);
  });
});

describe('hostile files give a SafetensorsError naming what is wrong', () => {
  const ok = (h: Record<string, unknown>, data: Uint8Array): Uint8Array => handMade(JSON.stringify(h), data);
  const four = new Uint8Array(16);

  it('header length: huge, beyond the file, too small, file shorter than 8 bytes', () => {
    expect(err(() => decodeSafetensors(handMade('{}', four, 2n ** 63n)))).toBe('header length 9223372036854775808 exceeds the limit of 100000000 bytes');
    expect(err(() => decodeSafetensors(handMade('{}', four, 99_999_999n)))).toMatch(/^header length 99999999 runs past the end of the file \(26 bytes; expected at most 18\)$/);
    expect(err(() => decodeSafetensors(new Uint8Array(5)))).toMatch(/file is 5 bytes/);
    expect(err(() => decodeSafetensors(handMade('{}', four, 0n)))).toMatch(/too small/);
  });

  it('bad JSON, not an object, invalid UTF-8', () => {
    expect(err(() => decodeSafetensors(handMade('{"a": {', four)))).toMatch(/^header is not valid JSON: /);
    expect(err(() => decodeSafetensors(handMade('[1, 2]', four)))).toMatch(/must be a JSON object starting with "\{"/);
    const bad = handMade('{"\u00e9":1}', new Uint8Array(0));
    bad[10] = 0xff; // break the UTF-8 sequence
    expect(err(() => decodeSafetensors(bad))).toBe('header is not valid UTF-8');
  });

  it('overlapping, holes, out of bounds, trailing bytes', () => {
    expect(
      err(() => decodeSafetensors(ok({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, new Uint8Array(12)))),
    ).toBe('tensor b: data_offsets [4, 12] overlap tensor a which ends at 8');
    expect(
      err(() => decodeSafetensors(ok({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, new Uint8Array(12)))),
    ).toBe('tensor b: data_offsets begin at 8 but the previous tensor ends at 4; the data section must have no holes');
    expect(err(() => decodeSafetensors(ok({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, new Uint8Array(8))))).toMatch(
      /^tensor a: data_offsets end at 16, past the end of the data section \(8 bytes; file truncated\?\)$/,
    );
    expect(err(() => decodeSafetensors(ok({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(8))))).toMatch(/cover 4 bytes but the data section holds 8/);
  });

  it('shape, dtype, offsets, metadata, unknown fields and duplicate names', () => {
    const one = (entry: unknown, data = new Uint8Array(8)): string => err(() => decodeSafetensors(ok({ w: entry }, data)));
    expect(one({ dtype: 'F32', shape: [3], data_offsets: [0, 8] })).toBe('tensor w: data_offsets [0, 8] span 8 bytes but shape [3] of F32 needs 12');
    expect(one({ dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] })).toMatch(/needs 4835703278458516698824704$/);
    expect(one({ dtype: 'Q4', shape: [2], data_offsets: [0, 8] })).toMatch(/^tensor w: dtype "Q4" is not supported; expected one of BOOL, U8/);
    expect(one({ dtype: 'F32', shape: [-2], data_offsets: [0, 8] })).toBe('tensor w: shape [-2] must be an array of non-negative integers');
    expect(one({ dtype: 'F32', shape: [1.5], data_offsets: [0, 8] })).toMatch(/shape \[1.5\]/);
    expect(one({ dtype: 'F32', shape: [2], data_offsets: [8, 0] })).toBe('tensor w: data_offsets [8, 0] end before they begin');
    expect(one({ dtype: 'F32', shape: [2], data_offsets: [0] })).toMatch(/data_offsets \[0\] must be \[begin, end\]/);
    expect(one({ dtype: 'F32', shape: [2], data_offsets: [0, 8], extra: 1 })).toMatch(/unknown field "extra"/);
    expect(one([1, 2])).toMatch(/tensor w: expected an object/);
    expect(err(() => decodeSafetensors(ok({ __metadata__: { a: 1 } }, new Uint8Array(0))))).toBe('__metadata__.a must be a string, found 1');
    const dup = '{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}';
    expect(err(() => decodeSafetensors(handMade(dup, new Uint8Array(2))))).toBe('tensor name "w" appears twice in the header; names must be unique');
    // The same key nested deeper is not a duplicate name.
    expect(decodeSafetensors(handMade('{"__metadata__":{"w":"x"},"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', new Uint8Array(1))).tensors.size).toBe(1);
  });

  it('every truncation of a valid file, and random byte corruptions, fail cleanly (file reader too)', async () => {
    const image = encodeSafetensors(
      [
        ['a', { dtype: 'F32', shape: [3], data: new Float32Array([1, 2, 3]) }],
        ['b', { dtype: 'I64', shape: [2], data: new BigInt64Array([1n, 2n]) }],
      ],
      { metadata: { m: 'x' } },
    );
    for (let n = 0; n < image.byteLength; n++) expect(() => decodeSafetensors(image.subarray(0, n))).toThrow(SafetensorsError);
    const path = join(dir, 'trunc.safetensors');
    await writeFile(path, image.subarray(0, image.byteLength - 3));
    await expect(SafetensorsFile.open(path)).rejects.toThrow(/trunc\.safetensors: tensor b: data_offsets end at 28, past the end of the data section/);
    let seed = 1;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let trial = 0; trial < 2000; trial++) {
      const copy = image.slice();
      copy[Math.floor(rand() * 8 + rand() * (copy.byteLength - 8) * (trial % 2))] = Math.floor(rand() * 256);
      try {
        decodeSafetensors(copy);
      } catch (e) {
        if (!(e instanceof SafetensorsError)) throw e;
      }
    }
  });

  it('I64 values outside int32 are an error naming the tensor, element and value', () => {
    const image = encodeSafetensors([['ids', { dtype: 'I64', shape: [3], data: new BigInt64Array([1n, 2n, 2n ** 31n]) }]]);
    const t = decodeSafetensors(image).tensors.get('ids');
    if (!t) throw new Error('ids missing');
    expect(err(() => toInt32(t.dtype, t.data, 'ids'))).toBe('tensor ids: element 2 is 2147483648, outside the int32 range [-2147483648, 2147483647]');
  });
});

// Interop with the Python reference package, when this machine has it (it is not installable from Debian).
const pythonSafetensors = (() => {
  try {
    execFileSync('python3', ['-c', 'import safetensors.numpy'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
if (!pythonSafetensors) console.warn('skipping the Python safetensors interop check: python3 cannot import safetensors.numpy');

describe.skipIf(!pythonSafetensors)('interop with Python safetensors', () => {
  it('Python reads our file and we read Python’s', async () => {
    const ours = join(dir, 'ours.safetensors');
    const theirs = join(dir, 'theirs.safetensors');
    await writeSafetensors(ours, [['x', { dtype: 'F32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) }], ['n', { dtype: 'I64', shape: [1], data: new BigInt64Array([-5n]) }]], { metadata: { k: 'v' } });
    const script = `
import sys, json, numpy as np
from safetensors.numpy import load_file, save_file
from safetensors import safe_open
t = load_file(sys.argv[1])
with safe_open(sys.argv[1], 'numpy') as f: meta = f.metadata()
print(json.dumps({'x': t['x'].tolist(), 'n': t['n'].tolist(), 'meta': meta}))
save_file({'y': np.arange(6, dtype=np.float16).reshape(3, 2), 'z': np.array([7, -8], dtype=np.int64)}, sys.argv[2], metadata={'from': 'python'})
`;
    const out = JSON.parse(execFileSync('python3', ['-c', script, ours, theirs], { encoding: 'utf8' })) as unknown;
    expect(out).toEqual({ x: [[1, 2, 3], [4, 5, 6]], n: [-5], meta: { k: 'v' } });
    const f = await SafetensorsFile.open(theirs);
    expect(f.metadata).toEqual({ from: 'python' });
    expect(Array.from((await f.readFloat32('y')).data)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(Array.from((await f.readInt32('z')).data)).toEqual([7, -8]);
    await f.close();
  });
});
