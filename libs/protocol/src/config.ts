import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { CHECKSUM_ALGORITHMS, TENSOR_ENCODINGS } from './encoding.js';
import { ConfigError } from './errors.js';
import { formatIssues } from './issues.js';
import { RUN_ID_PATTERN } from './keys.js';
import { MAX_SHARDS } from './shards.js';
import { DEFAULT_REDIS_URL, redactRedisUrl } from './redis-url.js';
import { DEFAULT_REDIS_TIMEOUT_SECONDS } from './redis-reachable.js';
import type { RedisEndpoint } from './redis-connection.js';

const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().nonnegative();
const redisUrl = z.string().regex(/^rediss?:\/\/\S+$/, 'expected a URL redis://[user:password@]host[:port][/db] or rediss://… (TLS)');


/**
 * The one description of a run, shared by the coordinator, every worker and `m3ae train`. Read from a YAML
 * or JSON file, then overridden by environment variables ({@link ENV_OVERRIDES}, how Kubernetes configures
 * pods), then by command-line flags. Unknown fields are errors (a misspelt field must not be ignored).
 */
export const RunConfigSchema = z
  .object({
    /** Namespaces every Redis key and the job queue: runs can share one Redis. */
    runId: z.string().regex(RUN_ID_PATTERN, 'expected 1–64 letters, digits, "_", "." or "-"').default('m3ae'),
    seed: nonNegativeInt.default(0),
    model: z
      .object({
        /** A preset of @m3ae/model (`tiny`, `small`, `base`). */
        preset: z.string().min(1).default('tiny'),
        /** Fields of the model configuration that replace the preset's, objectives included (checked by @m3ae/model). */
        overrides: z.record(z.string(), z.unknown()).default({}),
      })
      .strict()
      .prefault({}),
    data: z
      .object({
        /** A shard dataset written by `m3ae prepare` (every worker must see the same one). */
        dir: z.string().min(1).optional(),
        /** A `tokenizer.json`; default: the one the dataset was prepared with. */
        tokenizer: z.string().min(1).optional(),
      })
      .strict()
      .default({}),
    /**
     * What is trained: `pretrain` (M3AE's three objectives on `data.dir`), or a downstream task fine-tuned from a
     * pre-training checkpoint on the same coordinator and workers. Only what is specific to the task lives here (its
     * data, backbone, head inputs); how it is optimised is `training`, as for pre-training.
     */
    task: z
      .object({
        name: z.string().min(1).default('pretrain'),
        /** The task's dataset root (VQA-RAD / SLAKE / VQA-Med 2019 folder, MELINDA folder, ROCO / MedPix root, manifest). */
        data: z.string().min(1).optional(),
        /** The pre-training checkpoint (file or directory) to fine-tune from. */
        checkpoint: z.string().min(1).optional(),
        init: z.enum(['pretrained', 'random']).default('pretrained'),
        /** Preset of a randomly initialised backbone without a checkpoint. */
        preset: z.string().min(1).optional(),
        tokenizer: z.string().min(1).optional(),
        source: z.string().min(1).optional(),
        labelColumn: z.string().min(1).optional(),
        categories: z.array(z.string().min(1)).min(1).optional(),
        /** Carve validation (and a held-out split) from the training items, by image (VQA-RAD: or by question, `carveBy`). */
        carve: z.object({ seed: nonNegativeInt.default(0), valFraction: z.number().gt(0).lt(1), testFraction: z.number().min(0).lt(1).default(0) }).strict().optional(),
        /**
         * VQA-RAD: what a carve group is, one of @m3ae/data's CARVE_GROUP_BY (checked by @m3ae/tasks): unset or `image`, no
         * image in two splits; `question`, each question its own group (exact duplicates together), so carved splits share
         * images as VQA-RAD's official test set shares the training images.
         */
        carveBy: z.string().min(1).optional(),
        imageSize: positiveInt.optional(),
        textLength: positiveInt.optional(),
        augment: z.boolean().default(true),
        negatives: positiveInt.optional(),
        trainLimit: positiveInt.optional(),
        valLimit: positiveInt.optional(),
        evalEvery: positiveInt.optional(),
        /** VQA tasks: the answer loss, one of @m3ae/model's VQA_LOSSES (checked by @m3ae/tasks); unset: the official `bce-sum`. */
        vqaLoss: z.string().min(1).optional(),
        /** What reaches the head, one of @m3ae/model's TASK_INPUTS (checked by @m3ae/tasks); `text`: the question-only baseline. */
        inputs: z.string().min(1).optional(),
        /** The head's initial last-layer bias, one of @m3ae/tasks's HEAD_BIASES (checked there); unset: `zero`, the official one. */
        headBias: z.string().min(1).optional(),
      })
      .strict()
      .prefault({}),
    /**
     * How the run is optimised — pre-training and fine-tuning alike. Unset fields take the defaults of the run's kind:
     * {@link PRETRAIN_TRAINING} for pre-training (see {@link pretrainTraining}), the task's official fine-tuning
     * settings for a downstream task (resolved by @m3ae/tasks).
     */
    training: z
      .object({
        /** Optimizer steps (fine-tuning: at most this many; default there: epochs × steps per epoch). */
        steps: positiveInt.optional(),
        /** Passes over the training split (fine-tuning only; pre-training counts steps). */
        epochs: positiveInt.optional(),
        /** Samples per optimizer step, over all workers. */
        globalBatch: positiveInt.optional(),
        /** Samples per job; ceil(globalBatch / microBatch) jobs per step, whatever the number of workers. */
        microBatch: positiveInt.optional(),
        /**
         * Micro-batches a job carries: its worker computes them one by one and sends their sum as one contribution
         * (fewer bytes per sample). The jobs are fixed by the run, so the parameters do not depend on the worker count
         * with any encoding; with `gradEncoding: fx53` they do not depend on this number either (exact sums).
         */
        microBatchesPerJob: positiveInt.default(1),
        /**
         * Shards of the parameter vector (`shardRanges`): each shard's gradient is summed and its AdamW update applied on
         * its own — several shards in coordinator threads side by side, each reading its own gradient blobs from Redis.
         * Any number of shards gives the same parameter bits.
         */
        shards: positiveInt.max(MAX_SHARDS).default(1),
        learningRate: z.number().positive().optional(),
        /** ×learningRate of the heads (the official lr_multiplier_head). */
        lrMultiplierHead: z.number().positive().optional(),
        /** ×learningRate of the fusion module and poolers (the official lr_multiplier_multi_modal). */
        lrMultiplierMultiModal: z.number().positive().optional(),
        /** Linear warm-up over `warmupFraction` of the steps, then linear decay to 0 (M3AE) or a constant rate. */
        schedule: z.enum(['linear', 'constant']).default('linear'),
        warmupFraction: z.number().min(0).lt(1).optional(),
        weightDecay: z.number().nonnegative().optional(),
        beta1: z.number().min(0).lt(1).default(0.9),
        beta2: z.number().min(0).lt(1).default(0.98),
        epsilon: z.number().positive().default(1e-8),
        /** Clip the global gradient norm to this (0 = no clipping). */
        clipNorm: z.number().nonnegative().optional(),
        /**
         * Gradients on the wire: f32 (exact bytes, summed in job order), bf16 (half the bytes, still deterministic) or
         * fx53 (exact fixed point in quanta of 2^-40, 8 bytes a value: any grouping or order of contributions sums to the
         * same bits; |gradient| and every partial sum must stay below 8192, or the step fails naming the element).
         */
        gradEncoding: z.enum(TENSOR_ENCODINGS).default('f32'),
      })
      .strict()
      .prefault({}),
    /**
     * Pre-training only: the held-out evaluation (ITM accuracy, MLM accuracy, MIM loss) the coordinator runs every
     * `every` steps (and after the last) on `data`, a shard dataset disjoint from `data.dir` (e.g. MedPix's `dev`
     * split prepared with `m3ae prepare --split dev`); 0: none.
     */
    evaluation: z
      .object({
        every: nonNegativeInt.default(0),
        /** The held-out shard dataset (`m3ae prepare` output); required when `every` > 0. */
        data: z.string().min(1).optional(),
        /** Held-out pairs evaluated (spread evenly over `data`; all of them when it has fewer). */
        samples: positiveInt.default(256),
      })
      .strict()
      .prefault({}),
    compute: z
      .object({
        /** `model`: real M3AE gradients; `synthetic`: fixed work and deterministic fake gradients (orchestration tests, `bench scaling`). */
        kind: z.enum(['model', 'synthetic']).default('model'),
        /** TensorFlow.js backend for `model`: auto or a name `chooseBackend` of @m3ae/model takes (node-gpu, webgpu, node, wasm, cpu). */
        backend: z.string().min(1).default('auto'),
        synthetic: z
          .object({
            paramCount: positiveInt.default(1_000_000),
            /** Milliseconds of work per sample of a micro-batch (stands in for forward/backward). */
            workMsPerSample: z.number().nonnegative().default(0),
            /** `sleep`: wait (a GPU computing; many simulated workers on few cores); `spin`: burn CPU (blocks its thread). */
            work: z.enum(['sleep', 'spin']).default('sleep'),
            /** Samples in the virtual dataset the sampler draws from. */
            datasetSize: positiveInt.default(4096),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    checkpoint: z
      .object({
        dir: z.string().min(1).default('checkpoints'),
        /** Write one every N steps (0: only at the end and on shutdown). */
        every: nonNegativeInt.default(100),
        /** Keep the last M. */
        keep: positiveInt.default(3),
      })
      .strict()
      .prefault({}),
    redis: z
      .object({
        /** The Redis of the job queue and the run's bookkeeping (and blobs unless `blobUrls`). */
        url: redisUrl.default(DEFAULT_REDIS_URL),
        /** Redis instances that blob chunks are spread over (default: `url` only). */
        blobUrls: z.array(redisUrl).default([]),
        username: z.string().min(1).optional(),
        password: z.string().min(1).optional(),
        /** PEM file of a CA to trust for `rediss://`. */
        caFile: z.string().min(1).optional(),
        tlsRejectUnauthorized: z.boolean().default(true),
        chunkBytes: z.number().int().min(1024).max(512 * 2 ** 20).multipleOf(4).default(4 * 2 ** 20),
        checksum: z.enum(CHECKSUM_ALGORITHMS).default('crc32'),
        /** Gradient blobs expire after this if nobody consumes them (a worker died mid-upload…). */
        gradTtlSeconds: positiveInt.default(3600),
        /** At start-up, give up when Redis has not answered within this many seconds (`--redis-timeout`). */
        connectTimeoutSeconds: z.number().positive().default(DEFAULT_REDIS_TIMEOUT_SECONDS),
      })
      .strict()
      .prefault({}),
    coordinator: z
      .object({
        /** A job running longer than backupFactor × the step's median job time gets a backup copy. */
        backupFactor: z.number().gt(1).default(3),
        /** …and never before this many milliseconds. */
        backupMinMs: nonNegativeInt.default(5000),
        /** At most this many copies of one micro-batch in a step (original, redeliveries, backups). */
        maxCopies: positiveInt.default(8),
        /** How often to look at job states, stragglers and the Redis sentinel. */
        checkIntervalMs: positiveInt.default(500),
        /**
         * Where the `training.shards` shards are reduced and updated: `threads` of the coordinator (parameters shared, no
         * copy), or reducer `processes` that hold their range and read their gradient blobs themselves, so no gradient
         * byte passes through the coordinator's process (the coordinator gathers the parameters only to checkpoint,
         * to validate and at the end). Same parameters either way.
         */
        reducers: z.enum(['threads', 'processes']).default('threads'),
        /** While a step's jobs wait and no worker is alive, a warning says so every this many milliseconds. */
        noWorkerWarnMs: positiveInt.default(30_000),
      })
      .strict()
      .prefault({}),
    worker: z
      .object({
        /** BullMQ lock duration; renewed every half of it while a job computes. */
        lockDurationMs: z.number().int().min(1000).default(30_000),
        heartbeatSeconds: positiveInt.default(10),
        /** On SIGTERM, finish the current job if it ends within this; otherwise hand it back. */
        shutdownGraceMs: nonNegativeInt.default(20_000),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  // A pre-training step is globalBatch / microBatch equal jobs (a fine-tuning epoch's last step may be smaller).
  .refine((c) => c.evaluation.every === 0 || c.evaluation.data !== undefined, {
    message: 'expected evaluation.data (a held-out shard dataset, disjoint from data.dir) when evaluation.every > 0',
    path: ['evaluation', 'data'],
  })
  .refine((c) => c.training.gradEncoding !== 'fx53' || c.redis.chunkBytes % 8 === 0, {
    message: 'expected a multiple of 8 with gradEncoding fx53 (a chunk must hold whole 8-byte values)',
    path: ['redis', 'chunkBytes'],
  })
  .refine((c) => c.task.name !== 'pretrain' || (c.training.globalBatch ?? PRETRAIN_TRAINING.globalBatch) % (c.training.microBatch ?? PRETRAIN_TRAINING.microBatch) === 0, {
    message: 'expected globalBatch to be a multiple of microBatch',
    path: ['training', 'globalBatch'],
  });

export type RunConfig = z.infer<typeof RunConfigSchema>;

/** The pre-training defaults of `training` (the optimizer's, betas and schedule, are the schema's for every run). */
export const PRETRAIN_TRAINING = {
  steps: 100,
  globalBatch: 8,
  microBatch: 2,
  learningRate: 1e-4,
  // The official pre-training config's lr_multiplier_head and lr_multiplier_multi_modal.
  lrMultiplierHead: 5,
  lrMultiplierMultiModal: 5,
  warmupFraction: 0.1,
  weightDecay: 0.01,
  clipNorm: 1,
} as const;

/** `training` with every field resolved (a pre-training run's, or a fine-tuning run's as @m3ae/tasks resolves it). */
export type TrainingSettings = Required<Omit<RunConfig['training'], 'epochs'>> & Pick<RunConfig['training'], 'epochs'>;

/** The `training` of a pre-training run, unset fields taking {@link PRETRAIN_TRAINING}. */
export function pretrainTraining(config: RunConfig): TrainingSettings {
  if (config.task.name !== 'pretrain') throw new ConfigError(`run ${config.runId} fine-tunes ${config.task.name}: its training settings are the task's (resolved by @m3ae/tasks)`);
  const t = config.training;
  const d = PRETRAIN_TRAINING;
  return {
    ...t,
    steps: t.steps ?? d.steps,
    globalBatch: t.globalBatch ?? d.globalBatch,
    microBatch: t.microBatch ?? d.microBatch,
    learningRate: t.learningRate ?? d.learningRate,
    lrMultiplierHead: t.lrMultiplierHead ?? d.lrMultiplierHead,
    lrMultiplierMultiModal: t.lrMultiplierMultiModal ?? d.lrMultiplierMultiModal,
    warmupFraction: t.warmupFraction ?? d.warmupFraction,
    weightDecay: t.weightDecay ?? d.weightDecay,
    clipNorm: t.clipNorm ?? d.clipNorm,
  };
}
/** What a config file may contain: any subset, the rest takes defaults. */
export type RunConfigInput = z.input<typeof RunConfigSchema>;

type EnvKind = 'string' | 'int' | 'number' | 'boolean' | 'list';

/** Environment variables that override the file (later rows win). Empty values are ignored. */
export const ENV_OVERRIDES: readonly { env: string; field: string; kind: EnvKind }[] = [
  { env: 'M3AE_RUN_ID', field: 'runId', kind: 'string' },
  { env: 'M3AE_SEED', field: 'seed', kind: 'int' },
  { env: 'M3AE_PRESET', field: 'model.preset', kind: 'string' },
  { env: 'M3AE_DATA_DIR', field: 'data.dir', kind: 'string' },
  { env: 'M3AE_TASK', field: 'task.name', kind: 'string' },
  { env: 'M3AE_TASK_DATA', field: 'task.data', kind: 'string' },
  { env: 'M3AE_TASK_CHECKPOINT', field: 'task.checkpoint', kind: 'string' },
  { env: 'M3AE_TASK_VQA_LOSS', field: 'task.vqaLoss', kind: 'string' },
  { env: 'M3AE_TASK_INPUTS', field: 'task.inputs', kind: 'string' },
  { env: 'M3AE_TASK_HEAD_BIAS', field: 'task.headBias', kind: 'string' },
  { env: 'M3AE_TASK_CARVE_BY', field: 'task.carveBy', kind: 'string' },
  { env: 'M3AE_TOKENIZER', field: 'data.tokenizer', kind: 'string' },
  { env: 'M3AE_STEPS', field: 'training.steps', kind: 'int' },
  { env: 'M3AE_GLOBAL_BATCH', field: 'training.globalBatch', kind: 'int' },
  { env: 'M3AE_MICRO_BATCH', field: 'training.microBatch', kind: 'int' },
  { env: 'M3AE_MICRO_BATCHES_PER_JOB', field: 'training.microBatchesPerJob', kind: 'int' },
  { env: 'M3AE_SHARDS', field: 'training.shards', kind: 'int' },
  { env: 'M3AE_REDUCERS', field: 'coordinator.reducers', kind: 'string' },
  { env: 'M3AE_LEARNING_RATE', field: 'training.learningRate', kind: 'number' },
  { env: 'M3AE_GRAD_ENCODING', field: 'training.gradEncoding', kind: 'string' },
  { env: 'M3AE_EVAL_EVERY', field: 'evaluation.every', kind: 'int' },
  { env: 'M3AE_EVAL_DATA', field: 'evaluation.data', kind: 'string' },
  { env: 'M3AE_EVAL_SAMPLES', field: 'evaluation.samples', kind: 'int' },
  { env: 'M3AE_COMPUTE', field: 'compute.kind', kind: 'string' },
  { env: 'M3AE_BACKEND', field: 'compute.backend', kind: 'string' },
  { env: 'M3AE_CHECKPOINT_DIR', field: 'checkpoint.dir', kind: 'string' },
  { env: 'M3AE_CHECKPOINT_EVERY', field: 'checkpoint.every', kind: 'int' },
  { env: 'M3AE_CHECKPOINT_KEEP', field: 'checkpoint.keep', kind: 'int' },
  { env: 'REDIS_URL', field: 'redis.url', kind: 'string' },
  { env: 'M3AE_REDIS_URL', field: 'redis.url', kind: 'string' },
  { env: 'M3AE_BLOB_REDIS_URLS', field: 'redis.blobUrls', kind: 'list' },
  { env: 'M3AE_REDIS_USERNAME', field: 'redis.username', kind: 'string' },
  { env: 'M3AE_REDIS_PASSWORD', field: 'redis.password', kind: 'string' },
  { env: 'M3AE_REDIS_CA_FILE', field: 'redis.caFile', kind: 'string' },
  { env: 'M3AE_REDIS_TLS_REJECT_UNAUTHORIZED', field: 'redis.tlsRejectUnauthorized', kind: 'boolean' },
  { env: 'M3AE_REDIS_TIMEOUT', field: 'redis.connectTimeoutSeconds', kind: 'number' },
];

function convert(raw: string, kind: EnvKind): unknown {
  const v = raw.trim();
  switch (kind) {
    case 'string':
      return v;
    case 'list':
      return v.split(',').map((s) => s.trim()).filter(Boolean);
    case 'boolean':
      return v === 'true' || v === '1' ? true : v === 'false' || v === '0' ? false : v;
    case 'int':
    case 'number': {
      // A non-numeric value stays a string so that the schema reports it with its text.
      const n = Number(v);
      return v !== '' && Number.isFinite(n) ? n : v;
    }
  }
}

function setPath(target: Record<string, unknown>, field: string, value: unknown): void {
  const parts = field.split('.');
  let node = target;
  for (const p of parts.slice(0, -1)) {
    const next = node[p];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[p] = {};
    node = node[p] as Record<string, unknown>;
  }
  node[parts[parts.length - 1] as string] = value;
}

/** Reads a YAML or JSON run file (JSON for `.json`, YAML otherwise — YAML also reads JSON). */
export function readRunConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`config file ${JSON.stringify(file)} cannot be read (${(e as NodeJS.ErrnoException).code ?? String(e)}); expected a YAML or JSON run configuration`);
  }
  let data: unknown;
  try {
    data = extname(file).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new ConfigError(`config file ${JSON.stringify(file)} is not valid ${extname(file) === '.json' ? 'JSON' : 'YAML'}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (data === null || data === undefined) return {};
  if (typeof data !== 'object' || Array.isArray(data)) throw new ConfigError(`config file ${JSON.stringify(file)} holds ${Array.isArray(data) ? 'a list' : typeof data}; expected a mapping of fields`);
  return data as Record<string, unknown>;
}

export interface LoadRunConfigOptions {
  /** A YAML or JSON file (optional: everything has a default). */
  file?: string | undefined;
  /** Environment to read overrides from (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** Command-line overrides by dotted field, applied last, with the flag named in errors: `{ 'training.steps': { value: 5, source: '--steps' } }`. */
  overrides?: Readonly<Record<string, { value: unknown; source: string }>>;
  /** Raw configuration used instead of a file (tests, `m3ae train`). */
  base?: Record<string, unknown>;
}

/**
 * The run configuration from file ← environment ← flags, validated. Errors list every bad field with its
 * value (secrets as `***`), where the value came from, and what was expected.
 */
export function loadRunConfig(options: LoadRunConfigOptions = {}): RunConfig {
  const raw: Record<string, unknown> = structuredClone(options.base ?? (options.file ? readRunConfigFile(options.file) : {}));
  const sources = new Map<string, string>();
  const env = options.env ?? process.env;
  for (const { env: name, field, kind } of ENV_OVERRIDES) {
    const value = env[name];
    if (value === undefined || value.trim() === '') continue;
    setPath(raw, field, convert(value, kind));
    sources.set(field, name);
  }
  for (const [field, { value, source }] of Object.entries(options.overrides ?? {})) {
    if (value === undefined) continue;
    setPath(raw, field, value);
    sources.set(field, source);
  }
  const misplaced = [...renamedFields(raw, env), ...misplacedFields(raw, sources)];
  if (misplaced.length > 0) {
    const where = options.file ? ` (${options.file})` : '';
    throw new ConfigError(`invalid run configuration${where}:\n  ${misplaced.join('\n  ')}`, misplaced);
  }
  const r = RunConfigSchema.safeParse(raw, { reportInput: true });
  if (!r.success) {
    const issues = formatIssues(r.error.issues, sources, raw);
    const where = options.file ? ` (${options.file})` : '';
    throw new ConfigError(`invalid run configuration${where}:\n  ${issues.join('\n  ')}`, issues);
  }
  return r.data;
}

/** Fields (and environment variables) of earlier versions, with what replaced them: an old run file is refused, not misread. */
const RENAMED: readonly [string, string][] = [
  ['task.epochs', 'training.epochs'],
  ['task.batchSize', 'training.globalBatch'],
  ['task.maxSteps', 'training.steps'],
  ['task.learningRate', 'training.learningRate'],
  ['task.lrMultiplierHead', 'training.lrMultiplierHead'],
  ['task.lrMultiplierMultiModal', 'training.lrMultiplierMultiModal'],
  ['task.warmupFraction', 'training.warmupFraction'],
  ['task.weightDecay', 'training.weightDecay'],
  ['task.clipNorm', 'training.clipNorm'],
];
const RENAMED_ENV: readonly [string, string][] = [['M3AE_LR', 'M3AE_LEARNING_RATE']];

function fieldAt(raw: Record<string, unknown>, field: string): unknown {
  let node: unknown = raw;
  for (const p of field.split('.')) node = typeof node === 'object' && node !== null ? (node as Record<string, unknown>)[p] : undefined;
  return node;
}

function renamedFields(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): string[] {
  const out = RENAMED.filter(([old]) => fieldAt(raw, old) !== undefined).map(([old, now]) => `${old} was renamed ${now}: move it there (one training section serves pre-training and fine-tuning)`);
  for (const [old, now] of RENAMED_ENV) if (env[old]?.trim()) out.push(`${old} was renamed ${now}: set that variable instead`);
  return out;
}

/** Fields that do not apply to the run's kind: an error rather than silently ignored. */
function misplacedFields(raw: Record<string, unknown>, sources: ReadonlyMap<string, string>): string[] {
  const name = fieldAt(raw, 'task.name');
  const from = (field: string): string => (sources.has(field) ? ` (from ${sources.get(field)})` : '');
  const out: string[] = [];
  if (name === undefined || name === 'pretrain') {
    const epochs = fieldAt(raw, 'training.epochs');
    if (epochs !== undefined) out.push(`training.epochs = ${JSON.stringify(epochs)}${from('training.epochs')}: applies to fine-tuning only; pre-training counts training.steps`);
    return out;
  }
  const backbone = "a fine-tuning run's backbone is task.checkpoint's (task.preset with task.init: random)";
  const preset = fieldAt(raw, 'model.preset');
  const overrides = fieldAt(raw, 'model.overrides');
  if (preset !== undefined && preset !== 'tiny') out.push(`model.preset = ${JSON.stringify(preset)}${from('model.preset')}: applies to pre-training only; ${backbone}`);
  if (typeof overrides === 'object' && overrides !== null && Object.keys(overrides).length > 0) out.push(`model.overrides: applies to pre-training only; ${backbone}`);
  const every = fieldAt(raw, 'evaluation.every');
  if (typeof every === 'number' && every > 0) out.push(`evaluation.every = ${every}${from('evaluation.every')}: applies to pre-training only; a fine-tuning run validates every task.evalEvery steps`);
  return out;
}

/** A copy safe to log or serve on /status: URLs and passwords redacted. */
export function redactConfig(config: RunConfig): RunConfig {
  return {
    ...config,
    redis: {
      ...config.redis,
      url: redactRedisUrl(config.redis.url),
      blobUrls: config.redis.blobUrls.map(redactRedisUrl),
      ...(config.redis.password ? { password: '***' } : {}),
    },
  };
}

function endpoint(config: RunConfig, url: string): RedisEndpoint {
  return {
    url,
    username: config.redis.username,
    password: config.redis.password,
    caFile: config.redis.caFile,
    tlsRejectUnauthorized: config.redis.tlsRejectUnauthorized,
  };
}

/** The Redis of the queue and bookkeeping. */
export function queueEndpoint(config: RunConfig): RedisEndpoint {
  return endpoint(config, config.redis.url);
}

/** The Redis instances blobs are spread over (the queue's Redis unless `redis.blobUrls` is set). */
export function blobEndpoints(config: RunConfig): RedisEndpoint[] {
  const urls = config.redis.blobUrls.length ? config.redis.blobUrls : [config.redis.url];
  return urls.map((u) => endpoint(config, u));
}

/** How a step's samples are cut: micro-batches of `microBatch` samples, `microBatchesPerJob` of them per job. */
export interface JobSplit {
  microBatch: number;
  microBatchesPerJob: number;
}

/** Samples of a full job. */
export function samplesPerJob(split: JobSplit): number {
  return split.microBatch * split.microBatchesPerJob;
}

/**
 * Jobs of a step of `samples` samples, {@link samplesPerJob} each (the last may have fewer): fixed by the run,
 * independent of the number of workers.
 */
export function jobsPerStep(samples: number, split: JobSplit): number {
  return Math.ceil(samples / samplesPerJob(split));
}
