import { describe, expect, it } from 'vitest';
import { describeJsProfile, profileJs } from './js-profile.js';

/** Busy work that the profiler must find by name. */
function spinForAWhile(ms: number): number {
  const end = performance.now() + ms;
  let x = 0;
  while (performance.now() < end) for (let i = 0; i < 100_000; i++) x = (x * 1664525 + i) % 4294967296;
  return x;
}

describe('profileJs', () => {
  it('finds where the main thread spends its time, per call, and leaves idle waits out', async () => {
    const p = await profileJs(async () => {
      spinForAWhile(60);
      await new Promise((r) => setTimeout(r, 60)); // idle: not the thread's time
    }, 3);
    expect(p.msPerCall).toBeGreaterThan(30);
    expect(p.msPerCall).toBeLessThan(150);
    const [top] = p.byFunction;
    expect(top?.[0]).toMatch(/^spinForAWhile \(tools\/src:\d+\)$/);
    expect(top?.[1]).toBeGreaterThan(25);
    const lines = describeJsProfile(p, 'a test');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toContain('spinForAWhile');
  });
});
