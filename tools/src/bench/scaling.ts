import { mkdtempSync } from 'node:fs';
import { freemem, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { LocalRedis, loadRunConfig, type RunConfig, type StepReport } from '@m3ae/protocol';
import { runLocalCluster } from '../commands/local-cluster.js';
import { registerBenchArea } from './areas.js';
import { machineInfo, mean, type BenchRow } from './report.js';
import { parseSizeSpec } from './sizes.js';

/** The parameter count of `base` (M3AE's ViT-B/16 + RoBERTa-base + fusion): the issue's full-size exchange. */
const BASE_PARAMS = 365_600_000;

const SIZES = {
  parts: 'p,b',
  // (p) real worker processes, synthetic compute: `small`'s 16 M parameters, 16 samples a step in 8 jobs of 2.
  'p-params': 16_000_000,
  'p-workers': '1,2,4,8',
  'p-shards': 4,
  'p-work-ms': 250,
  'p-steps': 4,
  // (b) the base-size exchange: 8 workers, one job of one sample each, a fixed delay standing in for the GPU compute.
  // 0: 365.6 M parameters where the machine has the memory for it (≥ 96 GiB), else 1/8 of that (this is said).
  'b-params': 0,
  'b-workers': 8,
  'b-shards': 8,
  'b-work-ms': 1000,
  'b-steps': 3,
  // Private redis-servers holding the blobs (redis.blobUrls), the queue's Redis apart. 0: one per 4 cores, up to 4,
  // none below 8 cores (then the queue's Redis holds them, as on 2 cores every Redis would share the same cores).
  'blob-redis': 0,
} as const;

const QUICK = { 'p-params': 1_000_000, 'p-workers': '1,2', 'p-steps': 2, 'b-params': 2_000_000, 'b-workers': 2, 'b-shards': 2, 'b-steps': 2, 'b-work-ms': 200 } as const;

interface Measured {
  workers: number;
  shards: number;
  reducers: 'threads' | 'processes';
  params: number;
  stepMs: number;
  reports: StepReport[];
}


/** One run on real processes: `workers` `m3ae worker` processes and the coordinator in this process (runLocalCluster). */
async function measure(redisUrl: string, blobUrls: readonly string[], o: { params: number; workers: number; shards: number; globalBatch: number; microBatch: number; workMs: number; steps: number; reducers?: 'threads' | 'processes' }): Promise<Measured> {
  const workDir = mkdtempSync(join(tmpdir(), 'm3ae-bench-scaling-'));
  const config: RunConfig = loadRunConfig({
    base: {
      runId: `bench-scaling-${Date.now().toString(36)}`,
      compute: { kind: 'synthetic', synthetic: { paramCount: o.params, workMsPerSample: o.workMs / o.microBatch, work: 'sleep', datasetSize: 4096 } },
      // One warm-up step (worker start-up, first parameter fetch) before the measured ones.
      training: { steps: o.steps + 1, globalBatch: o.globalBatch, microBatch: o.microBatch, learningRate: 1e-3, shards: o.shards },
      checkpoint: { dir: join(workDir, 'ckpt'), every: 0 },
      redis: { url: redisUrl, blobUrls: [...blobUrls] },
      coordinator: { checkIntervalMs: 200, backupMinMs: 600_000, reducers: o.reducers ?? 'threads' },
      worker: { heartbeatSeconds: 5 },
    },
    env: {},
  });
  const reports: StepReport[] = [];
  await runLocalCluster(config, { workers: o.workers, workDir, redisUrl, resume: false, metricsPort: false, logLevel: 'warn', onStep: (r) => reports.push(r) });
  const measured = reports.slice(1);
  return { workers: o.workers, shards: o.shards, reducers: o.reducers ?? 'threads', params: o.params, stepMs: mean(measured.map((r) => r.durationMs)), reports: measured };
}

/** The measured time split and bytes per process of a run (means over its measured steps). */
function split(m: Measured): BenchRow {
  const r = m.reports;
  const paramBytes = m.params * 4;
  const moved = (roles: readonly string[]): number => mean(r.map((x) => Math.max(0, ...x.processes.filter((p) => roles.includes(p.role)).map((p) => p.readBytes + p.writtenBytes))));
  const coordBytes = moved(['coordinator']);
  const busiestReducer = moved(['reducer']);
  const busiestWorker = moved(['worker']);
  return {
    workers: m.workers,
    shards: m.shards,
    reducers: m.reducers,
    'step ms': m.stepMs,
    'coord publish ms': mean(r.map((x) => x.phases.publishMs)),
    'coord enqueue ms': mean(r.map((x) => x.phases.enqueueMs)),
    'coord idle ms': mean(r.map((x) => x.phases.idleMs)),
    'coord reduce ms': mean(r.map((x) => x.phases.reduceMs)),
    'coord optimizer ms': mean(r.map((x) => x.phases.optimizerMs)),
    'shard fetch thread-ms': mean(r.map((x) => x.reduction.fetchMs)),
    'shard add thread-ms': mean(r.map((x) => x.reduction.addMs)),
    'shard update thread-ms': mean(r.map((x) => x.reduction.applyMs)),
    'worker fetch ms': mean(r.map((x) => x.worker.fetchMs)),
    'worker compute ms': mean(r.map((x) => x.worker.computeMs)),
    'worker encode ms': mean(r.map((x) => x.worker.encodeMs)),
    'worker upload ms': mean(r.map((x) => x.worker.uploadMs)),
    'coord MB read+written': coordBytes / 1e6,
    'busiest reducer MB': busiestReducer / 1e6,
    'busiest worker MB': busiestWorker / 1e6,
    'busiest process / param bytes': Math.max(coordBytes, busiestReducer, busiestWorker) / paramBytes,
  };
}

registerBenchArea('scaling', {
  description:
    'real worker processes 1→8 on synthetic compute (a fixed delay) with the sharded reduction, and a base-size exchange (365.6 M parameters, or 1/8 of it where memory is short) with 8 workers: measured bytes per process and the time split',
  async run(options) {
    const s = parseSizeSpec(SIZES, options.extra['size'], options.quick ? QUICK : undefined);
    const parts = s.parts.split(',').map((x) => x.trim());
    const redis = await LocalRedis.start();
    const cores = machineInfo().cpus;
    const blobCount = s['blob-redis'] > 0 ? s['blob-redis'] : cores >= 8 ? Math.min(4, Math.floor(cores / 4)) : 1;
    const blobRedis = blobCount > 1 ? await Promise.all(Array.from({ length: blobCount }, async () => await LocalRedis.start())) : [];
    const blobUrls = blobRedis.map((b) => b.url);
    const rows: BenchRow[] = [];
    const figures: Record<string, number> = {};
    const notes: string[] = [];
    try {
      if (parts.includes('p')) {
        const counts = s['p-workers'].split(',').map(Number);
        const one = { params: s['p-params'], shards: s['p-shards'], globalBatch: 16, microBatch: 2, workMs: s['p-work-ms'], steps: s['p-steps'] };
        const points: Measured[] = [];
        for (const w of counts) points.push(await measure(redis.url, blobUrls, { ...one, workers: w }));
        const base = points[0] as Measured;
        for (const p of points) rows.push({ part: 'p', ...split(p), speedup: base.stepMs / p.stepMs, 'ideal step ms': Math.ceil(8 / p.workers) * s['p-work-ms'] });
        const top = points[points.length - 1] as Measured;
        // The same top worker count with one shard: the serial reduction of before, for comparison in the same run.
        const serial = await measure(redis.url, blobUrls, { ...one, workers: top.workers, shards: 1 });
        rows.push({ part: 'p', ...split(serial), speedup: base.stepMs / serial.stepMs, 'ideal step ms': Math.ceil(8 / top.workers) * s['p-work-ms'] });
        figures[`p_speedup_${top.workers}`] = base.stepMs / top.stepMs;
        figures[`p_speedup_${top.workers}_one_shard`] = base.stepMs / serial.stepMs;
        figures[`p_reduce_ms_${top.shards}_shards`] = mean(top.reports.map((r) => r.phases.reduceMs));
        figures['p_reduce_ms_1_shard'] = mean(serial.reports.map((r) => r.phases.reduceMs));
        notes.push(
          `(p) ${s['p-params'].toLocaleString('en')} parameters, 16 samples a step in 8 jobs of 2, ${s['p-work-ms']} ms of synthetic compute per job (a sleep: many workers on few cores); ${s['p-shards']} shards, plus one run at ${top.workers} workers with 1 shard; ${s['p-steps']} measured steps after 1 warm-up`,
        );
      }
      if (parts.includes('b')) {
        const full = totalmem() >= 96 * 2 ** 30;
        const params = s['b-params'] > 0 ? s['b-params'] : full ? BASE_PARAMS : Math.round(BASE_PARAMS / 8);
        const w = s['b-workers'];
        figures['b_params'] = params;
        // The shards in coordinator threads (every gradient byte through the coordinator's process), then in reducer
        // processes (none through it).
        for (const reducers of ['threads', 'processes'] as const) {
          const b = await measure(redis.url, blobUrls, { params, workers: w, shards: s['b-shards'], globalBatch: w, microBatch: 1, workMs: s['b-work-ms'], steps: s['b-steps'], reducers });
          const row = split(b);
          const exchange = b.stepMs - (row['worker compute ms'] as number);
          rows.push({ part: 'b', ...row, 'exchange+reduce+optimizer+publish ms': exchange });
          figures[`b_exchange_ms_${reducers}`] = exchange;
          figures[`b_busiest_over_param_bytes_${reducers}`] = row['busiest process / param bytes'] as number;
        }
        notes.push(
          `(b) ${params.toLocaleString('en')} parameters (${params === BASE_PARAMS ? 'the base size' : `${(params / BASE_PARAMS).toFixed(3)} × base: this machine has ${Math.round(totalmem() / 2 ** 30)} GiB`}), ${w} workers each computing one job of one sample a step (${s['b-work-ms']} ms fixed delay + the synthetic gradient's arithmetic: "worker compute ms"), ${s['b-shards']} shards in coordinator threads, then in reducer processes; exchange+reduce+optimizer+publish = step ms − worker compute ms`,
        );
      }
      notes.push(
        `every process, two threads per shard at most, and the private redis-servers (the queue's${blobUrls.length ? `, and ${blobUrls.length} for the blobs, spread by chunk` : ', which holds the blobs too'}) share this machine's ${cores} cores (load average ${loadavg()[0]?.toFixed(1)} at the end, ${Math.round(freemem() / 2 ** 30)} GiB free)`,
        'bytes per process are what each process counted moving through Redis for the step (StepReport.processes): the coordinator its shards\' gradient reads and parameter writes, each worker its parameter fetch (0 when cached) and gradient upload; shard thread-ms are summed over shards working side by side',
      );
      figures['blob_redis'] = Math.max(1, blobUrls.length);
      return { area: 'scaling', machine: machineInfo('synthetic'), rows, figures, notes };
    } finally {
      await Promise.all([redis.stop(), ...blobRedis.map(async (b) => await b.stop())]);
    }
  },
});
