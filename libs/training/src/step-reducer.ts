import { addEncodedInto, addFixedInto, addTotals, fixedToF32, type ObjectiveTotals, type TensorEncoding } from '@m3ae/protocol';

interface Pending {
  bytes: Uint8Array;
  encoding: TensorEncoding;
  sums: ObjectiveTotals;
  counts: ObjectiveTotals;
  correct: ObjectiveTotals;
  tokens?: number | undefined;
}

/**
 * Exactly-once, in-order reduction of one step. Each micro-batch k is counted once (the first valid result);
 * contributions are added to the sum strictly in micro-batch order 0, 1, 2, … — a result that arrives early
 * waits (encoded, in memory) until its predecessors are in. The float sum is therefore the same whatever
 * the arrival order, the number of workers or the copies that raced.
 *
 * `fx53` contributions (exact fixed point) are added on arrival into an integer accumulator instead — integer sums
 * do not depend on the order — and converted to f32 once, when the step is complete; their loss totals are still
 * added in job order. A step's contributions all have one encoding.
 */
export class OrderedReducer {
  readonly sum: Float32Array;
  readonly sums: ObjectiveTotals = {};
  readonly counts: ObjectiveTotals = {};
  readonly correct: ObjectiveTotals = {};
  /** Real text tokens of the counted micro-batches (undefined when a contribution did not count them). */
  tokens: number | undefined = 0;
  private readonly accepted: boolean[];
  private readonly pending = new Map<number, Pending>();
  private next = 0;
  private encoding: TensorEncoding | undefined;
  /** The exact sum of `fx53` contributions, in quanta (allocated by the first one). */
  private fixed: Float64Array | undefined;
  /** Milliseconds spent adding gradients. */
  reduceMs = 0;

  constructor(
    readonly jobCount: number,
    paramCount: number,
  ) {
    this.sum = new Float32Array(paramCount);
    this.accepted = new Array<boolean>(jobCount).fill(false);
  }

  has(jobIndex: number): boolean {
    return this.accepted[jobIndex] === true;
  }

  get acceptedCount(): number {
    return this.accepted.filter(Boolean).length;
  }

  get complete(): boolean {
    return this.next === this.jobCount;
  }

  /** Micro-batches not yet counted. */
  missing(): number[] {
    const out: number[] = [];
    this.accepted.forEach((a, k) => !a && out.push(k));
    return out;
  }

  /** Counts micro-batch `jobIndex` (must not be counted yet) and folds in every contribution now in order. */
  add(jobIndex: number, contribution: Pending): void {
    if (this.has(jobIndex)) throw new Error(`micro-batch ${jobIndex} is already counted`);
    if (this.encoding !== undefined && contribution.encoding !== this.encoding) {
      throw new Error(`micro-batch ${jobIndex} is ${contribution.encoding}-encoded; this step's contributions are ${this.encoding}`);
    }
    const t = performance.now();
    if (contribution.encoding === 'fx53') {
      addFixedInto((this.fixed ??= new Float64Array(this.sum.length)), contribution.bytes);
      contribution = { ...contribution, bytes: new Uint8Array(0) };
    }
    this.encoding = contribution.encoding;
    this.accepted[jobIndex] = true;
    this.pending.set(jobIndex, contribution);
    for (let c = this.pending.get(this.next); c; c = this.pending.get(this.next)) {
      if (c.encoding !== 'fx53') addEncodedInto(this.sum, c.bytes, c.encoding);
      addTotals(this.sums, c.sums);
      addTotals(this.counts, c.counts);
      addTotals(this.correct, c.correct);
      this.tokens = this.tokens === undefined || c.tokens === undefined ? undefined : this.tokens + c.tokens;
      this.pending.delete(this.next);
      this.next++;
    }
    if (this.complete && this.fixed) fixedToF32(this.fixed, this.sum);
    this.reduceMs += performance.now() - t;
  }
}
