import { describe, expect, it } from 'vitest';
import { GRADIENT_BLOCK, MAX_SHARDS, shardRanges } from './shards.js';

describe('shardRanges', () => {
  it('cuts a vector into contiguous whole-block shards that cover it exactly', () => {
    for (const [n, s] of [
      [1, 1],
      [GRADIENT_BLOCK, 1],
      [3 * GRADIENT_BLOCK + 5, 3],
      [10 * GRADIENT_BLOCK + 1, 3],
      [10 * GRADIENT_BLOCK + 1, 11],
      [1_234_567, 8],
    ] as const) {
      const r = shardRanges(n, s);
      expect(r).toHaveLength(s);
      expect(r[0]?.start).toBe(0);
      expect(r[s - 1]?.end).toBe(n);
      r.forEach((x, i) => {
        expect(x.index).toBe(i);
        expect(x.end).toBeGreaterThan(x.start);
        expect(x.start % GRADIENT_BLOCK).toBe(0);
        if (i > 0) expect(x.start).toBe(r[i - 1]?.end);
      });
      // As even as whole blocks allow: block counts differ by at most one.
      const blocks = r.map((x) => Math.ceil((x.end - x.start) / GRADIENT_BLOCK));
      expect(Math.max(...blocks) - Math.min(...blocks)).toBeLessThanOrEqual(1);
    }
  });

  it('refuses a shard count the vector cannot hold, naming the field and the limit', () => {
    expect(() => shardRanges(2 * GRADIENT_BLOCK, 3)).toThrow(`training.shards = 3: the model has ${2 * GRADIENT_BLOCK} parameters, 2 block(s) of ${GRADIENT_BLOCK}; expected at most 2 shard(s)`);
    expect(() => shardRanges(100, 0)).toThrow(`training.shards = 0: expected an integer from 1 to ${MAX_SHARDS}`);
    expect(() => shardRanges(100, 1.5)).toThrow('training.shards = 1.5');
    expect(() => shardRanges(0, 1)).toThrow('elements = 0');
  });
});
