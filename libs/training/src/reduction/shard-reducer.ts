import { gradientSquares, type AdamW, type AdamWPlan } from '@m3ae/model/adamw';
import { addEncodedInto, addFixedInto, bytesPerElement, BlobError, fixedToF32, type BlobRef, type BlobStore, type ShardRange, type TensorEncoding } from '@m3ae/protocol';

/** Where a job's part of this shard comes from: bytes in memory (in process) or a blob in Redis (a worker's). */
export type ShardSource = { bytes: Uint8Array; encoding: TensorEncoding } | { ref: BlobRef };

/** What reading one staged part cost. */
export interface StageCost {
  readBytes: number;
  fetchMs: number;
}

/**
 * One shard of a step's reduction and of the optimizer update: elements [start, end) of the flat vector. It holds the
 * shard's gradient sum, adds the step's contributions to it in job order — f32/bf16 strictly in order (an early part
 * waits until its predecessors are in), fx53 exactly as they are committed (integer sums do not depend on the order) —
 * and applies the run's AdamW to its range of the shared parameters and moments. Whether it runs in the coordinator's
 * thread or in a thread of its own, the bits are the same: nothing here depends on timing or on the other shards.
 *
 * A job's part is first *staged* (read and verified: element count, checksum, finite values), then *committed* once
 * every shard has staged it — or *dropped* if one could not: a contribution counts in all shards or in none.
 */
export class ShardReducer {
  readonly length: number;
  private sum: Float32Array;
  private fixed: Float64Array | undefined;
  private readonly staged = new Map<number, { bytes: Uint8Array; encoding: TensorEncoding }>();
  private readonly waiting = new Map<number, { bytes: Uint8Array; encoding: TensorEncoding }>();
  private next = 0;
  private jobCount = 0;
  private encoding: TensorEncoding | undefined;

  constructor(
    readonly range: ShardRange,
    private readonly params: Float32Array,
    private readonly optimizer: AdamW,
    private readonly blobs?: BlobStore | undefined,
  ) {
    this.length = range.end - range.start;
    this.sum = new Float32Array(this.length);
  }

  /** The shard's gradient sum so far (complete after {@link finish}; clipped in place by {@link apply}). */
  get gradient(): Float32Array {
    return this.sum;
  }

  /** A new step of `jobCount` jobs: the sum starts from zero. */
  begin(jobCount: number): void {
    this.sum = new Float32Array(this.length);
    this.fixed = undefined;
    this.staged.clear();
    this.waiting.clear();
    this.next = 0;
    this.jobCount = jobCount;
    this.encoding = undefined;
  }

  /** Reads (from Redis) and verifies job `k`'s part; throws a {@link BlobError} naming the fault. */
  async stage(k: number, source: ShardSource): Promise<StageCost> {
    const t = performance.now();
    let part: { bytes: Uint8Array; encoding: TensorEncoding };
    let readBytes = 0;
    if ('ref' in source) {
      if (!this.blobs) throw new Error(`shard ${this.range.index}: a blob reference was staged, but this reducer has no Redis connection`);
      part = { bytes: await this.blobs.getEncoded(source.ref, { expectElements: this.length, requireFinite: true }), encoding: source.ref.encoding };
      readBytes = source.ref.bytes;
    } else {
      const want = this.length * bytesPerElement(source.encoding);
      if (source.bytes.byteLength !== want) throw new BlobError('length', `shard ${this.range.index} of job ${k}: ${source.bytes.byteLength} bytes; expected ${want} (${this.length} ${source.encoding} values)`);
      part = source;
    }
    this.staged.set(k, part);
    return { readBytes, fetchMs: performance.now() - t };
  }

  /** Counts job `k`'s staged part; returns the milliseconds spent adding. */
  commit(k: number): number {
    const part = this.staged.get(k);
    if (!part) throw new Error(`shard ${this.range.index}: job ${k} was not staged`);
    this.staged.delete(k);
    if (this.encoding !== undefined && part.encoding !== this.encoding) throw new Error(`shard ${this.range.index}: job ${k} is ${part.encoding}-encoded; this step's contributions are ${this.encoding}`);
    this.encoding = part.encoding;
    const t = performance.now();
    if (part.encoding === 'fx53') {
      addFixedInto((this.fixed ??= new Float64Array(this.length)), part.bytes);
      this.waiting.set(k, { bytes: new Uint8Array(0), encoding: part.encoding });
    } else this.waiting.set(k, part);
    for (let c = this.waiting.get(this.next); c; c = this.waiting.get(this.next)) {
      if (c.encoding !== 'fx53') addEncodedInto(this.sum, c.bytes, c.encoding);
      this.waiting.delete(this.next);
      this.next++;
    }
    return performance.now() - t;
  }

  /** Forgets job `k`'s staged part (another shard could not read its own). */
  drop(k: number): void {
    this.staged.delete(k);
  }

  /** Every job is counted: the shard's squared gradient norm by block (fx53 sums are converted to f32 first). */
  finish(): Float64Array {
    if (this.next !== this.jobCount) throw new Error(`shard ${this.range.index}: ${this.jobCount - this.next} job(s) not yet added`);
    if (this.fixed) fixedToF32(this.fixed, this.sum);
    this.fixed = undefined;
    return gradientSquares(this.sum, 0, this.length);
  }

  /** Applies the step's planned update to this shard's parameters and moments. */
  apply(plan: AdamWPlan): void {
    this.optimizer.applyRange(this.params, this.sum, this.range.start, this.range.end, plan, this.range.start);
  }

  /** Copies of the shard's range of the parameters and moments. */
  state(): { params: Float32Array; m: Float32Array; v: Float32Array } {
    const { start, end } = this.range;
    const { m, v } = this.optimizer.moments;
    return { params: this.params.slice(start, end), m: m.slice(start, end), v: v.slice(start, end) };
  }

  /** Sets the shard's range of the parameters and moments. */
  restore(state: { params: Float32Array; m: Float32Array; v: Float32Array }): void {
    const { start, end } = this.range;
    for (const [name, x] of Object.entries(state)) if (x.length !== end - start) throw new Error(`shard ${this.range.index}: ${name} of ${x.length} values; expected ${end - start}`);
    const { m, v } = this.optimizer.moments;
    this.params.set(state.params, start);
    m.set(state.m, start);
    v.set(state.v, start);
  }

  /** Stores this shard's parameters as the blob `key` (f32); returns its reference and the bytes written. */
  async publish(key: string): Promise<{ ref: BlobRef; writtenBytes: number }> {
    if (!this.blobs) throw new Error(`shard ${this.range.index}: cannot publish parameters without a Redis connection`);
    const ref = await this.blobs.putTensor(key, this.params.subarray(this.range.start, this.range.end), 'f32');
    return { ref, writtenBytes: ref.bytes };
  }
}
