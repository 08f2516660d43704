import { describe, expect, it } from 'vitest';
import { encodeTensor, fixedBytes, quantizeInto, sha256OfFloats, type TensorEncoding } from '@m3ae/protocol';
import { OrderedReducer } from './step-reducer.js';

function contribution(k: number, n: number, encoding: TensorEncoding): Parameters<OrderedReducer['add']>[1] {
  // Values of very different magnitudes: float addition is not associative on them, so order shows.
  const g = new Float32Array(n).map((_, i) => Math.sin(i * 7 + k) * 10 ** ((i + k) % 9 - 4));
  return { bytes: encodeTensor(g, encoding), encoding, sums: { mlm: k + 0.1, mim: k * 2 + 0.01, itm: 1e-9 * k }, counts: { mlm: k, mim: 4, itm: 1 }, correct: { mlm: 1, itm: 0 } };
}

function shuffled(n: number, seed: number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  let s = seed;
  for (let i = n - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [a[i], a[j]] = [a[j] as number, a[i] as number];
  }
  return a;
}

describe('OrderedReducer', () => {
  for (const encoding of ['f32', 'bf16'] as const) {
    it(`sums ${encoding} contributions in micro-batch order whatever the arrival order`, () => {
      const jobs = 9;
      const n = 5000;
      const sums: string[] = [];
      for (const seed of [1, 2, 3, 4]) {
        const r = new OrderedReducer(jobs, n);
        for (const k of shuffled(jobs, seed)) {
          expect(r.complete).toBe(false);
          r.add(k, contribution(k, n, encoding));
        }
        expect(r.complete).toBe(true);
        expect(r.missing()).toEqual([]);
        expect(r.counts).toEqual({ mlm: 36, mim: 36, itm: 9 });
        sums.push(Buffer.from(r.sum.buffer).toString('base64') + JSON.stringify(r.sums));
      }
      expect(new Set(sums).size).toBe(1);
      // The same as adding 0, 1, 2, … by hand — and not what the reverse order gives on these magnitudes.
      const serial = (order: number[]): string => {
        const acc = new Float32Array(n);
        for (const k of order) {
          const c = contribution(k, n, 'f32');
          const g = new Float32Array(c.bytes.buffer, c.bytes.byteOffset, n);
          for (let i = 0; i < n; i++) acc[i] = (acc[i] as number) + (g[i] as number);
        }
        return Buffer.from(acc.buffer).toString('base64');
      };
      if (encoding === 'f32') {
        const forward = Array.from({ length: jobs }, (_, k) => k);
        expect(sums[0]?.startsWith(serial(forward))).toBe(true);
        expect(serial([...forward].reverse())).not.toBe(serial(forward));
      }
    });
  }

  it('sums fx53 contributions to the same bits for any arrival order and any grouping into jobs', () => {
    const n = 5000;
    const hashes = new Set<string>();
    const f32 = (k: number): Float32Array => new Float32Array(n).map((_, i) => Math.sin(i * 7 + k) * 10 ** ((i + k) % 9 - 7));
    // 8 micro-batches as 8 jobs, 4 jobs of 2 and 2 jobs of 4 (summed "on the worker"), arriving in several orders.
    for (const perJob of [1, 2, 4]) {
      const jobs = 8 / perJob;
      for (const seed of [1, 2]) {
        const r = new OrderedReducer(jobs, n);
        for (const k of shuffled(jobs, seed)) {
          const acc = new Float64Array(n);
          for (let m = k * perJob; m < (k + 1) * perJob; m++) quantizeInto(acc, f32(m));
          r.add(k, { bytes: fixedBytes(acc), encoding: 'fx53', sums: { mlm: k }, counts: { mlm: 1 }, correct: {} });
          expect(r.sum.every((v) => v === 0)).toBe(!r.complete);
        }
        expect(r.complete).toBe(true);
        expect(r.counts).toEqual({ mlm: jobs });
        hashes.add(sha256OfFloats(r.sum));
      }
    }
    expect(hashes.size).toBe(1);
  });

  it('refuses a contribution in another encoding than the step\'s', () => {
    const r = new OrderedReducer(2, 10);
    r.add(0, contribution(0, 10, 'fx53'));
    expect(() => r.add(1, contribution(1, 10, 'f32'))).toThrow(/micro-batch 1 is f32-encoded; this step's contributions are fx53/);
    expect(r.has(1)).toBe(false);
  });

  it('counts a micro-batch once and says which are missing', () => {
    const r = new OrderedReducer(3, 10);
    r.add(2, contribution(2, 10, 'f32'));
    expect(r.has(2)).toBe(true);
    expect(r.acceptedCount).toBe(1);
    expect(r.missing()).toEqual([0, 1]);
    expect(() => r.add(2, contribution(2, 10, 'f32'))).toThrow('micro-batch 2 is already counted');
    expect(r.sum.every((v) => v === 0)).toBe(true); // waits for 0 and 1 before adding 2
  });

  it("adds a downstream task's one objective, and tokens only when every contribution counted them", () => {
    const task = (k: number, tokens?: number): Parameters<OrderedReducer['add']>[1] => ({
      bytes: encodeTensor(new Float32Array(4).fill(k), 'f32'),
      encoding: 'f32',
      sums: { vqa: 10 * k },
      counts: { vqa: 3 },
      correct: { vqa: k },
      ...(tokens !== undefined ? { tokens } : {}),
    });
    const r = new OrderedReducer(2, 4);
    r.add(1, task(1, 20));
    r.add(0, task(2, 30));
    expect(r.sums).toEqual({ vqa: 30 });
    expect(r.counts).toEqual({ vqa: 6 });
    expect(r.correct).toEqual({ vqa: 3 });
    expect(r.tokens).toBe(50);
    const partial = new OrderedReducer(2, 4);
    partial.add(0, task(1, 20));
    partial.add(1, task(1));
    expect(partial.tokens).toBeUndefined();
  });
});
