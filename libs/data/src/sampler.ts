import { seededPermutation } from './rng.js';

export interface EpochSamplerOptions {
  /** Samples in the dataset. */
  size: number;
  seed: number;
  /** G: samples per optimisation step, over all workers together. */
  globalBatchSize: number;
  /**
   * Drop the incomplete last batch of each epoch, so every step has exactly G samples (what the exact
   * micro-batch gradients and ITM's floor(G/2) positives assume). With false the last step of an epoch is short.
   * @defaultValue true
   */
  dropLast?: boolean;
}

/** One global batch: dataset indices in batch order and their positions 0..n-1 within the global batch. */
export interface GlobalBatch {
  step: number;
  epoch: number;
  indices: Uint32Array;
  positions: Uint32Array;
}

/** What a checkpoint stores; `restore` refuses a state written for another dataset or batch size. */
export interface SamplerState {
  step: number;
  size: number;
  seed: number;
  globalBatchSize: number;
  dropLast: boolean;
}

/**
 * Deterministic, resumable sampling (the elastic determinism of MosaicML Streaming): epoch e is one permutation
 * of the dataset from (seed, e); step s takes the fixed slice [k·G, (k+1)·G) of its epoch's permutation. The
 * batch of a step therefore depends on nothing but (size, seed, G, step): not on the number of workers, nor on
 * how the global batch is split into micro-batches, nor on restarts.
 */
export class EpochSampler {
  readonly size: number;
  readonly seed: number;
  readonly globalBatchSize: number;
  readonly dropLast: boolean;
  readonly stepsPerEpoch: number;
  private step = 0;
  private cached: { epoch: number; perm: Uint32Array } | undefined;

  constructor(options: EpochSamplerOptions) {
    const { size, seed, globalBatchSize } = options;
    if (!Number.isInteger(size) || size < 1 || size >= 2 ** 32) throw new RangeError(`size must be an integer in [1, 2^32), got ${String(size)}`);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative safe integer, got ${String(seed)}`);
    if (!Number.isInteger(globalBatchSize) || globalBatchSize < 1) {
      throw new RangeError(`globalBatchSize must be a positive integer, got ${String(globalBatchSize)}`);
    }
    this.dropLast = options.dropLast ?? true;
    if (this.dropLast && globalBatchSize > size) {
      throw new RangeError(`globalBatchSize (${globalBatchSize}) must not exceed the dataset size (${size}) when dropLast is true`);
    }
    this.size = size;
    this.seed = seed;
    this.globalBatchSize = globalBatchSize;
    this.stepsPerEpoch = this.dropLast ? Math.floor(size / globalBatchSize) : Math.ceil(size / globalBatchSize);
  }

  /** The permutation of epoch e (the last one is cached: consecutive steps share it). */
  epochPermutation(epoch: number): Uint32Array {
    if (this.cached?.epoch !== epoch) this.cached = { epoch, perm: seededPermutation(this.size, this.seed, epoch, 0, 'epochPermutation') };
    return this.cached.perm;
  }

  /** The global batch of `step` (pure: does not move the sampler). */
  batchAt(step: number): GlobalBatch {
    if (!Number.isSafeInteger(step) || step < 0) throw new RangeError(`step must be a non-negative integer, got ${String(step)}`);
    const epoch = Math.floor(step / this.stepsPerEpoch);
    const k = step % this.stepsPerEpoch;
    const start = k * this.globalBatchSize;
    const end = Math.min(start + this.globalBatchSize, this.size);
    const indices = this.epochPermutation(epoch).slice(start, end);
    const positions = new Uint32Array(indices.length);
    for (let i = 0; i < positions.length; i++) positions[i] = i;
    return { step, epoch, indices, positions };
  }

  /** The batch at the current step, then advances. */
  next(): GlobalBatch {
    const b = this.batchAt(this.step);
    this.step++;
    return b;
  }

  get currentStep(): number {
    return this.step;
  }

  state(): SamplerState {
    return { step: this.step, size: this.size, seed: this.seed, globalBatchSize: this.globalBatchSize, dropLast: this.dropLast };
  }

  /** Continues exactly where `state` was saved: the next `next()` returns the batch of `state.step`. */
  restore(state: Pick<SamplerState, 'step'> & Partial<SamplerState>): void {
    for (const key of ['size', 'seed', 'globalBatchSize', 'dropLast'] as const) {
      if (state[key] !== undefined && state[key] !== this[key]) {
        throw new RangeError(`sampler state ${key} is ${String(state[key])} but this sampler has ${String(this[key])}`);
      }
    }
    if (!Number.isSafeInteger(state.step) || state.step < 0) throw new RangeError(`sampler state step must be a non-negative integer, got ${String(state.step)}`);
    this.step = state.step;
  }

  static fromState(state: SamplerState): EpochSampler {
    const s = new EpochSampler(state);
    s.restore(state);
    return s;
  }
}
