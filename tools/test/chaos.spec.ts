import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalRedis } from '@m3ae/protocol';
import { alive, childPids, startCli, type CliProcess } from './cli-process.js';

// `m3ae train --local --workers 3` on the real tiny model while everything around it is killed: every worker slot
// SIGKILLed at least once (one during start-up), the private Redis killed and restarted empty on its port, the
// coordinator (the train process itself) SIGKILLed and the run resumed from its checkpoint. The parameters must be
// bitwise those of an undisturbed run, the command must exit 0, and the restarts must be in the metrics.
const STEPS = 8;
const ENV = { REDIS_URL: '', M3AE_REDIS_URL: '', M3AE_LOG_FORMAT: 'json', M3AE_LOG_LEVEL: 'info', M3AE_CHECKPOINT_EVERY: '2' };

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/** The worker processes and the redis-server of a `train --local` process. */
function family(p: CliProcess): { workers: number[]; redis: number[] } {
  const kids = childPids(p.child.pid as number);
  return { workers: kids.filter((k) => / worker --config /.test(cmdline(k))), redis: kids.filter((k) => cmdline(k).startsWith('redis-server')) };
}

async function until<T>(what: string, f: () => T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// The trainer's line per step: `{"step": s (0-based, as StepReport.step), "of": total, ..., "msg": "step done"}`.
const stepsDone = (p: CliProcess): number => Math.max(0, ...[...p.output().matchAll(/"step":(\d+),"of":/g)].map((m) => Number(m[1]) + 1));

function report(p: CliProcess): { paramsSha256: string; steps: number; startStep: number; workerRestarts: number; stopped: boolean } {
  const line = p.output().trim().split('\n').filter((l) => l.startsWith('{"runId"')).pop();
  if (!line) throw new Error(`no report in:\n${p.output().slice(-2000)}`);
  return JSON.parse(line) as ReturnType<typeof report>;
}

describe('chaos: m3ae train --local --workers 3 on the real tiny model', () => {
  it('survives killed workers, a Redis restarted empty and a killed coordinator, and ends bitwise-equal to an undisturbed run', async () => {
    const work = await mkdtemp(join(tmpdir(), 'm3ae-chaos-'));
    cleanups.push(() => rm(work, { recursive: true, force: true }));
    const args = (ckpt: string): string[] => ['train', '--local', '--steps', String(STEPS), '--run-id', 'chaos', '--work-dir', work, '--checkpoint-dir', join(work, ckpt), '--json', '--metrics-port', '0'];

    // The undisturbed reference (2 workers: the parameters do not depend on the number of workers).
    const reference = startCli([...args('ckpt-reference'), '--workers', '2'], ENV);
    cleanups.push(() => void reference.child.kill('SIGKILL'));
    const ref = await reference.exit(300_000);
    expect(ref.code, ref.stderr.slice(-2000)).toBe(0);
    const expected = report(reference).paramsSha256;

    // Phase 1: workers killed (one during start-up), Redis restarted empty, then the coordinator SIGKILLed.
    const first = startCli([...args('ckpt-chaos'), '--workers', '3'], ENV);
    cleanups.push(() => void first.child.kill('SIGKILL'));
    const killedSlots = new Set<string>();
    const kill = (pid: number): void => {
      killedSlots.add(/--id (\S+)/.exec(cmdline(pid))?.[1] ?? String(pid));
      process.kill(pid, 'SIGKILL');
    };
    // During start-up: the first worker process as soon as it exists.
    kill(await until('a worker process', () => family(first).workers[0], 120_000));
    await first.waitFor('"msg":"trainer ready"', 120_000);
    await until('step 1', () => (stepsDone(first) >= 1 ? true : undefined), 180_000);
    for (const pid of family(first).workers.filter((pid) => !killedSlots.has(/--id (\S+)/.exec(cmdline(pid))?.[1] ?? ''))) kill(pid);
    expect([...killedSlots].sort()).toEqual(['chaos-w0', 'chaos-w1', 'chaos-w2']);
    // The private Redis dies and an empty one takes its port.
    const port = Number(/"redis":"redis:\/\/127\.0\.0\.1:(\d+)"/.exec(first.output())?.[1]);
    const [redisPid] = family(first).redis;
    expect(redisPid).toBeDefined();
    process.kill(redisPid as number, 'SIGKILL');
    await until('the old redis-server gone', () => (alive(redisPid as number) ? undefined : true), 10_000);
    const replacement = await LocalRedis.start({ port });
    cleanups.push(() => replacement.stop());
    // The coordinator: SIGKILLed once a checkpoint after the Redis restart exists (step 4).
    await until('step 4', () => (stepsDone(first) >= 4 ? true : undefined), 240_000);
    // The coordinator saw the empty Redis and repopulated it; the supervisor replaced every killed worker.
    expect(first.output()).toContain('the run state is gone from Redis (restarted or flushed)');
    expect([...first.output().matchAll(/"msg":"worker \d exited \(signal SIGKILL\); restarting it/g)].length).toBeGreaterThanOrEqual(3);
    const orphans = family(first).workers;
    first.child.kill('SIGKILL');
    await first.exit(10_000);
    // Its workers notice that their parent is gone and exit on their own.
    await until('the orphaned workers gone', () => (orphans.every((pid) => !alive(pid)) ? true : undefined), 10_000);
    await replacement.stop();

    // Phase 2: resumed; one worker killed during start-up again; the restart shows in /metrics.
    const second = startCli([...args('ckpt-chaos'), '--workers', '3', '--resume'], ENV);
    cleanups.push(() => void second.child.kill('SIGKILL'));
    const url = await until('the metrics URL', () => /"url":"(http:\/\/127\.0\.0\.1:\d+)","msg":"metrics, health/.exec(second.output())?.[1], 120_000);
    process.kill(await until('a worker process', () => family(second).workers[0], 60_000), 'SIGKILL');
    let restartsSeen: number | undefined;
    for (let i = 0; i < 100 && restartsSeen === undefined; i++) {
      const text = await fetch(`${url}/metrics`).then((r) => r.text()).catch(() => '');
      const m = /^m3ae_worker_restarts_total\{[^}]*slot="\d"[^}]*\} (\d+)/m.exec(text);
      if (m && Number(m[1]) >= 1) restartsSeen = Number(m[1]);
      else await new Promise((r) => setTimeout(r, 300));
    }
    expect(restartsSeen).toBeGreaterThanOrEqual(1);
    const done = await second.exit(300_000);
    expect(done.code, done.stderr.slice(-2000)).toBe(0);
    const final = report(second);
    expect(final.startStep).toBeGreaterThanOrEqual(4);
    expect(final.startStep + final.steps).toBe(STEPS);
    expect(final.workerRestarts).toBeGreaterThanOrEqual(1);
    expect(final.paramsSha256).toBe(expected);
  }, 900_000);
});
