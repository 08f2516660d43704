import { z } from 'zod';
import { CHECKSUM_ALGORITHMS, TENSOR_ENCODINGS } from './encoding.js';
import { PayloadError } from './errors.js';
import { formatIssues } from './issues.js';

/** Bumped on any incompatible change of the messages below; both sides refuse other versions. */
export const PROTOCOL_VERSION = 1;

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
  .refine((r) => r.bytes === r.elements * (r.encoding === 'f32' ? 4 : 2), { message: 'bytes must equal elements × bytes per element of the encoding', path: ['bytes'] })
  .refine((r) => r.chunks === Math.ceil(r.bytes / r.chunkBytes), { message: 'chunks must equal ceil(bytes / chunkBytes)', path: ['chunks'] });
export type BlobRef = z.infer<typeof BlobRefSchema>;

/** Global counts N_o that the summed losses of a micro-batch are divided by (contracts §3). */
export const LossTripleSchema = z.object({ mlm: nonNegative, mim: nonNegative, itm: nonNegative }).strict();
export type LossTriple = z.infer<typeof LossTripleSchema>;

/**
 * One micro-batch of one step: what a worker needs to compute its gradient, and nothing heavier — sample
 * indices and their positions in the global batch, never tensors and never file paths (the worker reads the
 * dataset named by its own configuration). `copy` numbers redeliveries and backup copies of the same
 * micro-batch; the coordinator counts whichever valid copy arrives first.
 */
export const MicroBatchJobSchema = z
  .object({
    protocol: z.literal(PROTOCOL_VERSION),
    runId: z.string().min(1),
    incarnation: z.string().min(1),
    step: count,
    version: count,
    jobIndex: count,
    jobCount: z.number().int().positive(),
    copy: count,
    seed: count,
    globalBatchSize: z.number().int().positive(),
    indices: z.array(count).min(1),
    positions: z.array(count).min(1),
    normalizers: LossTripleSchema,
    manifestHash: hex64,
    datasetHash: z.string().optional(),
    params: BlobRefSchema,
    gradEncoding: z.enum(TENSOR_ENCODINGS),
  })
  .strict()
  .refine((j) => j.indices.length === j.positions.length, { message: 'positions must have one entry per index', path: ['positions'] })
  .refine((j) => j.jobIndex < j.jobCount, { message: 'jobIndex must be below jobCount', path: ['jobIndex'] })
  .refine((j) => j.positions.every((p) => p < j.globalBatchSize), { message: 'every position must be below globalBatchSize', path: ['positions'] })
  .refine((j) => j.params.encoding === 'f32', { message: 'parameters travel as f32', path: ['params', 'encoding'] });
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
    protocol: z.literal(PROTOCOL_VERSION),
    runId: z.string().min(1),
    incarnation: z.string().min(1),
    step: count,
    version: count,
    jobIndex: count,
    copy: count,
    workerId: z.string().min(1).max(200),
    manifestHash: hex64,
    grad: BlobRefSchema,
    sums: LossTripleSchema,
    counts: LossTripleSchema,
    correct: z.object({ mlm: nonNegative, itm: nonNegative }).strict(),
    timings: JobTimingsSchema,
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

export function parseBlobRef(data: unknown): BlobRef {
  return parseWith(BlobRefSchema, 'blob reference', data);
}
