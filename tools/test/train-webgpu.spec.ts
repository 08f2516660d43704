import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { useLavapipe } from '@m3ae/model';

const run = promisify(execFile);
const bin = resolve(import.meta.dirname, '../bin/m3ae.js');
const work = mkdtempSync(join(tmpdir(), 'm3ae-train-webgpu-'));
// The worker processes inherit VK_DRIVER_FILES (lavapipe: Mesa's Vulkan CPU driver, ≈4 GFLOP/s).
const icd = useLavapipe();

interface TrainReport {
  steps: number;
  paramsSha256: string;
  finalLosses: { total: number; mlm: number; mim: number; itm: number };
}

async function train(workers: number, backend: string): Promise<TrainReport> {
  const args = [bin, 'train', '--local', '--workers', String(workers), '--steps', '2', '--global-batch', '4', '--micro-batch', '2'];
  args.push('--work-dir', work, '--checkpoint-dir', join(work, `ckpt-${backend}-${workers}`), '--json', '--no-metrics');
  const { stdout } = await run(process.execPath, args, {
    env: { ...process.env, REDIS_URL: '', M3AE_REDIS_URL: '', M3AE_LOG_LEVEL: 'warn', M3AE_BACKEND: backend, VK_DRIVER_FILES: icd ?? '' },
    maxBuffer: 1 << 24,
  });
  return JSON.parse(stdout.trim().split('\n').pop() as string) as TrainReport;
}

describe.skipIf(icd === undefined)('m3ae train --local on the webgpu backend (lavapipe, tiny)', () => {
  it('1 and 2 worker processes end with bitwise-identical parameters, and losses as on wasm', async () => {
    const one = await train(1, 'webgpu');
    const two = await train(2, 'webgpu');
    expect([one.steps, two.steps]).toEqual([2, 2]);
    expect(two.paramsSha256).toBe(one.paramsSha256);
    const wasm = await train(1, 'wasm');
    for (const o of ['mlm', 'mim', 'itm'] as const) expect(Math.abs(one.finalLosses[o] - wasm.finalLosses[o]) / wasm.finalLosses[o], o).toBeLessThan(1e-4);
  }, 480_000);
});
