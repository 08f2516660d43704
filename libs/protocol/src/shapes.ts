import type { JobTimings, ObjectiveTotals } from './job.js';

/*
 * The shapes that cross a process or library boundary and are not wire messages: the batches the data lib builds
 * and the model consumes (libs/data never imports the model), the parameter layout a checkpoint, an optimizer and a
 * gradient agree on, the optimizer state a checkpoint stores, the step report the trainer emits and telemetry
 * reads, and the job event a worker emits and telemetry reads. Declared once here (this lib depends on nothing of ours, so every
 * library can use them); wire messages live in ./job.ts.
 */

/** One parameter of a layout: canonical name and shape, its offset in the flat trainable buffer (null: fixed). */
export interface ParamLayoutEntry {
  readonly name: string;
  readonly shape: readonly number[];
  /** Offset (in elements) into the flat trainable buffer; null for non-trainable parameters. */
  readonly offset: number | null;
  readonly trainable: boolean;
}

/**
 * The parameter layout of a model: what a flat parameter or gradient vector means. @m3ae/model's `ParamManifest`
 * is one (with a dtype per entry); checkpoints, optimizers and the trainer need no more than this.
 */
export interface ParamLayout {
  readonly entries: readonly ParamLayoutEntry[];
  /** Elements in the flat trainable buffer (= the flat gradient length). */
  readonly size: number;
  /** SHA-256 (hex) identifying the layout; workers and checkpoints are checked against it. */
  readonly hash: string;
}

/** AdamW state, flat in the layout's trainable order (checkpoints store it; the trainer restores it). */
export interface OptimizerState {
  /** Updates applied so far (AdamW's bias-correction t). */
  readonly step: number;
  readonly m: Float32Array;
  readonly v: Float32Array;
}

/** Milliseconds of one step by phase (the breakdown of `m3ae bench training`). */
export interface StepPhases {
  /** Encode and upload the parameters of version v (0 in process). */
  publishMs: number;
  /** Build and enqueue the step's jobs (includes computing the normalizers). */
  enqueueMs: number;
  /** Waiting for results with nothing to do. */
  idleMs: number;
  /** Download, verify and add gradients (in process: compute and add). */
  reduceMs: number;
  /** Norm, clipping and the optimizer update. */
  optimizerMs: number;
  /** Checkpoint written after this step, if any. */
  checkpointMs: number;
}

/** Bytes one process moved through Redis in one step (measured by that process). */
export interface ProcessTransfer {
  id: string;
  role: 'coordinator' | 'reducer' | 'worker';
  readBytes: number;
  writtenBytes: number;
  /** Contributions it sent this step (workers). */
  jobs: number;
}

/** What one training step did: the trainer's report to logs, metrics, the run page and callers. */
export interface StepReport {
  step: number;
  /** Normalised global-batch losses per trained objective and the weighted total. */
  losses: { total: number } & ObjectiveTotals;
  /** Correct predictions / items, per objective that predicts (mlm, itm, a task's). */
  accuracy: ObjectiveTotals;
  learningRate: number;
  gradientNorm: number;
  samples: number;
  /** Real (non-padding) text tokens of the step, when the computers count them (not the synthetic workload). */
  tokens?: number;
  durationMs: number;
  phases: StepPhases;
  /** Mean milliseconds the accepted contributions reported (parameter fetch, compute, encode, upload). */
  worker: JobTimings;
  /** Bytes moved through Redis for this step by the coordinator (published parameters, gradients read); 0 in process. */
  bytes: { params: number; grads: number };
  /**
   * Bytes each process moved through Redis for this step, as it counted them: the coordinator (its shard threads'
   * gradient reads and parameter writes) or each reducer process (`coordinator.reducers: processes`), and every worker that sent a contribution (its parameter fetch, 0 when cached, and its
   * gradient upload — for rejected and duplicate copies too). Job messages and bookkeeping (a few KB) are not counted.
   */
  processes: ProcessTransfer[];
  /** The reduction's own split, summed over shards (thread-milliseconds when shards run side by side). */
  reduction: { fetchMs: number; addMs: number; applyMs: number };
  jobs: { count: number; enqueued: number; rejected: number; duplicates: number; backups: number; retried: number };
  /** Who computed the step's counted contributions (worker ids, or in-process computers). */
  workers: string[];
}

/** How a worker finished a job. */
export const JOB_OUTCOMES = ['completed', 'stale', 'failed', 'handed-back', 'refused'] as const;
export type JobOutcome = (typeof JOB_OUTCOMES)[number];

/** One job as a worker handled it: the worker emits it (`onJob`), logs, metrics (`workerJobListener`) and tests read it. */
export interface WorkerJobEvent {
  jobId: string;
  step: number;
  jobIndex: number;
  copy: number;
  outcome: JobOutcome;
  samples: number;
  /** Real text tokens of the micro-batch, when the computer counts them. */
  tokens?: number;
  /** Milliseconds: parameter fetch (0 on a cache hit), compute, encode, upload, total. */
  timings: JobTimings;
  paramCacheHit: boolean;
  gradBytes: number;
  paramBytes: number;
  error?: string;
}

/**
 * One (micro-)batch of pre-training inputs. Every random choice (MLM masking, MIM noise, ITM negatives, dropout
 * seeds) was made by the data lib as a pure function of (seed, step, sample index); the model draws nothing.
 */
export interface PretrainBatch {
  /** B */
  batchSize: number;
  /** H = W */
  imageSize: number;
  /** L (pre-training: the model's training text length; at most its maxTextLength) */
  textLength: number;
  /** [B,3,H,W], CLIP mean/std normalised (NCHW, batch-first) */
  pixelValues: Float32Array;
  /** [B,L] tokenised text, padded with padTokenId */
  inputIds: Int32Array;
  /** [B,L] 1 = real token, 0 = padding */
  attentionMask: Int32Array;
  /** [B,L] after 15% / 80-10-10 masking */
  mlmInputIds: Int32Array;
  /** [B,L] original id at masked positions, -100 elsewhere */
  mlmLabels: Int32Array;
  /** [B,N] uniform [0,1); keep the floor(N*(1-mimMaskRatio)) smallest (MAE argsort) */
  mimNoise: Float32Array;
  /** [B,3,H,W] the image paired with the text for ITM (the true one or a negative) */
  itmPixelValues: Float32Array;
  /** [B] 1 = matching pair, 0 = mismatched */
  itmLabels: Int32Array;
  /** [B] per-sample seeds; dropout masks derive only from these */
  dropoutSeeds: Int32Array;
}

/** A pre-training batch of B samples of H px images, L tokens and N patches, every array of its size and all zero. */
export function emptyPretrainBatch(batchSize: number, imageSize: number, textLength: number, numPatches: number): PretrainBatch {
  const plane = 3 * imageSize * imageSize;
  const tokens = batchSize * textLength;
  return {
    batchSize,
    imageSize,
    textLength,
    pixelValues: new Float32Array(batchSize * plane),
    inputIds: new Int32Array(tokens),
    attentionMask: new Int32Array(tokens),
    mlmInputIds: new Int32Array(tokens),
    mlmLabels: new Int32Array(tokens),
    mimNoise: new Float32Array(batchSize * numPatches),
    itmPixelValues: new Float32Array(batchSize * plane),
    itmLabels: new Int32Array(batchSize),
    dropoutSeeds: new Int32Array(batchSize),
  };
}

/**
 * One (micro-)batch of a downstream task: B examples of one image and K texts — K = 1 for VQA and classification (the
 * question / caption), K = 1 + negatives for retrieval training (the true caption first).
 */
export interface DownstreamBatch {
  /** B */
  batchSize: number;
  /** K: texts per example */
  textsPerExample: number;
  /** H = W */
  imageSize: number;
  /** L */
  textLength: number;
  /** [B,3,H,W], CLIP mean/std normalised */
  pixelValues: Float32Array;
  /** [B·K, L] */
  inputIds: Int32Array;
  /** [B·K, L] */
  attentionMask: Int32Array;
  /** [B]: the class / answer index, −1 when not in the vocabulary (counted wrong); retrieval: 0, the true text's slot */
  labels: Int32Array;
  /** [B·K] dropout seeds, from (seed, step, example index) */
  dropoutSeeds: Int32Array;
}

/** A downstream batch of B examples of K texts, H px images and L tokens, every array of its size and all zero. */
export function emptyDownstreamBatch(batchSize: number, textsPerExample: number, imageSize: number, textLength: number): DownstreamBatch {
  const texts = batchSize * textsPerExample;
  return {
    batchSize,
    textsPerExample,
    imageSize,
    textLength,
    pixelValues: new Float32Array(batchSize * 3 * imageSize * imageSize),
    inputIds: new Int32Array(texts * textLength),
    attentionMask: new Int32Array(texts * textLength),
    labels: new Int32Array(batchSize),
    dropoutSeeds: new Int32Array(texts),
  };
}
