/**
 * Small deterministic integer hashing used by the model for the only randomness it owns: parameter
 * initialisation (from the model seed) and dropout masks (from the per-sample `dropoutSeeds` of a batch).
 * Plain 32-bit integer arithmetic (Math.imul), so results are identical on every engine and backend.
 */

/** A 32-bit avalanche hash ("lowbias32", C. Wellons' hash-prospector). */
export function hash32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Combines words into one 32-bit key (order matters). */
export function hashWords(...words: number[]): number {
  let h = 0x3c6ef372;
  for (const w of words) h = hash32((h ^ hash32(w >>> 0)) + 0x9e3779b9);
  return h;
}

/** A seeded stream of uniforms in [0, 1) (a counter hashed with the key). */
export class HashStream {
  private counter = 0;
  constructor(private readonly key: number) {}

  uniform(): number {
    const c = this.counter++;
    // 2 × 26 bits → a 52-bit mantissa, so 1 − u never rounds to 0 (Box–Muller needs log(u) finite).
    const hi = hash32(this.key ^ hash32(2 * c)) >>> 6;
    const lo = hash32(this.key ^ hash32(2 * c + 1)) >>> 6;
    return (hi * 67108864 + lo) / 4503599627370496;
  }

  /** Standard normal (Box–Muller; the second value is discarded for simplicity). */
  normal(): number {
    const u = 1 - this.uniform();
    const v = this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
}
