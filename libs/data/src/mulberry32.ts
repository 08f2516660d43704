// Internal (not in the barrel): the lib's small non-counter generator, for draws where a seed per item is enough.

/** mulberry32: small and fast; for the phantom corpus's pictures and wording and the few draws of one crop. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
