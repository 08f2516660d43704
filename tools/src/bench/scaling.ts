import { mkdtempSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Coordinator } from '@m3ae/coordinator';
import { syntheticSetup, type GradientComputer, type MicroBatchResult } from '@m3ae/training';
import { LocalRedis, loadRunConfig, pretrainTraining, syntheticCounts, syntheticManifest, type MicroBatchJob, type RunConfig, type StepReport } from '@m3ae/protocol';
import { TrainingWorker, type WorkerJobEvent } from '@m3ae/worker';
import { registerBenchArea } from './areas.js';
import { machineInfo, type BenchRow } from './report.js';

/**
 * The fixed synthetic compute of a simulated worker: it waits `workMs` per sample (a GPU busy elsewhere, so
 * 32 simulated workers fit on 2 cores) and returns a fixed gradient of the model's size. What is measured
 * is everything else: queue, parameter fetch, gradient upload, verification, ordered reduction, optimizer.
 */
class FixedCostComputer implements GradientComputer {
  readonly manifestHash: string;
  readonly backend = 'simulated';
  private readonly grads: Float32Array;
  constructor(
    readonly paramCount: number,
    private readonly workMsPerSample: number,
  ) {
    this.manifestHash = syntheticManifest(paramCount).hash;
    this.grads = new Float32Array(paramCount).map((_, i) => ((i % 97) - 48) * 1e-6);
  }
  async compute(job: MicroBatchJob): Promise<MicroBatchResult> {
    await new Promise((r) => setTimeout(r, this.workMsPerSample * job.indices.length));
    const counts = syntheticCounts(job.indices);
    return { sums: { mlm: counts.mlm * 0.5, mim: counts.mim * 0.5, itm: counts.itm * 0.5 }, counts, correct: { mlm: 0, itm: 0 }, grads: this.grads };
  }
  async dispose(): Promise<void> {
    // nothing held
  }
}

interface ScalingPoint {
  workers: number;
  stores: number;
  stepMs: number;
  samplesPerSecond: number;
  bytesPerStep: number;
  /** The coordinator's gather time less its idle time, per step: reading, verifying and adding contributions. */
  reduceMs: number;
}

async function measure(config: RunConfig, workers: number, workMs: number, warmup: number): Promise<ScalingPoint> {
  const ws: TrainingWorker[] = [];
  // Bytes each worker moved per step, as it counted them (parameters fetched, gradients uploaded).
  const workerBytes = new Map<number, number>();
  const onJob = (e: WorkerJobEvent): void => void workerBytes.set(e.step, (workerBytes.get(e.step) ?? 0) + e.paramBytes + e.gradBytes);
  for (let i = 0; i < workers; i++) {
    ws.push(await TrainingWorker.start({ config, computer: new FixedCostComputer(config.compute.synthetic.paramCount, workMs), workerId: `sim-${i}`, onJob }));
  }
  const reports: StepReport[] = [];
  try {
    await new Coordinator({ config, setup: syntheticSetup(config), events: { onStep: (r) => reports.push(r) } }).run();
  } finally {
    await Promise.all(ws.map(async (w) => w.close()));
  }
  const measured = reports.slice(warmup);
  const stepMs = measured.reduce((a, r) => a + r.durationMs, 0) / measured.length;
  const training = pretrainTraining(config);
  // Measured, not modelled: what the coordinator published and read, plus what the workers fetched and uploaded.
  const bytesPerStep = measured.reduce((a, r) => a + r.bytes.params + r.bytes.grads + (workerBytes.get(r.step) ?? 0), 0) / measured.length;
  const reduceMs = measured.reduce((a, r) => a + r.phases.reduceMs, 0) / measured.length;
  return { workers, stores: config.redis.blobUrls.length || 1, stepMs, samplesPerSecond: (training.globalBatch / stepMs) * 1000, bytesPerStep, reduceMs };
}

function row(p: ScalingPoint, base: ScalingPoint, workMs: number, series: string): BenchRow {
  return {
    series,
    workers: p.workers,
    'redis instances': p.stores,
    'step ms': p.stepMs,
    'ideal step ms': Math.ceil(32 / p.workers) * workMs,
    'samples/s': p.samplesPerSecond,
    efficiency: p.samplesPerSecond / (p.workers * base.samplesPerSecond),
    'MB per step': p.bytesPerStep / 1e6,
    'read+add ms': p.reduceMs,
    'Redis GB/s': p.bytesPerStep / (p.stepMs / 1000) / 1e9,
  };
}

registerBenchArea('scaling', {
  description: 'simulated workers 1→32 (in-process, real Redis transport, fixed synthetic compute): a small model (orchestration) and a larger one (bandwidth), and blobs spread over 2 Redis instances',
  async run(options) {
    const workMs = 100;
    const small = 250_000;
    const large = options.quick ? 1_000_000 : 4_000_000;
    const smallCounts = options.quick ? [1, 4, 32] : [1, 2, 4, 8, 16, 32];
    const largeCounts = options.quick ? [1, 32] : [1, 8, 32];
    const a = await LocalRedis.start();
    const b = await LocalRedis.start();
    const rows: BenchRow[] = [];
    try {
      const config = (paramCount: number, urls: string[], grads: { gradEncoding: 'f32' | 'fx53'; microBatchesPerJob: number } = { gradEncoding: 'f32', microBatchesPerJob: 1 }): RunConfig =>
        loadRunConfig({
          base: {
            runId: `bench-scaling-${Date.now().toString(36)}`,
            compute: { kind: 'synthetic', synthetic: { paramCount, workMsPerSample: workMs, datasetSize: 4096 } },
            training: { steps: 3, globalBatch: 32, microBatch: 1, learningRate: 1e-3, ...grads },
            checkpoint: { dir: mkdtempSync(join(tmpdir(), 'm3ae-bench-scaling-')), every: 0 },
            redis: { url: a.url, blobUrls: urls },
            coordinator: { checkIntervalMs: 200, backupMinMs: 60_000 },
            worker: { heartbeatSeconds: 5 },
          },
          env: {},
        });
      const series = async (paramCount: number, counts: number[]): Promise<ScalingPoint[]> => {
        const points: ScalingPoint[] = [];
        for (const w of counts) points.push(await measure(config(paramCount, []), w, workMs, 1));
        const label = `${((paramCount * 4) / 2 ** 20).toFixed(1)} MiB model`;
        for (const p of points) rows.push(row(p, points[0] as ScalingPoint, workMs, label));
        return points;
      };
      const s = await series(small, smallCounts);
      const l = await series(large, largeCounts);
      const top = largeCounts[largeCounts.length - 1] as number;
      const spread = await measure(config(large, [a.url, b.url]), top, workMs, 1);
      rows.push(row(spread, l[0] as ScalingPoint, workMs, `${((large * 4) / 2 ** 20).toFixed(1)} MiB model`));
      // Exact fixed-point gradients, 4 micro-batches summed per job on the worker: 8 jobs of 8-byte values per step.
      const fx = await measure(config(large, [], { gradEncoding: 'fx53', microBatchesPerJob: 4 }), top, workMs, 1);
      rows.push(row(fx, l[0] as ScalingPoint, workMs, `${((large * 4) / 2 ** 20).toFixed(1)} MiB model, fx53 × 4 micro-batches/job`));
      const sTop = s[s.length - 1] as ScalingPoint;
      const lTop = l[l.length - 1] as ScalingPoint;
      return {
        area: 'scaling',
        machine: machineInfo('simulated'),
        rows,
        figures: {
          jobs_per_step: 32,
          work_ms_per_job: workMs,
          small_param_count: small,
          large_param_count: large,
          [`small_speedup_${sTop.workers}`]: sTop.samplesPerSecond / (s[0] as ScalingPoint).samplesPerSecond,
          [`small_efficiency_${sTop.workers}`]: sTop.samplesPerSecond / (sTop.workers * (s[0] as ScalingPoint).samplesPerSecond),
          [`large_speedup_${lTop.workers}`]: lTop.samplesPerSecond / (l[0] as ScalingPoint).samplesPerSecond,
          peak_redis_gbs: Math.max(...[...s, ...l, spread].map((p) => p.bytesPerStep / (p.stepMs / 1000) / 1e9)),
          spread_2_speedup: spread.samplesPerSecond / lTop.samplesPerSecond,
          fx53x4_bytes_ratio: fx.bytesPerStep / lTop.bytesPerStep,
          fx53x4_read_add_ms: fx.reduceMs,
          f32_read_add_ms: lTop.reduceMs,
          fx53x4_speedup: fx.samplesPerSecond / lTop.samplesPerSecond,
        },
        notes: [
          `32 micro-batch jobs of 1 sample per step, ${workMs} ms of simulated compute each; every simulated worker, the coordinator and two private redis-servers share this machine's ${machineInfo().cpus} cores (load average ${loadavg()[0]?.toFixed(1)} at the end)`,
          'ideal step ms = ceil(32 / workers) × job time: what free transport would give; MB per step counts every byte written to or read from Redis',
          'the fx53 row: training.gradEncoding fx53 with training.microBatchesPerJob 4 (8 jobs of 4 micro-batches, summed exactly on the worker; 8 bytes a value); its ideal step ms is that of 32 jobs, the same compute',
        ],
      };
    } finally {
      await a.stop();
      await b.stop();
    }
  },
});
