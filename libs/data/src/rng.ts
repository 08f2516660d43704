/**
 * Counter-based random numbers: every draw is a pure function of (seed, step, sampleIndex, stream, counter),
 * so any process — coordinator, any worker, a resumed run — computes the same numbers for the same sample.
 * The generator is Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
 * 1, 2, 3", SC 2011; the Random123 family also used by cuRAND, JAX and PyTorch's CUDA generator), written
 * with 16-bit partial products so that every intermediate value is an exact integer in a double: the
 * results are bit-identical on every platform and JavaScript engine.
 *
 * Layout of one Philox call: key = (seed low 32 bits, seed high bits), counter = (block, sampleIndex, step,
 * stream). Each call yields four uint32 words.
 */

/**
 * The random streams. The numbers are part of the checkpoint format: never renumber an existing stream
 * (a resumed run would draw different masks), only append.
 */
export const RNG_STREAMS = {
  mlm: 1,
  mim: 2,
  itmNegative: 3,
  dropout: 4,
  itmPermutation: 5,
  epochPermutation: 6,
  augment: 7,
} as const;

export type RngStream = keyof typeof RNG_STREAMS;

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;
const TWO_POW_32 = 4294967296;

/** High 32 bits of the 64-bit product a·b of two uint32 (exact: every partial product is below 2^32). */
function mulHi(a: number, b: number): number {
  const aL = a & 0xffff;
  const aH = a >>> 16;
  const bL = b & 0xffff;
  const bH = b >>> 16;
  const ll = aL * bL;
  const lh = aL * bH;
  const hl = aH * bL;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (aH * bH + (lh >>> 16) + (hl >>> 16) + Math.floor(mid / 65536)) >>> 0;
}

/**
 * One Philox4x32-10 block: 10 rounds over a 128-bit counter with a 64-bit key. Writes four uint32 into
 * `out` (at `offset`). Exported for the known-answer test against the Random123 vectors.
 */
export function philox4x32(
  c0: number,
  c1: number,
  c2: number,
  c3: number,
  k0: number,
  k1: number,
  out: Uint32Array = new Uint32Array(4),
  offset = 0,
): Uint32Array {
  let x0 = c0 >>> 0;
  let x1 = c1 >>> 0;
  let x2 = c2 >>> 0;
  let x3 = c3 >>> 0;
  let key0 = k0 >>> 0;
  let key1 = k1 >>> 0;
  for (let round = 0; round < 10; round++) {
    if (round > 0) {
      key0 = (key0 + W0) >>> 0;
      key1 = (key1 + W1) >>> 0;
    }
    const hi0 = mulHi(M0, x0);
    const lo0 = Math.imul(M0, x0) >>> 0;
    const hi1 = mulHi(M1, x2);
    const lo1 = Math.imul(M1, x2) >>> 0;
    x0 = (hi1 ^ x1 ^ key0) >>> 0;
    x1 = lo1;
    x2 = (hi0 ^ x3 ^ key1) >>> 0;
    x3 = lo0;
  }
  out[offset] = x0;
  out[offset + 1] = x1;
  out[offset + 2] = x2;
  out[offset + 3] = x3;
  return out;
}

function checkUint32(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 0 || value >= TWO_POW_32) {
    throw new RangeError(`${name} must be an integer in [0, 2^32), got ${String(value)}`);
  }
  return value;
}

function checkSeed(seed: number): [number, number] {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RangeError(`seed must be a non-negative safe integer, got ${String(seed)}`);
  }
  return [seed >>> 0, Math.floor(seed / TWO_POW_32) >>> 0];
}

function streamId(stream: RngStream | number): number {
  if (typeof stream === 'number') return checkUint32('stream', stream);
  const id = (RNG_STREAMS as Record<string, number>)[stream];
  if (id === undefined) throw new RangeError(`stream must be one of ${Object.keys(RNG_STREAMS).join(', ')}, got ${JSON.stringify(stream)}`);
  return id;
}

/**
 * A sequential view of one (seed, step, sampleIndex, stream) address: word i of the stream is word i % 4
 * of Philox block floor(i / 4). Cheap to create; creating two with the same address gives the same words.
 */
export class CounterRng {
  private readonly k0: number;
  private readonly k1: number;
  private readonly c1: number;
  private readonly c2: number;
  private readonly c3: number;
  private readonly buf = new Uint32Array(4);
  private block = 0;
  private used = 4;

  constructor(seed: number, step: number, sampleIndex: number, stream: RngStream | number) {
    [this.k0, this.k1] = checkSeed(seed);
    this.c1 = checkUint32('sampleIndex', sampleIndex);
    this.c2 = checkUint32('step', step);
    this.c3 = streamId(stream);
  }

  /** The four words of block `block` of this address, without moving the sequential position. */
  blockAt(block: number, out: Uint32Array = new Uint32Array(4)): Uint32Array {
    return philox4x32(block, this.c1, this.c2, this.c3, this.k0, this.k1, out);
  }

  nextUint32(): number {
    if (this.used === 4) {
      philox4x32(this.block++, this.c1, this.c2, this.c3, this.k0, this.k1, this.buf);
      this.used = 0;
    }
    return this.buf[this.used++] as number;
  }

  /** Uniform in [0, 1) with 24 random bits: exactly representable as float32, never rounds up to 1. */
  nextFloat(): number {
    return (this.nextUint32() >>> 8) / 16777216;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  nextDouble(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n), unbiased (rejection of the incomplete top range). */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_POW_32) throw new RangeError(`n must be an integer in [1, 2^32], got ${String(n)}`);
    const limit = TWO_POW_32 - (TWO_POW_32 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }
}

/** `count` uniforms in [0, 1) (float32-exact) for one (seed, step, sampleIndex, stream) address. */
export function hashUniforms(seed: number, step: number, sampleIndex: number, stream: RngStream | number, count: number): Float32Array {
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`count must be a non-negative integer, got ${String(count)}`);
  const rng = new CounterRng(seed, step, sampleIndex, stream);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = rng.nextFloat();
  return out;
}

/** One uint32 seed for (seed, step, sampleIndex, stream), e.g. the per-sample dropout seed. */
export function sampleSeed(seed: number, step: number, sampleIndex: number, stream: RngStream | number): number {
  return new CounterRng(seed, step, sampleIndex, stream).nextUint32();
}

/** A Fisher–Yates permutation of 0..n-1 driven by `rng` (Durstenfeld's in-place form, from the top). */
export function permutation(n: number, rng: CounterRng): Uint32Array {
  if (!Number.isInteger(n) || n < 0 || n > TWO_POW_32) throw new RangeError(`n must be an integer in [0, 2^32], got ${String(n)}`);
  const perm = new Uint32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    const t = perm[i] as number;
    perm[i] = perm[j] as number;
    perm[j] = t;
  }
  return perm;
}

/** The permutation of 0..n-1 for one (seed, step, sampleIndex, stream) address. */
export function seededPermutation(n: number, seed: number, step: number, sampleIndex: number, stream: RngStream | number): Uint32Array {
  return permutation(n, new CounterRng(seed, step, sampleIndex, stream));
}
