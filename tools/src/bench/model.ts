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
} from '@m3ae/model';
import { registerBenchArea } from './areas.js';
import { matMulRate } from './backend.js';
import { machineInfo, type BenchRow } from './report.js';

const DEFAULT_BATCH: Record<string, number> = { tiny: 8, small: 16, base: 2 };

/**
 * Training-step throughput of the model on one backend: computeGradients (the worker's whole job: three
 * forward passes and their backward) on a synthetic batch, then AdamW on the flat buffers (the coordinator's
 * part). Achieved FLOP rate = 3 × the forward matrix-product FLOPs counted from the configuration, over the
 * step time; compared with the same backend's large matrix-product rate measured in the same run, before and
 * after the steps (the larger of the two is the ceiling).
 */
registerBenchArea('model', {
  description: 'M3AE training-step samples/s and achieved FLOP rate as a fraction of the backend matmul rate',
  async run(options) {
    const preset = options.extra['preset'] ?? 'small';
    const config = presetConfig(preset);
    const choice = await chooseBackend({ backend: options.backend });
    const batchSize = Number(options.extra['batch'] ?? DEFAULT_BATCH[preset] ?? 4);
    const steps = options.quick ? 2 : 4;
    const notes: string[] = [];

    // The machine may be shared: measure CPU time as well as wall time, for the matmul ceiling and the steps.
    const cpuSeconds = (f: () => void): number => {
      const c0 = process.cpuUsage();
      f();
      const c = process.cpuUsage(c0);
      return (c.user + c.system) / 1e6;
    };
    const timedRate = (): { wall: number; cpu: number } => {
      let wall = 0;
      const t0 = performance.now();
      const cpu = cpuSeconds(() => {
        wall = matMulRate(1024, options.quick ? 300 : 1000);
      });
      // matMulRate reports FLOPs over its wall time; the same FLOPs over the CPU time of the call.
      return { wall, cpu: (wall * (performance.now() - t0)) / 1000 / cpu };
    };
    const rateBefore = timedRate();
    const model = createModel(config, { seed: 0 });
    try {
      const batch = syntheticBatch(config, batchSize, 1);
      const normalizers = batchCounts(config, batch);
      const opt = new AdamW(model.manifest, { totalSteps: 1000, learningRate: 1e-5 });
      const params = flattenParams(model);
      computeGradients(model, batch, { normalizers, training: true }); // warm-up: kernels, memory growth
      const tensorsBefore = tf.memory().numTensors;
      let gradMs = 0;
      let optMs = 0;
      let gradCpu = 0;
      for (let s = 0; s < steps; s++) {
        const t0 = performance.now();
        const c0 = process.cpuUsage();
        const r = computeGradients(model, batch, { normalizers, training: true });
        const c1 = process.cpuUsage(c0);
        gradCpu += (c1.user + c1.system) / 1e6;
        const t1 = performance.now();
        opt.update(params, r.grads);
        setParamsFromFlat(model, params);
        optMs += performance.now() - t1;
        gradMs += t1 - t0;
      }
      if (tf.memory().numTensors !== tensorsBefore) notes.push(`tensor count changed over the steps: ${tensorsBefore} → ${tf.memory().numTensors}`);
      const rateAfter = timedRate();
      const peak = Math.max(rateBefore.wall, rateAfter.wall);
      const peakCpu = Math.max(rateBefore.cpu, rateAfter.cpu);
      const flops = forwardFlops(config, { batchSize, mlmTokens: normalizers.mlm });
      const stepFlops = 3 * flops.total;
      const gradSeconds = gradMs / steps / 1000;
      const stepSeconds = (gradMs + optMs) / steps / 1000;
      const achieved = stepFlops / gradSeconds / 1e9;
      const achievedCpu = stepFlops / (gradCpu / steps) / 1e9;
      const rows: BenchRow[] = [
        {
          backend: choice.name,
          preset,
          batch: batchSize,
          'gradients ms': gradSeconds * 1000,
          'AdamW+assign ms': (optMs / steps),
          'samples/s': batchSize / stepSeconds,
          'GFLOP/step': stepFlops / 1e9,
          'achieved GFLOP/s': achieved,
          'matmul GFLOP/s': peak,
          'fraction': achieved / peak,
          'fraction (CPU time)': achievedCpu / peakCpu,
        },
      ];
      notes.push(
        `forward FLOPs per step: MLM ${(flops.mlm / 1e9).toFixed(2)}, MIM ${(flops.mim / 1e9).toFixed(2)}, ITM ${(flops.itm / 1e9).toFixed(2)} GFLOP (×3 for training); matmul rate before/after: ${rateBefore.wall.toFixed(2)}/${rateAfter.wall.toFixed(2)} GFLOP/s (1024² float32); the CPU-time fraction is the same ratio with CPU seconds instead of wall seconds (robust on a shared machine)`,
      );
      if (!options.quick) notes.push(...(await profileStep(() => computeGradients(model, batch, { normalizers, training: true }))));
      return {
        area: 'model',
        machine: machineInfo(choice.name),
        rows,
        figures: {
          samples_per_second: batchSize / stepSeconds,
          gradient_step_seconds: gradSeconds,
          achieved_gflops: achieved,
          matmul_gflops: peak,
          fraction_of_matmul_rate: achieved / peak,
          achieved_gflops_cpu_time: achievedCpu,
          matmul_gflops_cpu_time: peakCpu,
          fraction_of_matmul_rate_cpu_time: achievedCpu / peakCpu,
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
    // Attention products are batched (rank > 2): the wasm backend runs those in a scalar loop, not XNNPACK.
    const batched = k.name === 'BatchMatMul' && (k.inputShapes[0]?.length ?? 0) > 2 && (k.inputShapes[0]?.[0] ?? 1) > 1;
    const key = batched ? 'BatchMatMul (batched, attention)' : k.name;
    byKernel.set(key, (byKernel.get(key) ?? 0) + ms);
    total += ms;
  }
  const top = [...byKernel.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8);
  return [`profile of one step (${info.kernels.length} kernels): ` + top.map(([k, ms]) => `${k} ${((100 * ms) / total).toFixed(1)}%`).join(', ')];
}
