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
  const args = [bin, 'train', '--local', '--workers', String(workers), '--steps', '2', '--global-batch', '4', '--micro-batch', '2'];
  args.push('--work-dir', work, '--checkpoint-dir', join(work, `ckpt-${backend}-${workers}`), '--json', '--no-metrics');
  const { stdout } = await run(process.execPath, args, {
    env: { ...process.env, REDIS_URL: '', M3AE_REDIS_URL: '', M3AE_LOG_LEVEL: 'warn', M3AE_BACKEND: backend, VK_DRIVER_FILES: icd ?? '' },
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
  // Not bitwise: tfjs-backend-webgpu adds floats with atomics in its scatter (the embedding gradient) and split-K
  // matmul kernels, so the order of additions, and the last bits, vary from run to run (seen: 1 and 2 workers equal
  // in most runs, not in all). Bitwise equality across worker counts holds on wasm, cpu and node (orchestration and
  // training specs); here the parameters must agree to float reassociation. Adam's first steps move a parameter by
  // about ±lr whatever its gradient's size, so a parameter whose gradient is rounding noise (an attention key bias)
  // may differ by ~lr: the check is on the whole vector.
  it('1 and 2 worker processes end with the same parameters up to float reassociation, and losses as on wasm', async () => {
    const one = await train(1, 'webgpu');
    const two = await train(2, 'webgpu');
    expect([one.steps, two.steps]).toEqual([2, 2]);
    const [a, b] = [await paramsOf(one.checkpoint), await paramsOf(two.checkpoint)];
    expect(b.names).toEqual(a.names);
    let diff = 0;
    let norm = 0;
    a.values.forEach((x, i) => {
      diff += (x - (b.values[i] as number)) ** 2;
      norm += x * x;
    });
    expect(Math.sqrt(diff / norm)).toBeLessThan(1e-6); // seen: 2e-13 between worker counts, 6e-8 against wasm
    const wasm = await train(1, 'wasm');
    for (const o of ['mlm', 'mim', 'itm'] as const) expect(Math.abs(one.finalLosses[o] - wasm.finalLosses[o]) / wasm.finalLosses[o], o).toBeLessThan(1e-4);
  }, 480_000);
});
