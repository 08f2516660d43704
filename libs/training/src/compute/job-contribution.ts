import { addEncodedInto, addTotals, encodeTensor, fixedBytes, quantizeInto, type ObjectiveTotals, type TensorEncoding } from '@m3ae/protocol';
import type { ComputeJob } from '../gradient-source.js';
import type { GradientComputer } from './gradient-computer.js';

/** A job's gradient contribution as it goes on the wire, with its loss totals. */
export interface JobContribution {
  bytes: Uint8Array;
  encoding: TensorEncoding;
  /** Gradient values (the parameter count). */
  elements: number;
  sums: ObjectiveTotals;
  counts: ObjectiveTotals;
  correct: ObjectiveTotals;
  /** Real text tokens read (absent when the computer does not count them). */
  tokens?: number | undefined;
  /** Milliseconds spent computing gradients, and encoding (quantizing and summing) them. */
  computeMs: number;
  encodeMs: number;
}

/**
 * Computes one job and encodes its contribution — the one place a worker or the in-process source turns a job into
 * what the reducer adds. A job of one micro-batch is computed in one pass and encoded as `job.gradEncoding`; a job
 * with `microBatch` set is computed one micro-batch (`microBatch` samples) at a time and summed on the worker:
 * - fx53: each gradient quantized and added exactly into one fixed-point sum, so the step's total does not depend on
 *   how micro-batches were grouped into jobs (the same bits as one micro-batch per job);
 * - f32 / bf16: the gradients summed in float32 in micro-batch order, then encoded once. A job's micro-batches are fixed
 *   by the run (`jobsPerStep`), not by the worker count, so the parameters still do not depend on how many workers
 *   ran; they do depend on `microBatchesPerJob` (another grouping rounds differently).
 * Loss totals are added micro-batch by micro-batch (reported only; the parameters never depend on them).
 */
export async function computeContribution(computer: GradientComputer, job: ComputeJob, params: Float32Array): Promise<JobContribution> {
  const m = job.microBatch ?? job.indices.length;
  const out = { sums: {} as ObjectiveTotals, counts: {} as ObjectiveTotals, correct: {} as ObjectiveTotals, tokens: 0 as number | undefined, computeMs: 0, encodeMs: 0 };
  let acc: Float64Array | undefined;
  let acc32: Float32Array | undefined;
  let single: Uint8Array | undefined;
  for (let start = 0; start < job.indices.length; start += m) {
    const slice = m >= job.indices.length ? job : { ...job, indices: job.indices.slice(start, start + m), positions: job.positions.slice(start, start + m) };
    const tc = performance.now();
    const r = await computer.compute(slice, params);
    const te = performance.now();
    if (r.grads.length !== computer.paramCount) throw new Error(`step ${job.step} job ${job.jobIndex}: the computer returned ${r.grads.length} gradient values; expected ${computer.paramCount}`);
    if (m >= job.indices.length) single = encodeTensor(r.grads, job.gradEncoding);
    else if (job.gradEncoding === 'fx53') quantizeInto((acc ??= new Float64Array(r.grads.length)), r.grads);
    else if (acc32 === undefined) acc32 = r.grads; // the computer's own new array: the sum starts in it, no copy
    else addEncodedInto(acc32, new Uint8Array(r.grads.buffer, r.grads.byteOffset, r.grads.byteLength), 'f32');
    out.computeMs += te - tc;
    out.encodeMs += performance.now() - te;
    addTotals(out.sums, r.sums);
    addTotals(out.counts, r.counts);
    addTotals(out.correct, r.correct);
    out.tokens = out.tokens === undefined || r.tokens === undefined ? undefined : out.tokens + r.tokens;
  }
  const bytes = single ?? (acc32 ? encodeTensor(acc32, job.gradEncoding) : fixedBytes(acc as Float64Array));
  return { ...out, bytes, encoding: job.gradEncoding, elements: computer.paramCount };
}

