import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { PythonRandom } from './python-random.js';

// Reference values printed by CPython 3.11: `random.seed(s); random.shuffle(x)` / `random.getrandbits(32)`.
describe('PythonRandom', () => {
  it('matches CPython for seed 42 (the official MedICaT split seed)', () => {
    expect(new PythonRandom(42).shuffle([...Array(10).keys()])).toEqual([7, 3, 2, 8, 5, 6, 9, 4, 0, 1]);
    const r = new PythonRandom(42);
    expect([r.nextUint32(), r.nextUint32(), r.nextUint32()]).toEqual([2746317213, 478163327, 107420369]);
    const big = new PythonRandom(42).shuffle([...Array(2500).keys()]);
    expect(big.slice(0, 5)).toEqual([1767, 417, 2159, 2257, 1223]);
    expect(big.slice(-5)).toEqual([914, 1003, 1126, 102, 456]);
  });

  it('matches CPython for a seed wider than 32 bits', () => {
    expect(new PythonRandom(2 ** 40 + 7).shuffle([...Array(20).keys()])).toEqual([
      17, 0, 10, 3, 1, 2, 9, 12, 7, 13, 5, 11, 14, 6, 16, 4, 8, 15, 18, 19,
    ]);
  });

  let python: string | undefined;
  try {
    execFileSync('python3', ['-c', 'pass']);
    python = 'python3';
  } catch {
    python = undefined;
  }
  it.skipIf(!python)('matches a live CPython on random seeds and lengths', () => {
    const cases = [
      [7, 1],
      [123456789, 3000],
      [2 ** 33 + 1, 517],
      [0, 64],
    ] as const;
    for (const [seed, n] of cases) {
      const out = execFileSync('python3', ['-c', `import random,json\nrandom.seed(${seed})\nx=list(range(${n}))\nrandom.shuffle(x)\nprint(json.dumps(x))`], {
        encoding: 'utf8',
      });
      expect(new PythonRandom(seed).shuffle([...Array(n).keys()])).toEqual(JSON.parse(out));
    }
  });
});
