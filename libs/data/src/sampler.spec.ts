import { describe, expect, it } from 'vitest';
import { EpochSampler } from './sampler.js';

describe('EpochSampler', () => {
  it('covers every sample exactly once per epoch with fixed-size global batches', () => {
    const s = new EpochSampler({ size: 103, seed: 5, globalBatchSize: 10 });
    expect(s.stepsPerEpoch).toBe(10);
    for (const epoch of [0, 1]) {
      const seen = new Set<number>();
      for (let k = 0; k < 10; k++) {
        const b = s.batchAt(epoch * 10 + k);
        expect(b.epoch).toBe(epoch);
        expect(b.indices).toHaveLength(10);
        expect(Array.from(b.positions)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        for (const i of b.indices) seen.add(i);
      }
      expect(seen.size).toBe(100); // 3 samples dropped this epoch, none repeated
    }
    // Different epochs use different orders.
    expect(s.batchAt(0).indices).not.toEqual(s.batchAt(10).indices);
  });

  it('keeps the short last batch with dropLast false', () => {
    const s = new EpochSampler({ size: 25, seed: 1, globalBatchSize: 10, dropLast: false });
    expect(s.stepsPerEpoch).toBe(3);
    expect(s.batchAt(2).indices).toHaveLength(5);
    const all = [0, 1, 2].flatMap((k) => Array.from(s.batchAt(k).indices)).sort((a, b) => a - b);
    expect(all).toEqual(Array.from({ length: 25 }, (_, i) => i));
  });

  it('depends only on (size, seed, G, step): not on history, instances or workers', () => {
    const a = new EpochSampler({ size: 1000, seed: 9, globalBatchSize: 32 });
    const b = new EpochSampler({ size: 1000, seed: 9, globalBatchSize: 32 });
    const sequential = Array.from({ length: 70 }, () => a.next());
    for (const step of [69, 3, 31, 0, 45]) expect(b.batchAt(step)).toEqual(sequential[step]);
    // Four workers each taking a contiguous quarter of the positions rebuild the same global batch.
    const g = b.batchAt(40);
    const quarters = [0, 1, 2, 3].flatMap((w) => Array.from(g.indices.subarray(w * 8, w * 8 + 8)));
    expect(quarters).toEqual(Array.from(sequential[40]?.indices ?? []));
    expect(new EpochSampler({ size: 1000, seed: 10, globalBatchSize: 32 }).batchAt(0).indices).not.toEqual(sequential[0]?.indices);
  });

  it('saves and restores its position exactly', () => {
    const a = new EpochSampler({ size: 50, seed: 3, globalBatchSize: 8 });
    for (let i = 0; i < 13; i++) a.next();
    const state = JSON.parse(JSON.stringify(a.state())) as ReturnType<EpochSampler['state']>;
    expect(state).toEqual({ step: 13, size: 50, seed: 3, globalBatchSize: 8, dropLast: true });
    const b = EpochSampler.fromState(state);
    for (let i = 0; i < 20; i++) expect(b.next()).toEqual(a.next());
    expect(() => new EpochSampler({ size: 51, seed: 3, globalBatchSize: 8 }).restore(state)).toThrow(/sampler state size is 50 but this sampler has 51/);
  });

  it('rejects bad options naming the field', () => {
    expect(() => new EpochSampler({ size: 0, seed: 0, globalBatchSize: 1 })).toThrow(/size must be an integer in \[1, 2\^32\), got 0/);
    expect(() => new EpochSampler({ size: 10, seed: -1, globalBatchSize: 1 })).toThrow(/seed must be a non-negative safe integer, got -1/);
    expect(() => new EpochSampler({ size: 10, seed: 0, globalBatchSize: 2.5 })).toThrow(/globalBatchSize must be a positive integer, got 2.5/);
    expect(() => new EpochSampler({ size: 10, seed: 0, globalBatchSize: 11 })).toThrow(/globalBatchSize \(11\) must not exceed the dataset size \(10\)/);
    expect(() => new EpochSampler({ size: 10, seed: 0, globalBatchSize: 2 }).batchAt(-1)).toThrow(/step must be a non-negative integer, got -1/);
  });
});
