import { describe, expect, it } from 'vitest';
import { SkipLog } from './skip-log.js';

describe('SkipLog', () => {
  it('counts exactly by reason while keeping only the first maxEntries entries', () => {
    const log = new SkipLog({ maxEntries: 3 });
    for (let i = 1; i <= 5; i++) log.skip('missing-image', 'a.txt', i, `img ${i}`);
    log.skip('too-short-text', 'b.txt', 9, 'two words');
    expect(log.counts()).toEqual({ 'missing-image': 5, 'too-short-text': 1 });
    expect(log.total).toBe(6);
    expect(log.entries.map((e) => e.line)).toEqual([1, 2, 3]);
    expect(log.entries[0]).toEqual({ reason: 'missing-image', file: 'a.txt', line: 1, detail: 'img 1' });
    expect(log.droppedEntries).toBe(3);
  });

  it('reports no reason it has not seen', () => {
    expect(new SkipLog().counts()).toEqual({});
  });

  it('merges logs (e.g. from worker threads through JSON) keeping counts exact', () => {
    const a = new SkipLog({ maxEntries: 2 });
    a.skip('duplicate-id', 'x', 1, 'X');
    const b = new SkipLog({ maxEntries: 1 });
    b.skip('duplicate-id', 'y', 2);
    b.skip('malformed-line', 'y', 3);
    const json = JSON.parse(JSON.stringify(b)) as ReturnType<SkipLog['toJSON']>;
    a.merge(json);
    expect(a.counts()).toEqual({ 'duplicate-id': 2, 'malformed-line': 1 });
    expect(a.entries).toHaveLength(2);
    expect(a.droppedEntries).toBe(1);
    expect(SkipLog.fromJSON(a.toJSON()).counts()).toEqual(a.counts());
  });

  it('rejects a bad cap with the value in the message', () => {
    expect(() => new SkipLog({ maxEntries: -1 })).toThrow(/maxEntries.*-1/);
  });
});
