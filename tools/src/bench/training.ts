import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { StepReport } from '@m3ae/protocol';
import { BlobStore, LocalRedis } from '@m3ae/protocol';
import { trainLocal } from '../commands/train.js';
import { registerBenchArea } from './areas.js';
import { machineInfo, type BenchRow } from './report.js';

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

const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

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

registerBenchArea('training', {
  description: 'distributed training here: samples/s with 1 and 2 worker processes (small preset), step-time breakdown, blob transport vs raw Redis',
  async run(options) {
    const preset = options.extra['preset'] ?? 'small';
    const steps = options.quick ? 4 : 7;
    const warmup = 2;
    const redis = await LocalRedis.start();
    const work = join(tmpdir(), 'm3ae-bench-training');
    const rows: BenchRow[] = [];
    const notes: string[] = [];
    try {
      const runs: BenchRow[] = [];
      let paramBytes = 0;
      for (const workers of [1, 2]) {
        const reports: StepReport[] = [];
        const cpu: number[] = [];
        let last = process.cpuUsage();
        const report = await trainLocal(
          {
            local: true,
            workers,
            steps: String(steps),
            preset,
            globalBatch: '8',
            microBatch: '2',
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
            },
          },
        );
        paramBytes = reports[0]?.bytes.params ?? 0;
        const row = { ...summariseSteps(reports.slice(warmup), workers), 'coordinator CPU ms': cpu.slice(warmup).reduce((a, b) => a + b, 0) / Math.max(1, cpu.length - warmup) };
        runs.push(row);
        rows.push({ run: `train ${preset}`, ...row });
        notes.push(`${workers} worker(s): run ${report.runId}, ${reports.length} steps, first ${warmup} not measured, final loss ${report.finalLosses?.total.toFixed(4) ?? '-'}`);
      }
      const t = await measureTransport(redis.url, paramBytes, options.quick ? 3 : 8);
      rows.push({ run: `transport ${(t.bytes / 2 ** 20).toFixed(1)} MiB`, 'raw SET GB/s': t.rawPutGBs, 'raw GET GB/s': t.rawGetGBs, 'blob put GB/s': t.blobPutGBs, 'blob get GB/s': t.blobGetGBs, 'blob get+finite GB/s': t.blobGetFiniteGBs, 'bf16 put GB/s': t.bf16PutGBs, 'bf16 get GB/s': t.bf16GetGBs });
      const one = runs[0] as BenchRow;
      const two = runs[1] as BenchRow;
      notes.push(`load average ${loadavg().map((x) => x.toFixed(1)).join(' ')} at the end (2 cores shared with other work: compute per job with 2 workers vs 1 shows how much of a second core the second worker got: ${((two['job compute ms'] as number) / (one['job compute ms'] as number)).toFixed(2)}×)`);
      notes.push('overhead = 1 − (jobs per worker × mean job compute) / step time: everything that is not the compute one worker cannot avoid (transport, reduction, optimizer, queueing, and on this 2-core machine the coordinator and Redis competing with the workers for the cores)');
      return {
        area: 'training',
        machine: machineInfo('wasm'),
        rows,
        figures: {
          preset,
          samples_per_second_1: one['samples/s'] as number,
          samples_per_second_2: two['samples/s'] as number,
          speedup: (two['samples/s'] as number) / (one['samples/s'] as number),
          transport_vs_raw: t.transportVsRaw,
          overhead_fraction: two.overhead as number,
          overhead_fraction_1_worker: one.overhead as number,
          coordinator_cpu_ms_per_step: two['coordinator CPU ms'] as number,
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
      await redis.stop();
    }
  },
});
