import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, LocalRedis } from '@m3ae/protocol';
import { alive, childPids, startCli, startupMs } from './cli-process.js';

// Every failure of the real CLI: the exit code, the time to exit and the one line that names cause and fix.
// Times are measured against `m3ae --version` on the same machine (loading the program alone takes seconds on a
// loaded 2-core machine): a fatal start-up error must end the process within 5 s of that, counted twice because a
// worker's compute thread loads TensorFlow.js a second time.
const SYNTHETIC = { M3AE_COMPUTE: 'synthetic', M3AE_LOG_LEVEL: 'info' };
let startup = 0;
let work = '';
const budget = (extraSeconds = 0): number => 2 * startup + 5000 + extraSeconds * 1000;

beforeAll(async () => {
  startup = await startupMs();
  work = await mkdtemp(join(tmpdir(), 'm3ae-failures-'));
}, 120_000);
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** A port nobody answers on. */
async function refusedUrl(): Promise<string> {
  return `redis://127.0.0.1:${await freePort()}`;
}

/** The last line on stderr (bin/m3ae.js prints the fatal error there as one line). */
function fatalLine(stderr: string): string {
  return stderr.trim().split('\n').filter((l) => l.startsWith('m3ae: ')).pop() ?? '';
}

describe('fatal start-up errors end the process with one line naming the cause and the fix', () => {
  it('port in use: coordinator and worker name the port and --metrics-port', async () => {
    const server: Server = createServer();
    const port = await new Promise<number>((ok) => server.listen(0, '127.0.0.1', () => ok((server.address() as { port: number }).port)));
    try {
      for (const cmd of ['coordinator', 'worker']) {
        const r = await startCli([cmd, '--run-id', `port-${cmd}`, '--metrics-port', String(port)], SYNTHETIC).exit(budget() + 30_000);
        expect(r.code, r.stderr).toBe(1);
        expect(fatalLine(r.stderr)).toBe(
          `m3ae: cannot serve metrics on 127.0.0.1:${port}: the port is in use (EADDRINUSE); choose another port with --metrics-port or M3AE_METRICS_PORT (0 picks a free one), or pass --no-metrics`,
        );
        expect(r.ms).toBeLessThan(budget());
      }
    } finally {
      server.close();
    }
  }, 180_000);

  it('missing dataset: coordinator and worker name the path', async () => {
    const missing = join(work, 'no-such-shards');
    for (const cmd of ['coordinator', 'worker']) {
      const r = await startCli([cmd, '--data', missing, '--no-metrics']).exit(budget() + 30_000);
      expect(r.code, r.stderr).toBe(1);
      expect(fatalLine(r.stderr)).toMatch(new RegExp(`^m3ae: .*${missing}.*(does not exist|not readable).*(expected a folder written by m3ae prepare|set data.tokenizer)`));
      expect(r.ms).toBeLessThan(budget());
    }
  }, 180_000);

  it('Redis refused: coordinator, worker and train --local give up after --redis-timeout with ECONNREFUSED, without ioredis noise', async () => {
    const url = await refusedUrl();
    const address = url.slice('redis://'.length);
    for (const args of [
      ['coordinator', '--no-metrics'],
      ['worker', '--no-metrics'],
      ['train', '--local', '--synthetic', '--workers', '1', '--no-metrics', '--work-dir', join(work, 'refused')],
    ]) {
      const r = await startCli([...args, '--redis-url', url, '--redis-timeout', '1'], SYNTHETIC).exit(budget(1) + 30_000);
      expect(r.code, r.stderr).toBe(1);
      expect(fatalLine(r.stderr)).toBe(`m3ae: cannot reach Redis at ${address} (ECONNREFUSED) after 1 s; is redis-server running? (--redis-timeout)`);
      expect(r.stdout + r.stderr).not.toContain('Unhandled error event');
      expect(r.ms).toBeLessThan(budget(1));
    }
  }, 240_000);

  it('Redis unresponsive (accepts, never answers): the coordinator names the address and ETIMEDOUT', async () => {
    const sockets = new Set<import('node:net').Socket>();
    const silent: Server = createServer((s) => sockets.add(s));
    const port = await new Promise<number>((ok) => silent.listen(0, '127.0.0.1', () => ok((silent.address() as { port: number }).port)));
    try {
      const r = await startCli(['coordinator', '--no-metrics', '--redis-url', `redis://127.0.0.1:${port}`, '--redis-timeout', '2'], SYNTHETIC).exit(budget(2) + 30_000);
      expect(r.code, r.stderr).toBe(1);
      expect(fatalLine(r.stderr)).toBe(`m3ae: cannot reach Redis at 127.0.0.1:${port} (ETIMEDOUT) after 2 s; is redis-server running? (--redis-timeout)`);
      expect(r.stdout + r.stderr).not.toContain('Unhandled error event');
      expect(r.ms).toBeLessThan(budget(2));
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  }, 120_000);

  it('Redis with a password it does not get: fails at once naming the password setting', async () => {
    const redis = await LocalRedis.start({ args: ['--requirepass', 'hunter2 with spaces'] });
    try {
      const r = await startCli(['coordinator', '--no-metrics', '--redis-url', redis.url, '--redis-timeout', '30'], SYNTHETIC).exit(budget() + 30_000);
      expect(r.code, r.stderr).toBe(1);
      expect(fatalLine(r.stderr)).toBe(`m3ae: Redis at 127.0.0.1:${redis.port} refused the connection (NOAUTH); check the password (M3AE_REDIS_PASSWORD or the URL) and user name`);
      expect(r.ms).toBeLessThan(budget());
    } finally {
      await redis.stop();
    }
  }, 120_000);
});

describe('SIGTERM is honoured while connecting', () => {
  it.each([
    ['coordinator', ['coordinator', '--no-metrics'], '"msg":"run configuration"'],
    ['worker', ['worker', '--no-metrics'], '"msg":"connecting to Redis"'],
    ['train --local', ['train', '--local', '--synthetic', '--workers', '1', '--no-metrics', '--work-dir', 'WORK'], '"msg":"training"'],
  ])('%s ends within seconds, non-zero', async (_name, args, ready) => {
    const p = startCli([...args.map((a) => (a === 'WORK' ? join(work, 'sigterm') : a)), '--redis-url', await refusedUrl(), '--redis-timeout', '120'], { ...SYNTHETIC, M3AE_LOG_FORMAT: 'json' });
    await p.waitFor(ready, 60_000);
    await new Promise((r) => setTimeout(r, 1000));
    const pids = childPids(p.child.pid as number);
    const t = performance.now();
    p.child.kill('SIGTERM');
    const r = await p.exit(30_000);
    expect(performance.now() - t).toBeLessThan(5000);
    expect(r.code === null ? r.signal : r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/stopped (while waiting for Redis|by SIGTERM)/);
    await new Promise((r2) => setTimeout(r2, 500));
    for (const pid of pids) expect(alive(pid), `child ${pid} outlived the command`).toBe(false);
  }, 120_000);
});

describe('m3ae train --local never outlives its work', () => {
  it('all workers dead with no restart budget: the run fails with the end of the last worker log', async () => {
    const p = startCli(['train', '--local', '--synthetic', '--workers', '2', '--max-restarts', '0', '--steps', '100000', '--no-metrics', '--work-dir', join(work, 'budget')], {
      ...SYNTHETIC,
      M3AE_LOG_FORMAT: 'json',
    });
    await p.waitFor('"msg":"trainer ready"', 120_000);
    const workers = childPids(p.child.pid as number).filter((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('worker'));
    expect(workers).toHaveLength(2);
    const t = performance.now();
    for (const pid of workers) process.kill(pid, 'SIGKILL');
    const r = await p.exit(60_000);
    expect(r.code, r.stderr).toBe(1);
    expect(performance.now() - t).toBeLessThan(15_000);
    expect(r.stderr).toMatch(/m3ae: every worker exited and none has restart budget left \(at most 0 restarts per worker in 600 s: --max-restarts, --restart-window\); the last, worker \d, ended with signal SIGKILL; (the end of .*worker-\d\.log:|its log .*worker-\d\.log is empty)/);
  }, 240_000);

  it('a run stopped by SIGTERM after a step keeps that step, stops workers, coordinator and Redis within seconds, exit 143', async () => {
    const p = startCli(['train', '--local', '--synthetic', '--workers', '2', '--steps', '100000', '--no-metrics', '--json', '--work-dir', join(work, 'stop')], { ...SYNTHETIC, M3AE_LOG_FORMAT: 'json' });
    await p.waitFor('"msg":"step done"', 120_000);
    const children = childPids(p.child.pid as number);
    expect(children.length).toBe(3); // redis-server and 2 workers
    const t = performance.now();
    p.child.kill('SIGTERM');
    const r = await p.exit(60_000);
    expect(performance.now() - t).toBeLessThan(10_000);
    expect(r.code, r.stderr).toBe(143);
    const report = JSON.parse(r.stdout.trim().split('\n').pop() as string) as { stopped: boolean; steps: number; checkpoint: string };
    expect(report.stopped).toBe(true);
    expect(report.steps).toBeGreaterThanOrEqual(1);
    expect(report.checkpoint).toMatch(new RegExp(`ckpt-${report.steps}\\.safetensors$`));
    for (const pid of children) expect(alive(pid), `child ${pid} outlived the command`).toBe(false);
  }, 240_000);
});

describe('m3ae bench never outlives its work', () => {
  it('bench training stopped by SIGTERM mid-run ends within seconds, exit 143, its Redis and workers gone (no next run)', async () => {
    const p = startCli(['bench', 'training', '--quick'], { M3AE_LOG_FORMAT: 'json' });
    const pid = p.child.pid as number;
    const isWorker = (c: number): boolean => {
      try {
        return readFileSync(`/proc/${c}/cmdline`, 'utf8').includes('worker');
      } catch {
        return false;
      }
    };
    // Its first local run is under way once a worker process exists (its private Redis started before it).
    let children: number[] = [];
    for (const deadline = Date.now() + 120_000; Date.now() < deadline && !children.some(isWorker); ) {
      await new Promise((r) => setTimeout(r, 200));
      children = childPids(pid);
    }
    expect(children.some(isWorker), p.output().slice(-2000)).toBe(true);
    expect(children.length).toBeGreaterThanOrEqual(2); // redis-server and the worker
    const t = performance.now();
    p.child.kill('SIGTERM');
    const r = await p.exit(30_000);
    expect(performance.now() - t).toBeLessThan(5000);
    expect(r.code, r.stderr).toBe(143);
    expect(r.stderr).toContain('m3ae bench training: stopped by SIGTERM; no report written');
    // Killed at its exit (SIGKILL): gone within a moment.
    for (const until = Date.now() + 5000; Date.now() < until && children.some(alive); ) await new Promise((r2) => setTimeout(r2, 100));
    for (const c of children) expect(alive(c), `child ${c} outlived the bench`).toBe(false);
  }, 240_000);
});

describe('m3ae doctor', () => {
  it('exits 1 when Redis is down, with the real cause', async () => {
    const url = await refusedUrl();
    const r = await startCli(['doctor'], { M3AE_REDIS_URL: url, REDIS_URL: '' }).exit(budget(2) + 30_000);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`FAIL redis at ${url}: no answer (ECONNREFUSED)`);
    expect(r.ms).toBeLessThan(budget(2));
  }, 120_000);

  it('uses the apps’ password setting, never prints it, and names NOAUTH without it', async () => {
    const password = 'hunter2 @/:%ü';
    const redis = await LocalRedis.start({ args: ['--requirepass', password] });
    try {
      const ok = await startCli(['doctor', '--json'], { M3AE_REDIS_URL: redis.url, REDIS_URL: '', M3AE_REDIS_PASSWORD: password }).exit(budget(2) + 30_000);
      const report = JSON.parse(ok.stdout) as { redis: { answers: boolean }; node: { ok: boolean }; backend: { chosen: string | null }; redisServer: { onPath: boolean } };
      expect(report.redis.answers).toBe(true);
      expect(ok.code).toBe(report.node.ok && report.backend.chosen !== null && report.redisServer.onPath ? 0 : 1);
      const denied = await startCli(['doctor'], { M3AE_REDIS_URL: `redis://127.0.0.1:${redis.port}`, REDIS_URL: '' }).exit(budget(2) + 30_000);
      expect(denied.code).toBe(1);
      expect(denied.stdout).toContain(`FAIL redis at redis://127.0.0.1:${redis.port}: no answer (NOAUTH)`);
      const inUrl = await startCli(['doctor'], { M3AE_REDIS_URL: `redis://:${encodeURIComponent('wrong pass')}@127.0.0.1:${redis.port}`, REDIS_URL: '' }).exit(budget(2) + 30_000);
      expect(inUrl.stdout).toContain(`FAIL redis at redis://:***@127.0.0.1:${redis.port}: no answer (WRONGPASS)`);
      for (const out of [ok.stdout, denied.stdout, inUrl.stdout]) expect(out).not.toMatch(/hunter2|wrong/);
    } finally {
      await redis.stop();
    }
  }, 120_000);
});
