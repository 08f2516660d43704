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

const DEFAULT_BATCH: Record<string, number> = { tiny: 8, small: 8, base: 2 };

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

    const rateBefore = matMulRate(1024, options.quick ? 300 : 1000);
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
      for (let s = 0; s < steps; s++) {
        const t0 = performance.now();
        const r = computeGradients(model, batch, { normalizers, training: true });
        const t1 = performance.now();
        opt.update(params, r.grads);
        setParamsFromFlat(model, params);
        optMs += performance.now() - t1;
        gradMs += t1 - t0;
      }
      if (tf.memory().numTensors !== tensorsBefore) notes.push(`tensor count changed over the steps: ${tensorsBefore} → ${tf.memory().numTensors}`);
      const rateAfter = matMulRate(1024, options.quick ? 300 : 1000);
      const peak = Math.max(rateBefore, rateAfter);
      const flops = forwardFlops(config, { batchSize, mlmTokens: normalizers.mlm });
      const stepFlops = 3 * flops.total;
      const gradSeconds = gradMs / steps / 1000;
      const stepSeconds = (gradMs + optMs) / steps / 1000;
      const achieved = stepFlops / gradSeconds / 1e9;
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
        },
      ];
      notes.push(
        `forward FLOPs per step: MLM ${(flops.mlm / 1e9).toFixed(2)}, MIM ${(flops.mim / 1e9).toFixed(2)}, ITM ${(flops.itm / 1e9).toFixed(2)} GFLOP (×3 for training); matmul rate before/after: ${rateBefore.toFixed(2)}/${rateAfter.toFixed(2)} GFLOP/s (1024² float32)`,
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
