import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { StepReport } from '@m3ae/protocol';
import { BlobStore, LocalRedis } from '@m3ae/protocol';
import { localShards, trainLocal } from '../commands/train.js';
import { registerBenchArea } from './areas.js';
import { machineBusy, machineCpuTimes, machineInfo, mean, type BenchRow, type MachineCpuTimes } from './report.js';

export interface TransportFigures {
  bytes: number;
  rawPutGBs: number;
  rawGetGBs: number;
  blobPutGBs: number;
  /** Chunked, pipelined, checksum-verified read. */
  blobGetGBs: number;
  /** The same plus the check that every value is finite (what the coordinator does with a gradient). */
  blobGetFiniteGBs: number;
  bf16PutGBs: number;
  bf16GetGBs: number;
  /** (raw SET + GET time) / (blob put + get time) for the same f32 bytes. */
  transportVsRaw: number;
}

async function timed(reps: number, f: () => Promise<unknown>): Promise<number> {
  await f(); // warm-up (allocations, connection)
  const t = performance.now();
  for (let i = 0; i < reps; i++) await f();
  return (performance.now() - t) / 1000 / reps;
}

/**
 * Moves `bytes` of float32 values through Redis as one raw SET/GET (ioredis, Buffer) and through the blob
 * store (chunked, pipelined, checksummed, verified), in the same run on the same Redis. The transport ratio
 * compares checksum-verified put + get with raw SET + GET; the finite-value check of a gradient is reported
 * apart (it is verification of the content, not transport).
 */
export async function measureTransport(url: string, bytes: number, reps: number): Promise<TransportFigures> {
  const redis = new Redis(url);
  try {
    const values = new Float32Array(bytes / 4).map((_, i) => Math.sin(i) * 1e-3);
    const raw = Buffer.from(values.buffer);
    const key = `m3ae:bench-${randomBytes(3).toString('hex')}`;
    const rawPut = await timed(reps, async () => redis.set(`${key}:raw`, raw));
    const rawGet = await timed(reps, async () => redis.getBuffer(`${key}:raw`));
    await redis.del(`${key}:raw`);
    const store = new BlobStore([redis]);
    let ref = await store.putTensor(`${key}:blob`, values, 'f32');
    const blobPut = await timed(reps, async () => (ref = await store.putTensor(`${key}:blob`, values, 'f32')));
    const blobGet = await timed(reps, async () => store.getBytes(ref));
    const blobGetFinite = await timed(reps, async () => store.getTensor(ref));
    let half = await store.putTensor(`${key}:half`, values, 'bf16');
    const bf16Put = await timed(reps, async () => (half = await store.putTensor(`${key}:half`, values, 'bf16')));
    const bf16Get = await timed(reps, async () => store.getTensor(half));
    await store.delete(ref);
    await store.delete(half);
    const gbs = (s: number): number => bytes / s / 1e9;
    return {
      bytes,
      rawPutGBs: gbs(rawPut),
      rawGetGBs: gbs(rawGet),
      blobPutGBs: gbs(blobPut),
      blobGetGBs: gbs(blobGet),
      blobGetFiniteGBs: gbs(blobGetFinite),
      bf16PutGBs: gbs(bf16Put),
      bf16GetGBs: gbs(bf16Get),
      transportVsRaw: (rawPut + rawGet) / (blobPut + blobGet),
    };
  } finally {
    redis.disconnect();
  }
}


/** Mean step figures over the measured steps of one run. */
export function summariseSteps(reports: readonly StepReport[], workers: number): BenchRow {
  const stepMs = mean(reports.map((r) => r.durationMs));
  const jobs = reports[0]?.jobs.count ?? 0;
  const computeMs = mean(reports.map((r) => r.worker.computeMs));
  const samples = reports[0]?.samples ?? 0;
  // The compute one worker must do in a step when jobs are shared evenly: the part that cannot go faster.
  const criticalComputeMs = Math.ceil(jobs / workers) * computeMs;
  return {
    workers,
    'samples/s': (samples / stepMs) * 1000,
    'step ms': stepMs,
    'job compute ms': computeMs,
    'job fetch ms': mean(reports.map((r) => r.worker.fetchMs)),
    'job encode ms': mean(reports.map((r) => r.worker.encodeMs)),
    'job upload ms': mean(reports.map((r) => r.worker.uploadMs)),
    'publish ms': mean(reports.map((r) => r.phases.publishMs)),
    'enqueue ms': mean(reports.map((r) => r.phases.enqueueMs)),
    'reduce ms': mean(reports.map((r) => r.phases.reduceMs)),
    'optimizer ms': mean(reports.map((r) => r.phases.optimizerMs)),
    'coordinator idle ms': mean(reports.map((r) => r.phases.idleMs)),
    overhead: Math.max(0, 1 - criticalComputeMs / stepMs),
  };
}

/** The two ways the bench cuts its global batch of 8 into jobs: one micro-batch of 2 per job, or two summed on the worker. */
const LAYOUTS = [
  { perJob: 2, label: '2 jobs of 2 micro-batches' },
  { perJob: 1, label: '4 jobs of 1 micro-batch' },
] as const;

registerBenchArea('training', {
  description:
    'distributed training here: samples/s with 1 and 2 worker processes (small preset; global batch 8 in 2 jobs of 2 micro-batches summed on the worker, and in 4 jobs of 1; the reduction in one shard thread per core, up to 4), step-time breakdown, blob transport vs raw Redis',
  async run(options) {
    const preset = options.extra['preset'] ?? 'small';
    const steps = options.quick ? 4 : 7;
    const warmup = 2;
    const redis = await LocalRedis.start();
    const info = new Redis(redis.url);
    const work = join(tmpdir(), 'm3ae-bench-training');
    const rows: BenchRow[] = [];
    const notes: string[] = [];
    try {
      const runs = new Map<string, BenchRow>();
      let paramBytes = 0;
      for (const layout of LAYOUTS) {
        for (const workers of [1, 2]) {
          const reports: StepReport[] = [];
          const cpu: number[] = [];
          // The machine's CPU time and the wall clock at the end of every step (all processes: workers, Redis, us).
          const machine: { at: number; times: MachineCpuTimes }[] = [];
          // Redis's own CPU seconds (INFO cpu), asked for at the end of every step.
          const redisCpu: Promise<number>[] = [];
          let last = process.cpuUsage();
          const report = await trainLocal(
            {
              local: true,
              workers,
              steps: String(steps),
              preset,
              globalBatch: '8',
              microBatch: '2',
              microBatchesPerJob: String(layout.perJob),
              workDir: work,
              checkpointDir: mkdtempSync(join(tmpdir(), 'm3ae-bench-ckpt-')),
              redisUrl: redis.url,
              resume: false,
              synthetic: false,
              json: true,
              metrics: false,
            },
            {
              quiet: true,
              onStep: (r) => {
                reports.push(r);
                // CPU the coordinator's process used for this step: what it takes from the workers' cores.
                const u = process.cpuUsage(last);
                last = process.cpuUsage();
                cpu.push((u.user + u.system) / 1000);
                machine.push({ at: performance.now(), times: machineCpuTimes() });
                redisCpu.push(redisCpuSeconds(info));
              },
            },
          );
          paramBytes = reports[0]?.bytes.params ?? 0;
          // From the end of the last unmeasured step to the end of the run: wall time and busy core time per step.
          const from = machine[warmup - 1] as (typeof machine)[number];
          const to = machine[machine.length - 1] as (typeof machine)[number];
          const measured = Math.max(1, machine.length - warmup);
          const busy = machineBusy(from.times, to.times);
          const redisSeconds = await Promise.all(redisCpu);
          const redisMs = (((redisSeconds[redisSeconds.length - 1] as number) - (redisSeconds[warmup - 1] as number)) * 1000) / measured;
          const coordinatorMs = cpu.slice(warmup).reduce((a, b) => a + b, 0) / Math.max(1, cpu.length - warmup);
          const row = {
            ...summariseSteps(reports.slice(warmup), workers),
            'coordinator CPU ms': coordinatorMs,
            'Redis CPU ms': redisMs,
            // Everything else that ran: the worker processes and their compute threads (and any other process).
            'workers CPU ms': busy.busyMs / measured - coordinatorMs - redisMs,
            'wall ms a step': (to.at - from.at) / measured,
            'machine CPU ms a step': busy.busyMs / measured,
            'machine busy': busy.fraction,
          };
          runs.set(`${layout.perJob}:${workers}`, row);
          rows.push({ run: `train ${preset}, ${layout.label}`, ...row });
          notes.push(`${layout.label}, ${workers} worker(s): run ${report.runId}, ${reports.length} steps, first ${warmup} not measured, final loss ${report.finalLosses?.total.toFixed(4) ?? '-'}, params sha256 ${report.paramsSha256.slice(0, 12)}…`);
        }
      }
      const t = await measureTransport(redis.url, paramBytes, options.quick ? 3 : 8);
      rows.push({ run: `transport ${(t.bytes / 2 ** 20).toFixed(1)} MiB`, 'raw SET GB/s': t.rawPutGBs, 'raw GET GB/s': t.rawGetGBs, 'blob put GB/s': t.blobPutGBs, 'blob get GB/s': t.blobGetGBs, 'blob get+finite GB/s': t.blobGetFiniteGBs, 'bf16 put GB/s': t.bf16PutGBs, 'bf16 get GB/s': t.bf16GetGBs });
      const fig = (perJob: number, workers: number, column: string): number => (runs.get(`${perJob}:${workers}`) as BenchRow)[column] as number;
      const speedup = (perJob: number): number => fig(perJob, 2, 'samples/s') / fig(perJob, 1, 'samples/s');
      // No schedule of the 2-worker step's CPU work on these cores is shorter than its CPU time / cores: measured, the
      // ceiling of the speedup on this machine (other processes' CPU counts too — run it on a quiet machine).
      const cores = machineInfo().cpus;
      const speedupCeiling = (perJob: number): number => fig(perJob, 1, 'wall ms a step') / (fig(perJob, 2, 'machine CPU ms a step') / cores);
      notes.push(`load average ${loadavg().map((x) => x.toFixed(1)).join(' ')} at the end (2 cores shared with other work: compute per job with 2 workers vs 1 shows how much of a second core the second worker got: ${(fig(2, 2, 'job compute ms') / fig(2, 1, 'job compute ms')).toFixed(2)}×)`);
      notes.push('overhead = 1 − (jobs per worker × mean job compute) / step time: everything that is not the compute one worker cannot avoid (transport, reduction, optimizer, queueing, and on this 2-core machine the coordinator and Redis competing with the workers for the cores)');
      notes.push(`speedup ceiling = 1-worker wall time a step / (2-worker machine CPU time a step / ${cores} cores): the 2-worker step cannot be shorter than its CPU work spread perfectly over the cores (machine CPU: every process, ours and others')`);
      notes.push('2 micro-batches per job: the worker sums them in float32 in order and sends one contribution (half the gradient bytes per sample); the jobs are the run\'s, so 1 and 2 workers end with the same parameters');
      return {
        area: 'training',
        machine: machineInfo('wasm'),
        rows,
        figures: {
          preset,
          shards: localShards(),
          samples_per_second_1: fig(2, 1, 'samples/s'),
          samples_per_second_2: fig(2, 2, 'samples/s'),
          speedup: speedup(2),
          speedup_1_micro_batch_per_job: speedup(1),
          machine_busy_fraction_2: fig(2, 2, 'machine busy'),
          machine_cpu_ms_per_step_2: fig(2, 2, 'machine CPU ms a step'),
          redis_cpu_ms_per_step_2: fig(2, 2, 'Redis CPU ms'),
          workers_cpu_ms_per_step_2: fig(2, 2, 'workers CPU ms'),
          speedup_ceiling_cpu: speedupCeiling(2),
          speedup_ceiling_cpu_1_micro_batch_per_job: speedupCeiling(1),
          transport_vs_raw: t.transportVsRaw,
          overhead_fraction: fig(2, 2, 'overhead'),
          overhead_fraction_1_worker: fig(2, 1, 'overhead'),
          overhead_fraction_1_micro_batch_per_job: fig(1, 2, 'overhead'),
          coordinator_cpu_ms_per_step: fig(2, 2, 'coordinator CPU ms'),
          coordinator_cpu_ms_per_step_1_micro_batch_per_job: fig(1, 2, 'coordinator CPU ms'),
          param_bytes: paramBytes,
          blob_put_gbs: t.blobPutGBs,
          blob_get_gbs: t.blobGetGBs,
          blob_get_finite_gbs: t.blobGetFiniteGBs,
          raw_set_gbs: t.rawPutGBs,
          raw_get_gbs: t.rawGetGBs,
        },
        notes,
      };
    } finally {
      info.disconnect();
      await redis.stop();
    }
  },
});

/** The CPU seconds a Redis server has used (user + system, its INFO cpu section). */
async function redisCpuSeconds(redis: Redis): Promise<number> {
  const text = await redis.info('cpu');
  const field = (name: string): number => Number(new RegExp(`^${name}:([0-9.]+)`, 'm').exec(text)?.[1] ?? NaN);
  return field('used_cpu_user') + field('used_cpu_sys');
}
