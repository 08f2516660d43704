import { loadavg } from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import {
  AdamW,
  batchCounts,
  chooseBackend,
  computeGradients,
  createModel,
  flattenParams,
  forwardFlops,
  presetConfig,
  setParamsFromFlat,
  syntheticBatch,
  type LossNormalizers,
  type M3AEModel,
  type PretrainBatch,
} from '@m3ae/model';
import { registerBenchArea } from './areas.js';
import { matMulRate } from './backend.js';
import { machineInfo, type BenchRow } from './report.js';

/** Largest micro-batch per preset that the wasm heap holds comfortably (small: 16 fits, 32 does not). */
const DEFAULT_BATCH: Record<string, number> = { tiny: 8, small: 16, base: 2 };

/**
 * Training-step throughput of the model on one backend: computeGradients (the worker's whole job: three
 * forward passes and their backward) on a synthetic batch, then AdamW on the flat buffers (the coordinator's
 * part). Achieved FLOP rate = 3 × the forward matrix-product FLOPs counted from the configuration, over the
 * gradient time. The ceiling is the same backend's 1024² float32 matrix-product rate, measured in the same run
 * between the steps. On a shared machine both are disturbed by other processes, so the headline fraction
 * compares the best step with the best matmul measurement; the mean-based fraction is reported too.
 */
/**
 * `steps` timed training steps (gradients, then AdamW and assignment) after one warm-up, with `between()` after each
 * step; a changed tensor count is noted.
 */
async function timeTrainingSteps(model: M3AEModel, batch: PretrainBatch, normalizers: LossNormalizers, steps: number, between: () => Promise<void>, notes: string[]): Promise<{ gradSeconds: number[]; optSeconds: number }> {
  const opt = new AdamW(model.manifest, { totalSteps: 1000, learningRate: 1e-5 });
  const params = await flattenParams(model);
  await computeGradients(model, batch, { normalizers, training: true }); // warm-up: kernels, memory growth
  const tensorsBefore = tf.memory().numTensors;
  const gradSeconds: number[] = [];
  let optSeconds = 0;
  for (let s = 0; s < steps; s++) {
    const t0 = performance.now();
    const r = await computeGradients(model, batch, { normalizers, training: true });
    const t1 = performance.now();
    opt.update(params, r.grads);
    setParamsFromFlat(model, params);
    optSeconds += (performance.now() - t1) / 1000;
    gradSeconds.push((t1 - t0) / 1000);
    await between();
  }
  if (tf.memory().numTensors !== tensorsBefore) notes.push(`tensor count changed over the steps: ${tensorsBefore} → ${tf.memory().numTensors}`);
  return { gradSeconds, optSeconds };
}

registerBenchArea('model', {
  description: 'M3AE training-step samples/s and achieved FLOP rate as a fraction of the backend matmul rate',
  async run(options) {
    const preset = options.extra['preset'] ?? 'small';
    const config = presetConfig(preset);
    const choice = await chooseBackend({ backend: options.backend });
    const batchSize = Number(options.extra['batch'] ?? DEFAULT_BATCH[preset] ?? 4);
    const steps = options.quick ? 2 : 4;
    const rateMillis = options.quick ? 300 : 600;
    const notes: string[] = [];
    const load = loadavg()[0] ?? 0;

    const rates: number[] = [await matMulRate(1024, rateMillis)];
    const model = createModel(config, { seed: 0 });
    try {
      const batch = syntheticBatch(config, batchSize, 1);
      const normalizers = batchCounts(config, batch);
      const { gradSeconds, optSeconds } = await timeTrainingSteps(model, batch, normalizers, steps, async () => void rates.push(await matMulRate(1024, rateMillis)), notes);
      const flops = forwardFlops(config, { batchSize, mlmTokens: normalizers.mlm });
      const stepFlops = 3 * flops.total;
      const bestGrad = Math.min(...gradSeconds);
      const meanGrad = gradSeconds.reduce((a, b) => a + b, 0) / steps;
      const bestRate = Math.max(...rates);
      const meanRate = rates.reduce((a, b) => a + b, 0) / rates.length;
      const achieved = stepFlops / bestGrad / 1e9;
      const achievedMean = stepFlops / meanGrad / 1e9;
      const stepSeconds = meanGrad + optSeconds / steps;
      const rows: BenchRow[] = [
        {
          backend: choice.name,
          preset,
          batch: batchSize,
          'gradients s (best/mean)': `${bestGrad.toFixed(2)}/${meanGrad.toFixed(2)}`,
          'AdamW+assign s': optSeconds / steps,
          'samples/s': batchSize / stepSeconds,
          'GFLOP/step': stepFlops / 1e9,
          'achieved GFLOP/s': achieved,
          'matmul GFLOP/s': bestRate,
          fraction: achieved / bestRate,
          'fraction (means)': achievedMean / meanRate,
        },
      ];
      notes.push(
        `forward FLOPs per step: MLM ${(flops.mlm / 1e9).toFixed(2)}, MIM ${(flops.mim / 1e9).toFixed(2)}, ITM ${(flops.itm / 1e9).toFixed(2)} GFLOP (×3 for training)`,
        `matmul rate (1024² float32) between steps: ${rates.map((r) => r.toFixed(1)).join(', ')} GFLOP/s; load average at start ${load.toFixed(1)} on ${machineInfo().cpus} CPUs`,
      );
      if (!options.quick) notes.push(...(await profileStep(() => computeGradients(model, batch, { normalizers, training: true }))));
      return {
        area: 'model',
        machine: machineInfo(choice.name),
        rows,
        figures: {
          samples_per_second: batchSize / stepSeconds,
          gradient_step_seconds_best: bestGrad,
          gradient_step_seconds_mean: meanGrad,
          achieved_gflops: achieved,
          matmul_gflops: bestRate,
          fraction_of_matmul_rate: achieved / bestRate,
          fraction_of_matmul_rate_means: achievedMean / meanRate,
          load_average: load,
          parameters: model.manifest.size,
        },
        notes,
      };
    } finally {
      model.dispose();
    }
  },
});

/** Where the time of one step goes, by kernel (tf.profile adds overhead; the shares are what matters). */
async function profileStep(step: () => void): Promise<string[]> {
  const info = await tf.profile(step);
  const byKernel = new Map<string, number>();
  let total = 0;
  const backend = tf.getBackend();
  for (const k of info.kernels) {
    // Skip wrapper scopes (customGrad's `forward`, `fusedMatMul__op`): their time includes the kernels inside.
    if (!tf.getKernel(k.name, backend)) continue;
    const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    byKernel.set(k.name, (byKernel.get(k.name) ?? 0) + ms);
    total += ms;
  }
  const top = [...byKernel.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8);
  return [
    `profile of one step (${info.kernels.length} kernels; attention products run in the model's SIMD kernel, outside tfjs kernels): ` +
      top.map(([k, ms]) => `${k} ${((100 * ms) / total).toFixed(1)}%`).join(', '),
  ];
}
