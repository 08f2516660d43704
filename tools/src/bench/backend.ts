import * as tf from '@tensorflow/tfjs-core';
import { chooseBackend } from '@m3ae/model';
import { registerBenchArea } from './areas.js';
import { machineInfo, type BenchRow } from './report.js';

/**
 * The large matrix-product rate of the active backend (GFLOP/s): the ceiling that model throughput is
 * compared against ("achieved FLOP rate as a fraction of the backend's matmul rate").
 */
export async function matMulRate(n: number, minMillis = 300): Promise<number> {
  const [a, b] = tf.tidy(() => [tf.randomNormal([n, n]), tf.randomNormal([n, n])] as const);
  try {
    const once = async (): Promise<void> => {
      const c = tf.matMul(a, b);
      try {
        await c.data();
      } finally {
        c.dispose();
      }
    };
    await once(); // warm-up: memory growth
    let iters = 0;
    const start = performance.now();
    while (performance.now() - start < minMillis || iters < 2) {
      await once();
      iters++;
    }
    const seconds = (performance.now() - start) / 1000;
    return (2 * n ** 3 * iters) / seconds / 1e9;
  } finally {
    a.dispose();
    b.dispose();
  }
}

registerBenchArea('backend', {
  description: 'square float32 matrix-product rate (GFLOP/s) of every backend this machine can run',
  async run(options) {
    const rows: BenchRow[] = [];
    const sizes = options.quick ? [256, 512] : [256, 512, 1024];
    const backends = options.backend ? [options.backend] : ['wasm', 'cpu'];
    const best: Record<string, number> = {};
    for (const name of backends) {
      const choice = await chooseBackend({ backend: name });
      for (const n of sizes) {
        if (choice.name === 'cpu' && n > 512 && !options.backend) continue; // pure JS: minutes per 1024² product
        const gflops = await matMulRate(n);
        rows.push({ backend: choice.name, size: n, 'GFLOP/s': gflops });
        best[choice.name] = Math.max(best[choice.name] ?? 0, gflops);
      }
    }
    const figures: Record<string, number> = {};
    for (const [k, v] of Object.entries(best)) figures[`${k}_gflops`] = v;
    if (best['wasm'] && best['cpu']) figures['wasm_over_cpu'] = best['wasm'] / best['cpu'];
    return { area: 'backend', machine: machineInfo(backends.join('+')), rows, figures, notes: [] };
  },
});
