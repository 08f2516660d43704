import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const bin = resolve(import.meta.dirname, '../bin/m3ae.js');

describe('the m3ae program (built, run as a real process)', () => {
  it('prints help and its version', async () => {
    const help = await run('node', [bin, '--help']);
    expect(help.stdout).toContain('Usage: m3ae');
    expect(help.stdout).toContain('doctor');
    const version = await run('node', [bin, '--version']);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('doctor reports node, the backend choice with reasons, Redis and memory, and exits 0', async () => {
    const { stdout } = await run('node', [bin, 'doctor', '--json'], { env: { ...process.env, M3AE_BACKEND: '', REDIS_URL: 'redis://127.0.0.1:6379' } });
    const report = JSON.parse(stdout) as {
      node: { ok: boolean };
      backend: { chosen: string; attempts: { backend: string; ok: boolean; reason?: string }[] };
      redis: { answers: boolean; maxmemoryPolicy?: string };
      redisServer: { onPath: boolean };
      memory: { freeBytes: number };
      webgpu: { ok: true; info: { vendor: string; description: string; features: string[] } } | { ok: false; reason: string };
    };
    expect(report.node.ok).toBe(true);
    // The rule, not this machine: the chosen backend is the last one tried, every one before it failed with a reason.
    const last = report.backend.attempts[report.backend.attempts.length - 1];
    expect(last).toMatchObject({ backend: report.backend.chosen, ok: true });
    expect(report.backend.attempts.slice(0, -1).every((a) => !a.ok && (a.reason ?? '').length > 0)).toBe(true);
    // The WebGPU adapter is named (lavapipe where the test prerequisites installed it), or why there is none.
    if (report.webgpu.ok) expect(report.webgpu.info.vendor.length + report.webgpu.info.description.length).toBeGreaterThan(0);
    else expect(report.webgpu.reason).toMatch(/Dawn|WebGPU/);
    expect(report.redis.answers).toBe(true);
    expect(report.redisServer.onPath).toBe(true);
    expect(report.memory.freeBytes).toBeGreaterThan(0);
  });

  it('doctor says plainly when Redis does not answer, without printing the password, and exits 1', async () => {
    const failed = run('node', [bin, 'doctor'], { env: { ...process.env, M3AE_REDIS_URL: '', REDIS_URL: 'redis://user:hunter2@127.0.0.1:1' } });
    await expect(failed).rejects.toMatchObject({ code: 1, stdout: expect.stringContaining('FAIL redis at redis://user:***@127.0.0.1:1: no answer (ECONNREFUSED)') });
    await expect(failed).rejects.toMatchObject({ stdout: expect.not.stringContaining('hunter2') });
  });

  it('bench writes a JSON report with machine, rows and figures', async () => {
    const out = resolve(import.meta.dirname, '../../tmp/bench-backend.json');
    const { stdout } = await run('node', [bin, 'bench', 'backend', '--quick', '--backend', 'wasm', '--json', out]);
    expect(stdout).toContain('GFLOP/s');
    const { readFile } = await import('node:fs/promises');
    const report = JSON.parse(await readFile(out, 'utf8')) as { area: string; machine: { cpus: number }; rows: unknown[]; figures: Record<string, number> };
    expect(report.area).toBe('backend');
    expect(report.machine.cpus).toBeGreaterThan(0);
    expect(report.rows.length).toBe(2);
    expect(report.figures['wasm_gflops']).toBeGreaterThan(0);
  });

  it('rejects an unknown bench area naming the choices', async () => {
    await expect(run('node', [bin, 'bench', 'nope'])).rejects.toMatchObject({ stderr: expect.stringContaining('bench area "nope" is unknown; expected one of backend') });
  });
});
