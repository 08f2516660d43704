import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
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
  trainingTextLength,
  type LossNormalizers,
  type M3AEConfig,
  type M3AEModel,
  type PretrainBatch,
  type StepTiming,
} from '@m3ae/model';
import { registerBenchArea } from './areas.js';
import { matMulRate } from './backend.js';
import { describeJsProfile, profileJs } from './js-profile.js';
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
 * step; a changed tensor count is noted. The gradient time is split into dispatch, device wait and readback
 * (`computeGradients`' timing), summed over the steps.
 */
async function timeTrainingSteps(model: M3AEModel, batch: PretrainBatch, normalizers: LossNormalizers, steps: number, between: () => Promise<void>, notes: string[]): Promise<{ gradSeconds: number[]; optSeconds: number; split: StepTiming }> {
  const opt = new AdamW(model.manifest, { totalSteps: 1000, learningRate: 1e-5 });
  const params = await flattenParams(model);
  await computeGradients(model, batch, { normalizers, training: true }); // warm-up: kernels, memory growth
  const tensorsBefore = tf.memory().numTensors;
  const gradSeconds: number[] = [];
  const split: StepTiming = { dispatchMs: 0, deviceMs: 0, readbackMs: 0 };
  let optSeconds = 0;
  for (let s = 0; s < steps; s++) {
    const timing: StepTiming = { dispatchMs: 0, deviceMs: 0, readbackMs: 0 };
    const t0 = performance.now();
    const r = await computeGradients(model, batch, { normalizers, training: true, timing });
    const t1 = performance.now();
    opt.update(params, r.grads);
    setParamsFromFlat(model, params);
    optSeconds += (performance.now() - t1) / 1000;
    gradSeconds.push((t1 - t0) / 1000);
    split.dispatchMs += timing.dispatchMs;
    split.deviceMs += timing.deviceMs;
    split.readbackMs += timing.readbackMs;
    await between();
  }
  if (tf.memory().numTensors !== tensorsBefore) notes.push(`tensor count changed over the steps: ${tensorsBefore} → ${tf.memory().numTensors}`);
  return { gradSeconds, optSeconds, split };
}

const run = promisify(execFile);
/** tools/reference beside the built (dist/bench) and the source (src/bench) module alike. */
const REFERENCE_DIR = resolve(import.meta.dirname, '../../reference');
/** The PyTorch reference's whole run (model build, warm-up, timed steps) must end within this. */
const PYTORCH_DEADLINE_MS = 15 * 60_000;

type PytorchResult = { ok: true; device: string; torch: string; samplesPerSecond: number; stepMs: number[] } | { ok: false; reason: string };

/** The first python of `candidates` that imports torch, or why none does. */
async function pythonWithTorch(candidates: readonly string[]): Promise<{ python: string } | { reason: string }> {
  const reasons: string[] = [];
  for (const python of candidates) {
    try {
      await run(python, ['-c', 'import torch'], { timeout: 60_000 });
      return { python };
    } catch (e) {
      reasons.push(`${python}: ${(e as Error).message.split('\n').find((l) => /Error|not found|ENOENT/.test(l)) ?? 'no torch'}`);
    }
  }
  return { reason: reasons.join('; ') };
}

/**
 * One step (MLM + MIM + ITM forward and backward, dropout on, float32) of the project's PyTorch reference
 * (tools/reference/bench_step.py) on the same configuration, batch and text length; on CUDA when torch sees it.
 */
async function pytorchReference(config: M3AEConfig, batch: number, steps: number, choice: string): Promise<PytorchResult> {
  if (choice === 'off') return { ok: false, reason: 'off (--pytorch off)' };
  const found = await pythonWithTorch(choice === 'auto' ? ['python3', '/usr/bin/python3'] : [choice]);
  if ('reason' in found) return { ok: false, reason: `no python with torch (${found.reason})` };
  const dir = mkdtempSync(join(tmpdir(), 'm3ae-bench-torch-'));
  try {
    const configPath = join(dir, 'config.json');
    writeFileSync(configPath, JSON.stringify(config));
    const args = [join(REFERENCE_DIR, 'bench_step.py'), '--config', configPath, '--batch', String(batch), '--text-length', String(trainingTextLength(config)), '--steps', String(steps)];
    const { stdout } = await run(found.python, args, { timeout: PYTORCH_DEADLINE_MS, maxBuffer: 1 << 20 });
    const r = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as { device: string; torch: string; samples_per_second: number; step_ms: number[] };
    return { ok: true, device: r.device, torch: r.torch, samplesPerSecond: r.samples_per_second, stepMs: r.step_ms };
  } catch (e) {
    return { ok: false, reason: `the reference failed: ${(e as Error).message.split('\n').slice(0, 3).join(' ')}` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

registerBenchArea('model', {
  description: 'M3AE training-step samples/s, the step split into dispatch/device/readback, achieved FLOP rate against the backend matmul rate and against the PyTorch reference',
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
      const { gradSeconds, optSeconds, split } = await timeTrainingSteps(model, batch, normalizers, steps, async () => void rates.push(await matMulRate(1024, rateMillis)), notes);
      const flops = forwardFlops(config, { batchSize, mlmTokens: normalizers.mlm });
      const stepFlops = 3 * flops.total;
      const bestGrad = Math.min(...gradSeconds);
      const meanGrad = gradSeconds.reduce((a, b) => a + b, 0) / steps;
      const bestRate = Math.max(...rates);
      const meanRate = rates.reduce((a, b) => a + b, 0) / rates.length;
      const achieved = stepFlops / bestGrad / 1e9;
      const achievedMean = stepFlops / meanGrad / 1e9;
      const stepSeconds = meanGrad + optSeconds / steps;
      const perStep = (ms: number): number => ms / steps;
      const torch = await pytorchReference(config, batchSize, steps, options.extra['pytorch'] ?? 'auto');
      // The ratio compares gradient steps (what both compute) at their best: ours over the reference's.
      const ratio = torch.ok ? batchSize / bestGrad / torch.samplesPerSecond : undefined;
      const rows: BenchRow[] = [
        {
          backend: choice.name,
          preset,
          batch: batchSize,
          'gradients s (best/mean)': `${bestGrad.toFixed(2)}/${meanGrad.toFixed(2)}`,
          'AdamW+assign s': optSeconds / steps,
          'samples/s': batchSize / stepSeconds,
          'dispatch/device/readback ms': `${perStep(split.dispatchMs).toFixed(0)}/${perStep(split.deviceMs).toFixed(0)}/${perStep(split.readbackMs).toFixed(0)}`,
          'GFLOP/step': stepFlops / 1e9,
          'achieved GFLOP/s': achieved,
          'matmul GFLOP/s': bestRate,
          fraction: achieved / bestRate,
          'fraction (means)': achievedMean / meanRate,
          'PyTorch samples/s': torch.ok ? torch.samplesPerSecond : '—',
          'ratio to PyTorch': ratio ?? '—',
        },
      ];
      notes.push(
        torch.ok
          ? `PyTorch reference (tools/reference/bench_step.py, torch ${torch.torch}, float32, ${torch.device}): gradient step ms ${torch.stepMs.map((m) => m.toFixed(0)).join(', ')}; ratio = our best gradient step's samples/s over the reference's best`
          : `PyTorch reference not run: ${torch.reason}`,
      );
      notes.push(
        `forward FLOPs per step: MLM ${(flops.mlm / 1e9).toFixed(2)}, MIM ${(flops.mim / 1e9).toFixed(2)}, ITM ${(flops.itm / 1e9).toFixed(2)} GFLOP (×3 for training)`,
        `matmul rate (1024² float32) between steps: ${rates.map((r) => r.toFixed(1)).join(', ')} GFLOP/s; load average at start ${load.toFixed(1)} on ${machineInfo().cpus} CPUs`,
      );
      const step = (): Promise<unknown> => computeGradients(model, batch, { normalizers, training: true });
      const profile = options.quick ? undefined : await profileStep(step);
      if (profile) notes.push(...profile.notes);
      const programs = options.quick ? undefined : await devicePrograms(step);
      if (programs !== undefined) {
        const top = [...programs.byKind].sort((a, b) => b[1] - a[1]).slice(0, 16);
        notes.push(`${programs.count} device programs per step (each a pipeline, a bind group and a dispatch recorded by JavaScript); most frequent: ${top.map(([k, n]) => `${k} ${n}`).join(', ')}`);
      }
      // Where the main thread's time goes (on a GPU: what the device waits on), three steps apart from the timed ones.
      const js = options.quick ? undefined : await profileJs(step, 3);
      if (js) notes.push(...describeJsProfile(js, 'a gradient step'));
      return {
        area: 'model',
        machine: machineInfo(choice.name),
        rows,
        figures: {
          samples_per_second: batchSize / stepSeconds,
          gradient_step_seconds_best: bestGrad,
          gradient_step_seconds_mean: meanGrad,
          achieved_gflops: achieved,
          achieved_tflops: achieved / 1000,
          dispatch_ms: perStep(split.dispatchMs),
          device_wait_ms: perStep(split.deviceMs),
          readback_ms: perStep(split.readbackMs),
          ...(torch.ok ? { pytorch_samples_per_second: torch.samplesPerSecond, ratio_to_pytorch: ratio ?? 0 } : {}),
          matmul_gflops: bestRate,
          fraction_of_matmul_rate: achieved / bestRate,
          fraction_of_matmul_rate_means: achievedMean / meanRate,
          ...(profile ? { kernels_per_step: profile.kernels, kernels_moving_data_per_step: profile.moving } : {}),
          ...(programs !== undefined ? { device_programs_per_step: programs.count } : {}),
          ...(js ? { js_busy_ms_per_step: js.msPerCall } : {}),
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

/**
 * The device programs one step runs, on a backend that records them (tfjs-backend-webgpu's `runWebGPUProgram`), and
 * how many of each kind (what to merge next); undefined on the CPU backends, whose kernels are the computation.
 */
async function devicePrograms(step: () => Promise<unknown>): Promise<{ count: number; byKind: Map<string, number> } | undefined> {
  const backend = tf.backend() as unknown as { runWebGPUProgram?: (program: object, ...rest: unknown[]) => unknown };
  const run = backend.runWebGPUProgram;
  if (typeof run !== 'function') return undefined;
  let count = 0;
  const byKind = new Map<string, number>();
  backend.runWebGPUProgram = function (this: unknown, program, ...rest) {
    count++;
    const kind = programKind(program);
    byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
    return run.call(this, program, ...rest);
  };
  try {
    await step();
  } finally {
    delete backend.runWebGPUProgram;
  }
  return { count, byKind };
}

/**
 * A program's kind: its class for tfjs's own programs (`MatMulPackedProgram`), else its shader key's words up to the
 * first that is not all letters (a shape or a size): `m3ae_heads_product_scores`.
 */
function programKind(program: object): string {
  const cls = program.constructor.name;
  if (cls !== 'Object' && cls !== '') return cls;
  const key = (program as { shaderKey?: unknown }).shaderKey;
  if (typeof key !== 'string') return 'unknown';
  const words = key.split('_');
  const end = words.findIndex((w, i) => i > 0 && !/^[a-zA-Z]+$/.test(w));
  return words.slice(0, end < 0 ? words.length : end).join('_');
}

/**
 * Where the time of one step goes, by kernel (tf.profile adds overhead; the shares are what matters), and how
 * many kernels the step runs: on a GPU each is a JavaScript dispatch, which is what bounds the step there.
 */
async function profileStep(step: () => void): Promise<{ notes: string[]; kernels: number; moving: number }> {
  // A Cast to the type its input already has shares the input's data; the profile does not record types, so count
  // those where ops ask for them (tf.cast runs the Cast kernel through the engine's runKernel).
  const engine = tf.engine() as unknown as { runKernel(name: string, inputs: Record<string, unknown>, attrs?: Record<string, unknown>): unknown };
  const runKernel = engine.runKernel;
  let sameTypeCasts = 0;
  engine.runKernel = function (this: unknown, name, inputs, attrs) {
    if (name === 'Cast' && (inputs['x'] as tf.Tensor | undefined)?.dtype === attrs?.['dtype']) sameTypeCasts++;
    return runKernel.call(this, name, inputs, attrs);
  };
  let info: Awaited<ReturnType<typeof tf.profile>>;
  try {
    info = await tf.profile(step);
  } finally {
    delete (engine as { runKernel?: unknown }).runKernel;
  }
  const byKernel = new Map<string, number>();
  const counts = new Map<string, number>();
  let total = 0;
  let kernels = 0;
  let moving = 0;
  const backend = tf.getBackend();
  for (const k of info.kernels) {
    // Skip wrapper scopes (customGrad's `forward`, `fusedMatMul__op`): their time includes the kernels inside.
    if (!tf.getKernel(k.name, backend)) continue;
    const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    byKernel.set(k.name, (byKernel.get(k.name) ?? 0) + ms);
    counts.set(k.name, (counts.get(k.name) ?? 0) + 1);
    total += ms;
    kernels++;
    if (k.name !== 'Reshape' && k.name !== 'Identity') moving++;
  }
  moving -= sameTypeCasts;
  const top = [...byKernel.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8);
  const most = [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 20);
  return {
    kernels,
    moving,
    notes: [
      `profile of one step (attention products run in the model's SIMD kernel on wasm/cpu, outside tfjs kernels): ` +
        top.map(([k, ms]) => `${k} ${((100 * ms) / total).toFixed(1)}%`).join(', '),
      `${kernels} kernels per step, ${moving} of them move data (not Reshape, Identity or same-type Cast), most frequent: ${most.map(([k, n]) => `${k} ${n}`).join(', ')}`,
    ],
  };
}
