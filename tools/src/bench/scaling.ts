import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Coordinator, syntheticSetup, type StepReport } from '@m3ae/coordinator';
import { LocalRedis, loadRunConfig, syntheticCounts, syntheticManifest, type MicroBatchJob, type RunConfig } from '@m3ae/protocol';
import { TrainingWorker, type GradientComputer, type MicroBatchResult } from '@m3ae/worker';
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
}

async function measure(config: RunConfig, workers: number, workMs: number, warmup: number): Promise<ScalingPoint> {
  const ws: TrainingWorker[] = [];
  for (let i = 0; i < workers; i++) {
    ws.push(await TrainingWorker.start({ config, computer: new FixedCostComputer(config.compute.synthetic.paramCount, workMs), workerId: `sim-${i}` }));
  }
  const reports: StepReport[] = [];
  try {
    await new Coordinator({ config, setup: syntheticSetup(config), events: { onStep: (r) => reports.push(r) } }).run();
  } finally {
    await Promise.all(ws.map(async (w) => w.close()));
  }
  const measured = reports.slice(warmup);
  const stepMs = measured.reduce((a, r) => a + r.durationMs, 0) / measured.length;
  const P = config.compute.synthetic.paramCount;
  const jobs = config.training.globalBatch / config.training.microBatch;
  const fetchers = Math.min(workers, jobs);
  // Redis traffic of one step: publish P·4, each busy worker reads P·4, each job's gradient written and read once.
  const bytesPerStep = P * 4 + fetchers * P * 4 + 2 * jobs * P * (config.training.gradEncoding === 'bf16' ? 2 : 4);
  return { workers, stores: config.redis.blobUrls.length || 1, stepMs, samplesPerSecond: (config.training.globalBatch / stepMs) * 1000, bytesPerStep };
}

registerBenchArea('scaling', {
  description: 'simulated workers 1→32 (in-process, real Redis transport, fixed synthetic compute): samples/s, efficiency, Redis bytes/s; and blobs spread over 2 Redis instances',
  async run(options) {
    const paramCount = options.quick ? 1_000_000 : 4_000_000;
    const workMs = 100;
    const counts = options.quick ? [1, 4, 16, 32] : [1, 2, 4, 8, 16, 32];
    const a = await LocalRedis.start();
    const b = await LocalRedis.start();
    const rows: BenchRow[] = [];
    try {
      const config = (urls: string[]): RunConfig =>
        loadRunConfig({
          base: {
            runId: `bench-scaling-${Date.now().toString(36)}`,
            compute: { kind: 'synthetic', synthetic: { paramCount, workMsPerSample: workMs, datasetSize: 4096 } },
            training: { steps: 4, globalBatch: 32, microBatch: 1, learningRate: 1e-3 },
            checkpoint: { dir: mkdtempSync(join(tmpdir(), 'm3ae-bench-scaling-')), every: 0 },
            redis: { url: a.url, blobUrls: urls },
            coordinator: { checkIntervalMs: 200, backupMinMs: 60_000 },
            worker: { heartbeatSeconds: 5 },
          },
          env: {},
        });
      const points: ScalingPoint[] = [];
      for (const w of counts) points.push(await measure(config([]), w, workMs, 1));
      const base = points[0] as ScalingPoint;
      for (const p of points) {
        const idealStepMs = Math.ceil(32 / p.workers) * workMs;
        rows.push({
          workers: p.workers,
          'redis instances': 1,
          'step ms': p.stepMs,
          'ideal step ms': idealStepMs,
          'samples/s': p.samplesPerSecond,
          efficiency: p.samplesPerSecond / (p.workers * base.samplesPerSecond),
          'MB per step': p.bytesPerStep / 1e6,
          'Redis GB/s': p.bytesPerStep / (p.stepMs / 1000) / 1e9,
        });
      }
      const top = counts[counts.length - 1] as number;
      const spread = await measure(config([a.url, b.url]), top, workMs, 1);
      const single = points[points.length - 1] as ScalingPoint;
      rows.push({
        workers: top,
        'redis instances': 2,
        'step ms': spread.stepMs,
        'ideal step ms': Math.ceil(32 / top) * workMs,
        'samples/s': spread.samplesPerSecond,
        efficiency: spread.samplesPerSecond / (top * base.samplesPerSecond),
        'MB per step': spread.bytesPerStep / 1e6,
        'Redis GB/s': spread.bytesPerStep / (spread.stepMs / 1000) / 1e9,
      });
      return {
        area: 'scaling',
        machine: machineInfo('simulated'),
        rows,
        figures: {
          param_count: paramCount,
          jobs_per_step: 32,
          work_ms_per_job: workMs,
          [`efficiency_${top}`]: single.samplesPerSecond / (top * base.samplesPerSecond),
          [`speedup_${top}`]: single.samplesPerSecond / base.samplesPerSecond,
          peak_redis_gbs: Math.max(...points.map((p) => p.bytesPerStep / (p.stepMs / 1000) / 1e9)),
          spread_2_speedup: spread.samplesPerSecond / single.samplesPerSecond,
        },
        notes: [
          `32 micro-batch jobs of 1 sample per step, ${workMs} ms of simulated compute each, ${(paramCount * 4) / 2 ** 20} MiB of f32 parameters and gradients; workers, coordinator and Redis share this machine's ${machineInfo().cpus} cores`,
          'ideal step ms = ceil(32 / workers) × job time: what perfect transport would give',
        ],
      };
    } finally {
      await a.stop();
      await b.stop();
    }
  },
});
