import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalRedis, type RunConfig } from '@m3ae/protocol';
import { runKeys, serialReference, syntheticRun } from './training-harness.js';

const run = promisify(execFile);
const bin = resolve(import.meta.dirname, '../bin/m3ae.js');
const work = mkdtempSync(join(tmpdir(), 'm3ae-train-'));

interface TrainReport {
  runId: string;
  steps: number;
  workers: number;
  paramsSha256: string;
  checkpoint: string;
  finalLosses: { total: number; mlm: number; mim: number; itm: number };
  redis: string;
  blobRedis: string[];
}

/** Whether something accepts connections at a redis:// URL's host and port. */
async function listening(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return await new Promise((done) => {
    const socket = connect(Number(port), hostname, () => (socket.destroy(), done(true)));
    socket.on('error', () => done(false));
  });
}

async function train(workers: number, extra: string[] = [], env: NodeJS.ProcessEnv = {}, steps = 3): Promise<TrainReport> {
  const { stdout } = await run(process.execPath, [bin, 'train', '--local', '--workers', String(workers), '--steps', String(steps), '--work-dir', work, '--checkpoint-dir', join(work, `ckpt-${workers}`), '--json', '--no-metrics', ...extra], {
    env: { ...process.env, REDIS_URL: '', M3AE_REDIS_URL: '', M3AE_LOG_LEVEL: 'warn', ...env },
    maxBuffer: 1 << 24,
  });
  return JSON.parse(stdout.trim().split('\n').pop() as string) as TrainReport;
}

/** How many of a run's worker processes computed at least one job (from the `worker stopped` line of each log). */
function computedBy(r: TrainReport): number {
  let n = 0;
  for (let i = 0; i < r.workers; i++) {
    const log = readFileSync(join(work, 'logs', `${r.runId}-worker-${i}.log`), 'utf8');
    const stats = /"stats":\{"completed":(\d+)/.exec(log);
    if (!stats) throw new Error(`worker ${i} of ${r.runId} logged no stats:\n${log.slice(-1000)}`);
    if (Number(stats[1]) > 0) n++;
  }
  return n;
}

describe('m3ae train --local (real processes, tiny preset, real compute)', () => {
  it('without redis-server on the PATH, stops with the command that installs it', async () => {
    const r = run(process.execPath, [bin, 'train', '--local', '--workers', '1', '--work-dir', work, '--no-metrics'], { env: { ...process.env, PATH: '/nonexistent', REDIS_URL: '', M3AE_REDIS_URL: '' } });
    await expect(r).rejects.toMatchObject({ stderr: expect.stringContaining('install it with: sudo apt-get install -y redis-server') });
  });

  it('1, 2 and 3 worker processes (and 2 with the blobs in two more Redis servers) end with bitwise-identical parameters', async () => {
    const one = await train(1);
    // Worker logs at info: each says how many jobs it computed when it stops.
    const two = await train(2, [], { M3AE_LOG_LEVEL: 'info' });
    // The third run uses the Redis at 127.0.0.1:6379 instead of a private one, and must leave nothing in it.
    const three = await train(3, [], { REDIS_URL: 'redis://127.0.0.1:6379', M3AE_LOG_LEVEL: 'info' });
    expect(one.redis).toMatch(/^redis:\/\/127\.0\.0\.1:\d+$/);
    expect(one.redis).not.toBe('redis://127.0.0.1:6379');
    // More than one worker process computed in the multi-worker runs.
    expect(computedBy(two)).toBeGreaterThan(1);
    expect(computedBy(three)).toBeGreaterThan(1);
    expect(three.redis).toBe('redis://127.0.0.1:6379');
    expect([one.steps, two.steps, three.steps]).toEqual([3, 3, 3]);
    expect(Number.isFinite(one.finalLosses.total)).toBe(true);
    expect(two.paramsSha256).toBe(one.paramsSha256);
    expect(three.paramsSha256).toBe(one.paramsSha256);
    // The checkpoint on disk holds exactly these parameters.
    const { stdout } = await run(process.execPath, [bin, 'checkpoint', 'inspect', three.checkpoint]);
    const info = JSON.parse(stdout) as { step: number; params_sha256: string };
    expect(info).toMatchObject({ step: 3, params_sha256: one.paramsSha256 });
    expect(await runKeys(three.runId)).toEqual([]);
    // The blobs in two more private Redis servers, spread by chunk: the same bits, and the servers stop with the run.
    const spread = await train(2, ['--blob-redis', '2']);
    expect(spread.blobRedis).toHaveLength(2);
    expect(spread.blobRedis).not.toContain(spread.redis);
    expect(spread.paramsSha256).toBe(one.paramsSha256);
    for (const url of [spread.redis, ...spread.blobRedis]) expect(await listening(url), url).toBe(false);
    // Four whole runs (about 1 min on an idle 2-core machine): room for a loaded one.
  }, 420_000);
});

/** A child process with its output collected, and a way to wait for a line. */
class Proc {
  readonly child: ChildProcess;
  out = '';
  private waiters: { re: RegExp; resolve: () => void }[] = [];
  constructor(args: string[], env: NodeJS.ProcessEnv) {
    this.child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, M3AE_LOG_FORMAT: 'json', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (d: Buffer): void => {
      this.out += d.toString();
      this.waiters = this.waiters.filter((w) => (w.re.test(this.out) ? (w.resolve(), false) : true));
    };
    this.child.stdout?.on('data', onData);
    this.child.stderr?.on('data', onData);
  }
  waitFor(re: RegExp, timeoutMs = 60_000): Promise<void> {
    if (re.test(this.out)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${re} in:\n${this.out.slice(-2000)}`)), timeoutMs);
      this.waiters.push({ re, resolve: () => (clearTimeout(t), resolve()) });
    });
  }
  exit(): Promise<number | null> {
    if (this.child.exitCode !== null) return Promise.resolve(this.child.exitCode);
    return new Promise((r) => this.child.once('exit', (code) => r(code)));
  }
  summary(): { paramsSha256: string; startStep: number; steps: number; recoveries: number } {
    const line = this.out.split('\n').find((l) => l.includes('"run finished"'));
    if (!line) throw new Error(`no summary in:\n${this.out.slice(-2000)}`);
    return (JSON.parse(line) as { summary: { paramsSha256: string; startStep: number; steps: number; recoveries: number } }).summary;
  }
}

describe('m3ae train --local: shards and jobs of several micro-batches (tiny preset, real compute)', () => {
  it('fx53: 1, 2 and 3 workers × 1 or 3 shards × 1 or 4 micro-batches per job give bitwise-identical parameters; f32 with 4 per job: the same for 1 and 3 workers', async () => {
    const hashes = new Map<string, string>();
    for (const shards of [1, 3]) {
      for (const perJob of [1, 4]) {
        for (const workers of [1, 2, 3]) {
          // 24 samples a step in micro-batches of 2: 12 jobs, or 3 jobs of 4 micro-batches summed on the worker; the
          // parameters and gradients travel as 1 or 3 blobs, reduced and updated by 1 or 3 coordinator shards.
          const args = ['--grad-encoding', 'fx53', '--micro-batches-per-job', String(perJob), '--shards', String(shards), '--global-batch', '24'];
          const r = await train(workers, [...args, '--checkpoint-dir', join(work, `ckpt-fx-${shards}-${perJob}-${workers}`)], { M3AE_LOG_LEVEL: 'info' }, 2);
          expect(r.steps).toBe(2);
          if (workers > 1) expect(computedBy(r)).toBeGreaterThan(1);
          hashes.set(`${workers} workers × ${shards} shards × ${perJob}`, r.paramsSha256);
        }
      }
    }
    expect(hashes.size).toBe(12);
    expect(new Set(hashes.values()).size, JSON.stringify([...hashes])).toBe(1);
    // f32 summed in micro-batch order on the worker: the jobs are the run's, so the worker count does not matter,
    // but the grouping does (not the parameters of 1 micro-batch per job, nor the exact sum's).
    const f32 = async (workers: number, perJob: number): Promise<string> =>
      (await train(workers, ['--micro-batches-per-job', String(perJob), '--global-batch', '24', '--checkpoint-dir', join(work, `ckpt-f32-${perJob}-${workers}`)], { M3AE_LOG_LEVEL: 'info' }, 2)).paramsSha256;
    const grouped = await f32(1, 4);
    expect(await f32(3, 4)).toBe(grouped);
    const single = await f32(1, 1);
    expect(new Set([grouped, single, [...hashes.values()][0]]).size).toBe(3);
    // Fifteen short runs (each a few seconds on an idle machine): room for a loaded one.
  }, 600_000);
});

describe('faults with real processes (synthetic compute)', () => {
  let redis: LocalRedis;
  const procs: Proc[] = [];
  beforeAll(async () => {
    redis = await LocalRedis.start();
  });
  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    await redis.stop();
  });
  const configFile = (config: RunConfig, name: string): string => {
    const f = join(work, `${name}.json`);
    writeFileSync(f, JSON.stringify(config));
    return f;
  };
  const start = (args: string[]): Proc => {
    const p = new Proc([...args, '--metrics-port', '0'], { M3AE_REDIS_URL: redis.url, REDIS_URL: '' });
    procs.push(p);
    return p;
  };

  // f32 in job order reduced by 3 reducer processes (they exit with a SIGKILLed coordinator), and exact fixed point with jobs of 2 micro-batches summed
  // on the worker (the serial reference sums every micro-batch exactly, so it is the reference for any grouping).
  // (200,000 parameters: 4 gradient blocks, room for 3 shards.)
  for (const [label, grads, paramCount, reducers] of [
    ['f32, 3 shards in reducer processes', { shards: 3 }, 200_000, 'processes'],
    ['fx53, 2 micro-batches per job', { gradEncoding: 'fx53', microBatchesPerJob: 2 }, 30_000, 'threads'],
  ] as const) {
    it(`a worker killed with SIGKILL mid-step: its job is redelivered and the result is exact (${label})`, async () => {
      const config = syntheticRun({ training: { steps: 5, ...grads }, compute: { synthetic: { workMsPerSample: 250, paramCount } }, worker: { lockDurationMs: 1500 }, coordinator: { reducers } }, redis.url);
      const file = configFile(config, `kill-worker-${label.replace(/\W+/g, '-')}`);
      const w1 = start(['worker', '--config', file, '--id', 'victim']);
      const w2 = start(['worker', '--config', file, '--id', 'survivor']);
      await Promise.all([w1.waitFor(/worker ready/), w2.waitFor(/worker ready/)]);
      const c = start(['coordinator', '--config', file]);
      await c.waitFor(/"step":1,.*"step done"/);
      // Both workers are busy with step 2's 500 ms jobs now.
      await new Promise((r) => setTimeout(r, 250));
      w1.child.kill('SIGKILL');
      expect(await c.exit()).toBe(0);
      expect(c.out).toMatch(/a job was redelivered/);
      expect(c.summary().paramsSha256).toBe(serialReference(config));
      w2.child.kill('SIGTERM');
      expect(await w2.exit()).toBe(0);
      expect(await runKeys(config.runId, redis.url)).toEqual([]);
    });

    it(`the coordinator killed with SIGKILL and restarted with --resume: cleared, resumed, exact (${label})`, async () => {
      const config = syntheticRun({ training: { steps: 6, ...grads }, checkpoint: { every: 1 }, compute: { synthetic: { workMsPerSample: 60, paramCount } }, coordinator: { reducers } }, redis.url);
      const file = configFile(config, `kill-coordinator-${label.replace(/\W+/g, '-')}`);
      const workers = [start(['worker', '--config', file]), start(['worker', '--config', file])];
      const first = start(['coordinator', '--config', file]);
      await first.waitFor(/"step":3,"path".*"checkpoint written"/);
      first.child.kill('SIGKILL');
      await first.exit();
      const second = start(['coordinator', '--config', file, '--resume']);
      expect(await second.exit()).toBe(0);
      const s = second.summary();
      expect(s.startStep).toBeGreaterThanOrEqual(3);
      expect(s.startStep + s.steps).toBe(6);
      expect(s.paramsSha256).toBe(serialReference(config));
      for (const w of workers) w.child.kill('SIGTERM');
      await Promise.all(workers.map(async (w) => w.exit()));
      expect(await runKeys(config.runId, redis.url)).toEqual([]);
    });
  }

  it('SIGTERM: the coordinator writes a checkpoint and exits; a worker with another model is refused', async () => {
    const config = syntheticRun({ training: { steps: 50 }, compute: { synthetic: { workMsPerSample: 100 } } }, redis.url);
    const file = configFile(config, 'sigterm');
    const worker = start(['worker', '--config', file]);
    const c = start(['coordinator', '--config', file]);
    await c.waitFor(/"step":1,.*"step done"/);
    // Its telemetry: Prometheus text, readiness, and the /status document of the run.
    const url = /"url":"(http:\/\/[^"]+)".*"metrics, health, status/.exec(c.out)?.[1] as string;
    const status = (await (await fetch(`${url}/status`)).json()) as { run: string; state: string; step: number; totalSteps: number };
    expect(status).toMatchObject({ run: config.runId, state: 'training', totalSteps: 50 });
    expect(status.step).toBeGreaterThanOrEqual(1);
    expect(await (await fetch(`${url}/metrics`)).text()).toMatch(/m3ae_steps_completed_total\{run="[^"]+"\} [1-9]/);
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    const otherFile = configFile({ ...config, compute: { ...config.compute, synthetic: { ...config.compute.synthetic, paramCount: 1234 } } }, 'sigterm-other');
    const wrong = start(['worker', '--config', otherFile]);
    expect(await wrong.exit()).toBe(2);
    expect(wrong.out).toMatch(/refuses run .* model manifest/);
    c.child.kill('SIGTERM');
    expect(await c.exit()).toBe(0);
    expect(c.out).toMatch(/"run stopped"/);
    const ckpt = JSON.parse(c.out.split('\n').find((l) => l.includes('"run stopped"')) as string) as { summary: { checkpoint: string; stopped: boolean } };
    expect(ckpt.summary.stopped).toBe(true);
    expect(readFileSync(ckpt.summary.checkpoint).byteLength).toBeGreaterThan(config.compute.synthetic.paramCount * 4);
    worker.child.kill('SIGTERM');
    expect(await worker.exit()).toBe(0);
    expect(await runKeys(config.runId, redis.url)).toEqual([]);
  });
});
