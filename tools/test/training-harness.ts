import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { EpochSampler } from '@m3ae/data';
import { Coordinator, type CoordinatorEvents } from '@m3ae/coordinator';
import { adamwFor, SyntheticComputer, syntheticSetup, type GradientComputer, type RunSummary } from '@m3ae/training';
import {
  addEncodedInto,
  encodeTensor,
  fixedToF32,
  quantizeInto,
  loadRunConfig,
  sha256OfFloats,
  syntheticCounts,
  syntheticGradients,
  syntheticInitialParams,
  syntheticManifest,
  pretrainTraining,
  type LossTriple,
  type RunConfig,
  type TensorEncoding,
} from '@m3ae/protocol';
import { TrainingWorker, type TrainingWorkerOptions } from '@m3ae/worker';

/** A synthetic run on `redisUrl` with a fresh run id and checkpoint directory. */
export function syntheticRun(overrides: Record<string, unknown> = {}, redisUrl = 'redis://127.0.0.1:6379'): RunConfig {
  const base = {
    runId: `test-${randomUUID().slice(0, 8)}`,
    seed: 3,
    compute: { kind: 'synthetic', synthetic: { paramCount: 30_000, workMsPerSample: 15, datasetSize: 256 } },
    training: { steps: 4, globalBatch: 8, microBatch: 2, learningRate: 0.01, warmupFraction: 0, schedule: 'constant', clipNorm: 0.05 },
    checkpoint: { dir: mkdtempSync(join(tmpdir(), 'm3ae-ckpt-')), every: 0, keep: 2 },
    redis: { url: redisUrl, chunkBytes: 16 * 1024 },
    coordinator: { checkIntervalMs: 100, backupMinMs: 60_000 },
    worker: { lockDurationMs: 5000, heartbeatSeconds: 1, shutdownGraceMs: 5000 },
  };
  return loadRunConfig({ base: deepMerge(base, overrides), env: {} });
}

function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const av = out[k];
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && av && typeof av === 'object' && !Array.isArray(av) ? deepMerge(av as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}

/**
 * The run computed serially in this process, without Redis: what the distributed run must reproduce bit
 * for bit (same per-micro-batch gradients, summed in micro-batch order, clipped, AdamW).
 */
export function serialReference(config: RunConfig, steps = pretrainTraining(config).steps, encoding: TensorEncoding = config.training.gradEncoding): string {
  const spec = config.compute.synthetic;
  const training = pretrainTraining(config);
  const params = syntheticInitialParams(spec.paramCount, config.seed);
  const sampler = new EpochSampler({ size: spec.datasetSize, seed: config.seed, globalBatchSize: training.globalBatch });
  const optimizer = adamwFor({ layout: syntheticManifest(spec.paramCount), training });
  const m = training.microBatch;
  for (let step = 0; step < steps; step++) {
    const batch = sampler.batchAt(step);
    const slices = Array.from({ length: training.globalBatch / m }, (_, k) => Array.from(batch.indices.subarray(k * m, (k + 1) * m)));
    const normalizers: LossTriple = { mlm: 0, mim: 0, itm: 0 };
    for (const s of slices) {
      const c = syntheticCounts(s);
      normalizers.mlm += c.mlm;
      normalizers.mim += c.mim;
      normalizers.itm += c.itm;
    }
    const acc = new Float32Array(spec.paramCount);
    if (encoding === 'fx53') {
      // Exact fixed point: each micro-batch quantized, summed as integers, converted once.
      const fixed = new Float64Array(spec.paramCount);
      for (const s of slices) quantizeInto(fixed, syntheticGradients(s, normalizers, params).grads);
      fixedToF32(fixed, acc);
    } else for (const s of slices) addEncodedInto(acc, encodeTensor(syntheticGradients(s, normalizers, params).grads, encoding), encoding);
    if (optimizer.step !== step) throw new Error(`the reference optimizer is at ${optimizer.step}; step ${step}`);
    optimizer.update(params, acc);
  }
  return sha256OfFloats(params);
}

export async function startWorkers(
  config: RunConfig,
  n: number,
  options: { computer?: (i: number) => GradientComputer; onJob?: TrainingWorkerOptions['onJob'] } = {},
): Promise<TrainingWorker[]> {
  const workers: TrainingWorker[] = [];
  for (let i = 0; i < n; i++) {
    const computer = options.computer?.(i) ?? new SyntheticComputer(config.compute.synthetic);
    workers.push(await TrainingWorker.start({ config, computer, workerId: `w${i}`, ...(options.onJob ? { onJob: options.onJob } : {}) }));
  }
  return workers;
}

export async function stopWorkers(workers: readonly TrainingWorker[]): Promise<void> {
  await Promise.all(workers.map(async (w) => w.close()));
}

export async function runCoordinator(config: RunConfig, events: CoordinatorEvents = {}, resume = false): Promise<{ summary: RunSummary; coordinator: Coordinator }> {
  const coordinator = new Coordinator({ config, setup: syntheticSetup(config), events, resume });
  const summary = await coordinator.run();
  return { summary, coordinator };
}

/** Every key of the run, on the given Redis. */
export async function runKeys(runId: string, url = 'redis://127.0.0.1:6379'): Promise<string[]> {
  const r = new Redis(url);
  try {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await r.scan(cursor, 'MATCH', `*${runId}*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    return keys;
  } finally {
    r.disconnect();
  }
}

/** A computer that misbehaves on chosen jobs (slow, non-finite) and is otherwise the synthetic one. */
export class FaultyComputer implements GradientComputer {
  private readonly inner: SyntheticComputer;
  readonly manifestHash: string;
  readonly paramCount: number;
  // Same numbers as SyntheticComputer when no fault fires: the same backend kind (a run is pinned to one).
  readonly backend = 'synthetic';
  constructor(
    config: RunConfig,
    private readonly fault: (job: { step: number; jobIndex: number; copy: number }) => { delayMs?: number; nan?: boolean; error?: string } | undefined,
  ) {
    this.inner = new SyntheticComputer(config.compute.synthetic);
    this.manifestHash = this.inner.manifestHash;
    this.paramCount = this.inner.paramCount;
  }
  async compute(...args: Parameters<GradientComputer['compute']>): ReturnType<GradientComputer['compute']> {
    const [job] = args;
    const f = this.fault(job);
    if (f?.delayMs) await new Promise((r) => setTimeout(r, f.delayMs));
    if (f?.error !== undefined) throw new Error(f.error);
    const r = await this.inner.compute(...args);
    if (f?.nan) r.grads[7] = Number.NaN;
    return r;
  }
  async dispose(): Promise<void> {
    // holds nothing to release
  }
}
