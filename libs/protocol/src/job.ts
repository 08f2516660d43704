import { z } from 'zod';
import { bytesPerElement, CHECKSUM_ALGORITHMS, TENSOR_ENCODINGS } from './encoding.js';
import { PayloadError } from './errors.js';
import { MAX_SHARDS } from './shards.js';
import { formatIssues } from './issues.js';

/**
 * Bumped on any incompatible change of the messages below; both sides refuse other versions.
 * 2: loss totals keyed by objective name (pre-training's mlm / mim / itm, or one downstream task's objective).
 * 3: a job may carry several micro-batches (`microBatch`: samples per micro-batch), and gradients may travel as
 *    `fx53` (exact fixed point): a version-2 worker must refuse such jobs by their version, not by a field it lacks.
 * 4: parameters and gradients travel as one blob per shard (`params`, `grads`: `training.shards` blob references, by
 *    `shardRanges`), and a contribution says how many bytes its worker moved for it (`transfer`).
 * 5: a job of several micro-batches may ask for f32 or bf16 (summed in order on the worker), not only fx53: a
 *    version-4 worker would refuse such a job's payload, so it must refuse it by its version.
 */
export const PROTOCOL_VERSION = 5;

const count = z.number().int().nonnegative();
const nonNegative = z.number().nonnegative();
const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex characters (a SHA-256)');

/** Where a tensor lives in Redis: chunked keys `<key>:<i>`, spread over `stores` Redis instances. */
export const BlobRefSchema = z
  .object({
    key: z.string().min(1).max(512),
    encoding: z.enum(TENSOR_ENCODINGS),
    elements: count,
    bytes: count,
    chunkBytes: z.number().int().positive().max(512 * 2 ** 20),
    chunks: count,
    stores: z.number().int().positive(),
    checksum: z.string().regex(new RegExp(`^(${CHECKSUM_ALGORITHMS.join('|')}):[0-9a-f]+$`), 'expected "crc32:<hex>" or "sha256:<hex>"'),
  })
  .strict()
  .refine((r) => r.bytes === r.elements * bytesPerElement(r.encoding), { message: 'bytes must equal elements × bytes per element of the encoding', path: ['bytes'] })
  .refine((r) => r.chunks === Math.ceil(r.bytes / r.chunkBytes), { message: 'chunks must equal ceil(bytes / chunkBytes)', path: ['chunks'] });
export type BlobRef = z.infer<typeof BlobRefSchema>;

/**
 * The objectives a run can train, named as the official code's `loss_names`: pre-training's masked language
 * modelling, masked image modelling and image–text matching, and the downstream tasks' VQA, classification and
 * image–text retrieval. A run trains a fixed subset (pre-training: mlm, mim, itm; fine-tuning: one task's).
 */
export const OBJECTIVES = ['mlm', 'mim', 'itm', 'vqa', 'cls', 'irtr'] as const;
export type Objective = (typeof OBJECTIVES)[number];

/**
 * Per-objective totals: the global counts N_o a micro-batch's summed losses are divided by (`computeGradients` of @m3ae/model), the
 * summed losses S_o, the item counts, the correct predictions. Objectives a run does not train are absent.
 */
export const ObjectiveTotalsSchema = z.partialRecord(z.enum(OBJECTIVES), nonNegative);
export type ObjectiveTotals = Partial<Record<Objective, number>>;

/** Pre-training's three totals (always all present). */
export type LossTriple = { mlm: number; mim: number; itm: number };

/** Pre-training's view of totals: mlm, mim and itm, 0 where absent. */
export function pretrainTotals(t: ObjectiveTotals): LossTriple {
  return { mlm: t.mlm ?? 0, mim: t.mim ?? 0, itm: t.itm ?? 0 };
}

/** The objectives present in any of the totals, in canonical order. */
export function objectivesOf(...totals: readonly ObjectiveTotals[]): Objective[] {
  return OBJECTIVES.filter((o) => totals.some((t) => t[o] !== undefined));
}

/** Whether two totals agree on every objective (an absent objective counts as 0). */
export function sameTotals(a: ObjectiveTotals, b: ObjectiveTotals): boolean {
  return objectivesOf(a, b).every((o) => (a[o] ?? 0) === (b[o] ?? 0));
}

/** Adds `b` into `a` objective by objective. */
export function addTotals(a: ObjectiveTotals, b: ObjectiveTotals): void {
  for (const o of objectivesOf(b)) a[o] = (a[o] ?? 0) + (b[o] ?? 0);
}

/**
 * The fields that name a job, first in both the job and the contribution that answers it (which echoes them);
 * spread rather than extended, so that both keep their field order (and so the order of their parse errors).
 */
const jobIdentity = {
  protocol: z.literal(PROTOCOL_VERSION),
  runId: z.string().min(1),
  incarnation: z.string().min(1),
  step: count,
  version: count,
  jobIndex: count,
};

/**
 * One micro-batch of one step: what a worker needs to compute its gradient, and nothing heavier — sample
 * indices and their positions in the global batch, never tensors and never file paths (the worker reads the
 * dataset named by its own configuration). `copy` numbers redeliveries and backup copies of the same
 * micro-batch; the coordinator counts whichever valid copy arrives first.
 */
export const MicroBatchJobSchema = z
  .object({
    ...jobIdentity,
    jobCount: z.number().int().positive(),
    copy: count,
    seed: count,
    globalBatchSize: z.number().int().positive(),
    indices: z.array(count).min(1),
    positions: z.array(count).min(1),
    normalizers: ObjectiveTotalsSchema,
    manifestHash: hex64,
    datasetHash: z.string().optional(),
    /** The parameters of `version`, one f32 blob per shard (`shardRanges(paramCount, params.length)`). */
    params: z.array(BlobRefSchema).min(1).max(MAX_SHARDS),
    gradEncoding: z.enum(TENSOR_ENCODINGS),
    /**
     * Present when the job carries several micro-batches: samples per micro-batch. The computer computes
     * indices[0, m), [m, 2m), … one by one and sums their gradients into one contribution: in f32 in that order, or
     * exactly (fx53).
     */
    microBatch: z.number().int().positive().optional(),
  })
  .strict()
  .refine((j) => j.indices.length === j.positions.length, { message: 'positions must have one entry per index', path: ['positions'] })
  .refine((j) => j.jobIndex < j.jobCount, { message: 'jobIndex must be below jobCount', path: ['jobIndex'] })
  .refine((j) => j.positions.every((p) => p < j.globalBatchSize), { message: 'every position must be below globalBatchSize', path: ['positions'] })
  .refine((j) => j.params.every((p) => p.encoding === 'f32'), { message: 'parameters travel as f32', path: ['params'] });
export type MicroBatchJob = z.infer<typeof MicroBatchJobSchema>;

/** Wall-clock milliseconds a worker spent on the parts of one job (for the step-time breakdown). */
export const JobTimingsSchema = z
  .object({ fetchMs: nonNegative, computeMs: nonNegative, encodeMs: nonNegative, uploadMs: nonNegative, totalMs: nonNegative })
  .strict();
export type JobTimings = z.infer<typeof JobTimingsSchema>;

/**
 * A worker's answer to one job copy, pushed to the run's results list after its gradient blob is stored.
 * Echoes the job's identity (step, version, incarnation, manifest) so the coordinator can refuse anything
 * that does not belong to the step it is reducing.
 */
export const ContributionSchema = z
  .object({
    ...jobIdentity,
    copy: count,
    workerId: z.string().min(1).max(200),
    manifestHash: hex64,
    /** The gradient, one blob per shard of the job's parameters, in the job's `gradEncoding`. */
    grads: z.array(BlobRefSchema).min(1).max(MAX_SHARDS),
    sums: ObjectiveTotalsSchema,
    counts: ObjectiveTotalsSchema,
    correct: ObjectiveTotalsSchema,
    /** Real (non-padding) text tokens the micro-batch read, when the computer counts them (throughput). */
    tokens: count.optional(),
    timings: JobTimingsSchema,
    /** Bytes this worker read from (parameters; 0 when it had them) and wrote to Redis (the gradient) for this job. */
    transfer: z.object({ readBytes: count, writtenBytes: count }).strict(),
  })
  .strict();
export type Contribution = z.infer<typeof ContributionSchema>;

function parseWith<T>(schema: z.ZodType<T>, what: string, data: unknown): T {
  const r = schema.safeParse(data, { reportInput: true });
  if (r.success) return r.data;
  throw new PayloadError(`invalid ${what}: ${formatIssues(r.error.issues, new Map(), data).join('; ')}`);
}

/** Validates a job payload; the error names every bad field, its value and what was expected. */
export function parseMicroBatchJob(data: unknown): MicroBatchJob {
  return parseWith(MicroBatchJobSchema, 'micro-batch job', data);
}

export function parseContribution(data: unknown): Contribution {
  return parseWith(ContributionSchema, 'contribution', data);
}

/** Identifies a parameter vector's content by its shard blobs' checksums (a computer reloads when it changes). */
export function paramsIdentity(params: readonly Pick<BlobRef, 'checksum'>[]): string {
  return params.map((p) => p.checksum).join('+');
}

export function parseBlobRef(data: unknown): BlobRef {
  return parseWith(BlobRefSchema, 'blob reference', data);
}
