import { describe, expect, it } from 'vitest';
import { addEncodedInto, addFixedInto, checksumOf, countNonFinite, decodeTensor, encodeTensor, FIXED_FRACTION_BITS, FIXED_MAX_ABS, FixedPointError, fixedBytes, fixedToF32, quantizeInto, sha256OfFloats, toBf16 } from './encoding.js';

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

describe('fx53 (exact fixed point)', () => {
  // Gradient-like contributions: signs mixed, magnitudes log-uniform over 1e-9 … 1e-1 (what a normalised loss gives).
  function contributions(count: number, n: number, seed: number): Float32Array[] {
    let s = seed;
    const rand = (): number => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    return Array.from({ length: count }, () => new Float32Array(n).map(() => (rand() < 0.5 ? -1 : 1) * 10 ** (-9 + 8 * rand())));
  }

  it('gives the same bits for any order and any grouping of the contributions', () => {
    const parts = contributions(8, 4096, 7);
    const flat = new Float64Array(4096);
    for (const p of parts) quantizeInto(flat, p);
    // Grouped as a worker summing 4 micro-batches per job, the jobs then added in reverse order.
    const groups = [parts.slice(0, 4), parts.slice(4)].map((g) => {
      const acc = new Float64Array(4096);
      for (const p of g) quantizeInto(acc, p);
      return fixedBytes(acc);
    });
    const grouped = new Float64Array(4096);
    for (const b of [...groups].reverse()) addFixedInto(grouped, b);
    expect(sha256OfFloats(fixedToF32(grouped))).toBe(sha256OfFloats(fixedToF32(flat)));
    // f32 summation does depend on the order on these magnitudes (the property fx53 removes).
    const f32 = (order: Float32Array[]): string => {
      const acc = new Float32Array(4096);
      for (const p of order) for (let i = 0; i < acc.length; i++) acc[i] = (acc[i] as number) + (p[i] as number);
      return sha256OfFloats(acc);
    };
    expect(f32(parts)).not.toBe(f32([...parts].reverse()));
  });

  it('errs less than f32 summation in job order (L2 and max against the float64 sum)', () => {
    const jobs = 16;
    const n = 20000;
    const parts = contributions(jobs, n, 11);
    const exact = new Float64Array(n); // float64 sums of 16 f32 values: error ~1e-16 relative, far below both
    const f32 = new Float32Array(n);
    const fx = new Float64Array(n);
    for (const p of parts) {
      for (let i = 0; i < n; i++) {
        exact[i] = (exact[i] as number) + (p[i] as number);
        f32[i] = (f32[i] as number) + (p[i] as number);
      }
      quantizeInto(fx, p);
    }
    const fixed = fixedToF32(fx);
    const err = (x: Float32Array): { l2: number; max: number } => {
      let l2 = 0;
      let max = 0;
      for (let i = 0; i < n; i++) {
        const d = Math.abs((x[i] as number) - (exact[i] as number));
        l2 += d * d;
        max = Math.max(max, d);
      }
      return { l2: Math.sqrt(l2), max };
    };
    const ef = err(fixed);
    const es = err(f32);
    // Fixed point: one f32 rounding of the exact sum plus at most jobs × half a quantum.
    expect(ef.l2).toBeLessThan(es.l2);
    expect(ef.max).toBeLessThan(es.max);
    // What is left is the one unavoidable rounding to f32: the fixed-point sum is the correctly rounded exact sum
    // almost everywhere (not where the exact sum lies within jobs × half a quantum of a rounding boundary).
    let fxRounded = 0;
    let f32Rounded = 0;
    for (let i = 0; i < n; i++) {
      const r = Math.fround(exact[i] as number);
      if (fixed[i] === r) fxRounded++;
      if (f32[i] === r) f32Rounded++;
    }
    expect(fxRounded).toBeGreaterThan(0.99 * n);
    expect(f32Rounded).toBeLessThan(fxRounded);
    let beforeRounding = 0;
    for (let i = 0; i < n; i++) beforeRounding = Math.max(beforeRounding, Math.abs((fx[i] as number) * 2 ** -FIXED_FRACTION_BITS - (exact[i] as number)));
    expect(beforeRounding).toBeLessThanOrEqual(jobs * 2 ** -(FIXED_FRACTION_BITS + 1) + 1e-15);
    expect(beforeRounding).toBeGreaterThan(0);
    console.log(`fx53 vs f32 in job order, ${jobs} contributions of ${n}: L2 error ${ef.l2.toExponential(3)} vs ${es.l2.toExponential(3)}, max ${ef.max.toExponential(3)} vs ${es.max.toExponential(3)}; correctly rounded ${fxRounded} vs ${f32Rounded} of ${n}`);
  });

  it('encodes and decodes through the wire encoding (8 bytes a value)', () => {
    const v = new Float32Array([0, 1, -1, 1e-3, -2.5e-7, 8000, 2 ** -41, 3 * 2 ** -41]);
    const bytes = encodeTensor(v, 'fx53');
    expect(bytes.byteLength).toBe(64);
    const back = decodeTensor(bytes, 'fx53', v.length);
    // |v| ≥ 2^-17: a whole number of quanta, exact; below, within half a quantum.
    expect([0, 1, 2, 3, 5].map((i) => back[i])).toEqual([0, 1, 2, 3, 5].map((i) => v[i]));
    expect(Math.abs((back[4] as number) - (v[4] as number))).toBeLessThanOrEqual(2 ** -41);
    expect(back[4]).not.toBe(v[4]);
    // Below the quantum: rounded half up to whole quanta of 2^-40.
    expect(back[6]).toBe(2 ** -40);
    expect(back[7]).toBe(2 * 2 ** -40);
    expect(countNonFinite(bytes, 'fx53')).toBe(0);
  });

  it('refuses a value out of range, a non-finite value and a saturating sum, naming the element and the value', () => {
    const acc = new Float64Array(3);
    expect(() => quantizeInto(acc, new Float32Array([0, 0, 9000]))).toThrow(FixedPointError);
    expect(() => quantizeInto(new Float64Array(3), new Float32Array([0, 9000, 0]))).toThrow(/gradient value at element 1 is 9000; expected a finite value with \|value\| ≤ 8191\.99/);
    expect(() => quantizeInto(new Float64Array(2), new Float32Array([0, Number.NaN]))).toThrow(/element 1 is NaN/);
    expect(() => quantizeInto(new Float64Array(2), new Float32Array([-Infinity, 0]))).toThrow(/element 0 is -Infinity/);
    // Each value fits; their sum does not: an error, never a wrapped or rounded sum.
    const sum = new Float64Array(2);
    quantizeInto(sum, new Float32Array([1, 5000]));
    expect(() => quantizeInto(sum, new Float32Array([1, 5000]))).toThrow(/running sum at element 1 is 10000; expected/);
    // The same on the coordinator's side, for contributions read from the wire.
    const acc2 = new Float64Array(2);
    addFixedInto(acc2, encodeTensor(new Float32Array([0, -5000]), 'fx53'));
    expect(() => addFixedInto(acc2, encodeTensor(new Float32Array([3, -5000]), 'fx53'))).toThrow(/running sum at element 1 is -10000/);
    expect(Array.from(fixedToF32(acc2))).toEqual([0, -5000]); // all or nothing: element 0 was not left at 3
    // A corrupted contribution (not an integer number of quanta) is refused too.
    expect(() => addFixedInto(new Float64Array(1), fixedBytes(new Float64Array([0.5])))).toThrow(/element 0 holds 0\.5; expected an integer/);
    expect(() => addFixedInto(new Float64Array(1), fixedBytes(new Float64Array([2 ** 60])))).toThrow(FixedPointError);
    // The largest representable value is accepted, exactly.
    const edge = new Float64Array(1);
    addFixedInto(edge, fixedBytes(new Float64Array([Number.MAX_SAFE_INTEGER])));
    expect(edge[0]).toBe(Number.MAX_SAFE_INTEGER);
    expect(FIXED_MAX_ABS).toBeCloseTo(8192, 6);
    expect(() => addEncodedInto(new Float32Array(1), fixedBytes(new Float64Array([1])), 'fx53')).toThrow(/addFixedInto/);
  });
});
