import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { SafetensorsFile, useLavapipe } from '@m3ae/model';

const run = promisify(execFile);
const bin = resolve(import.meta.dirname, '../bin/m3ae.js');
const work = mkdtempSync(join(tmpdir(), 'm3ae-train-webgpu-'));
// The worker processes inherit VK_DRIVER_FILES (lavapipe: Mesa's Vulkan CPU driver, ≈4 GFLOP/s).
const icd = useLavapipe();

interface TrainReport {
  steps: number;
  paramsSha256: string;
  checkpoint: string;
  finalLosses: { total: number; mlm: number; mim: number; itm: number };
}

async function train(workers: number, backend: string): Promise<TrainReport> {
  // The spelling: the backend as a flag of `m3ae train` (M3AE_BACKEND unset), passed on to every worker.
  const args = [bin, 'train', '--local', '--backend', backend, '--workers', String(workers), '--steps', '2', '--global-batch', '4', '--micro-batch', '2'];
  args.push('--work-dir', work, '--checkpoint-dir', join(work, `ckpt-${backend}-${workers}`), '--json', '--no-metrics');
  const { stdout } = await run(process.execPath, args, {
    env: { ...process.env, REDIS_URL: '', M3AE_REDIS_URL: '', M3AE_LOG_LEVEL: 'warn', M3AE_BACKEND: '', VK_DRIVER_FILES: icd ?? '' },
    maxBuffer: 1 << 24,
  });
  return JSON.parse(stdout.trim().split('\n').pop() as string) as TrainReport;
}

/** The trainable parameters of a checkpoint, concatenated in file order (the optimizer state left out). */
async function paramsOf(path: string): Promise<{ names: string[]; values: Float64Array }> {
  const file = await SafetensorsFile.open(path);
  try {
    const names = file.names().filter((n) => !n.startsWith('optimizer.'));
    const parts: Float32Array[] = [];
    for (const n of names) parts.push((await file.readFloat32(n)).data);
    const values = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) values.set(p, (o += p.length) - p.length);
    return { names, values };
  } finally {
    await file.close();
  }
}

describe.skipIf(icd === undefined)('m3ae train --local on the webgpu backend (lavapipe, tiny)', () => {
  // Bitwise, as on wasm, cpu and node: the model's row-gradient scatter and dropout masks are our own
  // order-fixed device kernels (libs/model/src/kernels/device.ts), and the backend is set to matrix products
  // without split-K float atomics (libs/model/src/backend.ts).
  it('1 and 2 worker processes end with bitwise-identical parameters, and losses as on wasm', async () => {
    const one = await train(1, 'webgpu');
    const two = await train(2, 'webgpu');
    expect([one.steps, two.steps]).toEqual([2, 2]);
    expect(two.paramsSha256).toBe(one.paramsSha256);
    const [a, b] = [await paramsOf(one.checkpoint), await paramsOf(two.checkpoint)];
    expect(b.names).toEqual(a.names);
    expect(b.values.length).toBe(a.values.length);
    const wasm = await train(1, 'wasm');
    // The workers did run on two backends: their last bits differ.
    expect(wasm.paramsSha256).not.toBe(one.paramsSha256);
    for (const o of ['mlm', 'mim', 'itm'] as const) expect(Math.abs(one.finalLosses[o] - wasm.finalLosses[o]) / wasm.finalLosses[o], o).toBeLessThan(1e-4);
  }, 480_000);
});
