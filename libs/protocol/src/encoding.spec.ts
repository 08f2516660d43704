import { describe, expect, it } from 'vitest';
import { addEncodedInto, checksumOf, countNonFinite, decodeTensor, encodeTensor, sha256OfFloats, toBf16 } from './encoding.js';

/** Reference bf16 rounding by value (not by bit trick): the nearer of the two neighbours, ties to even. */
function bf16Reference(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0] as number;
  if (Number.isNaN(x)) return 0x7fc0 | ((u >>> 16) & 0x8000);
  const lo = u >>> 16;
  const hi = lo + 1;
  const val = (bits: number): number => {
    const g = new Uint32Array([bits << 16]);
    return new Float32Array(g.buffer)[0] as number;
  };
  if ((hi & 0x7fff) === 0x7f80) {
    // Above the largest bf16 (0x7f7f) the upper neighbour is infinity; halfway to 2^128 rounds up to it.
    const halfway = (2 - 2 ** -8) * 2 ** 127;
    return Math.abs(x) >= halfway ? hi : lo;
  }
  const dLo = Math.abs(x - val(lo));
  const dHi = Math.abs(val(hi) - x);
  if (dLo < dHi) return lo;
  if (dHi < dLo) return hi;
  return lo % 2 === 0 ? lo : hi;
}

describe('bf16', () => {
  it('rounds to nearest, ties to even, on known bit patterns', () => {
    const bits = (u: number): number => new Float32Array(new Uint32Array([u]).buffer)[0] as number;
    const cases: [number, number][] = [
      [0x3f800000, 0x3f80], // 1.0
      [0x3f808000, 0x3f80], // tie, even below
      [0x3f818000, 0x3f82], // tie, odd below → up
      [0x3f808001, 0x3f81], // just above the tie
      [0x3f807fff, 0x3f80], // just below the tie
      [0xbf818000, 0xbf82], // negative tie
      [0x7f7fffff, 0x7f80], // largest float rounds to +Inf
      [0x00000001, 0x0000], // smallest subnormal → +0
      [0x7f800000, 0x7f80], // +Inf stays
      [0xff800000, 0xff80], // -Inf stays
    ];
    const h = toBf16(new Float32Array(cases.map(([u]) => bits(u))));
    expect([...h].map((v) => v.toString(16))).toEqual(cases.map(([, b]) => b.toString(16)));
  });

  it('agrees with a by-value reference on random floats and keeps NaN a NaN', () => {
    const n = 20000;
    const x = new Float32Array(n);
    let s = 12345;
    const u = new Uint32Array(x.buffer);
    for (let i = 0; i < n; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      u[i] = s;
    }
    const h = toBf16(x);
    for (let i = 0; i < n; i++) {
      const v = x[i] as number;
      if (Number.isNaN(v)) {
        expect(((h[i] as number) & 0x7f80) === 0x7f80 && ((h[i] as number) & 0x7f) !== 0).toBe(true);
      } else {
        expect(h[i]).toBe(bf16Reference(v));
      }
    }
  });

  it('encodes and decodes: f32 exactly, bf16 within half an ulp of 8 bits, deterministically', () => {
    const x = new Float32Array([0, -0, 1.5, -2.25, 3.14159, 1e-20, 6.5e4, -1e30]);
    expect(decodeTensor(encodeTensor(x, 'f32'), 'f32', x.length)).toEqual(x);
    const b = encodeTensor(x, 'bf16');
    expect(b.byteLength).toBe(x.length * 2);
    const y = decodeTensor(b, 'bf16', x.length);
    for (let i = 0; i < x.length; i++) expect(Math.abs((y[i] as number) - (x[i] as number))).toBeLessThanOrEqual(Math.abs(x[i] as number) * 2 ** -8);
    expect(Buffer.from(encodeTensor(x, 'bf16'))).toEqual(Buffer.from(b));
    expect(() => decodeTensor(b.subarray(0, 6), 'bf16', x.length)).toThrow('needs 16 bytes; got 6');
  });

  it('adds encoded tensors into an accumulator exactly like decode-then-add', () => {
    const n = 70000; // more than one decode block
    const acc1 = new Float32Array(n).map((_, i) => Math.sin(i));
    const acc2 = acc1.slice();
    const g = new Float32Array(n).map((_, i) => Math.cos(i * 0.37) * 1e-3);
    for (const enc of ['f32', 'bf16'] as const) {
      const bytes = encodeTensor(g, enc);
      addEncodedInto(acc1, bytes, enc);
      const d = decodeTensor(bytes, enc, n);
      for (let i = 0; i < n; i++) acc2[i] = (acc2[i] as number) + (d[i] as number);
      expect(Buffer.from(acc1.buffer)).toEqual(Buffer.from(acc2.buffer));
    }
  });

  it('counts NaN and infinities on the encoded bits', () => {
    const x = new Float32Array([1, NaN, 2, Infinity, -Infinity, 3.4e38]);
    expect(countNonFinite(encodeTensor(x, 'f32'), 'f32')).toBe(3);
    expect(countNonFinite(encodeTensor(x, 'bf16'), 'bf16')).toBe(4); // 3.4e38 rounds to +Inf in bf16
  });
});

describe('checksums', () => {
  it('match the standard check values', () => {
    const data = new TextEncoder().encode('123456789');
    expect(checksumOf('crc32', data)).toBe('crc32:cbf43926');
    expect(checksumOf('crc32', data.subarray(0, 4), data.subarray(4))).toBe('crc32:cbf43926');
    expect(checksumOf('sha256', data)).toBe('sha256:15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225');
    expect(sha256OfFloats(new Float32Array([1]))).toBe(checksumOf('sha256', new Uint8Array([0, 0, 0x80, 0x3f])).slice(7));
  });
});
