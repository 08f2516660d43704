import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chooseBackend, webGpuAdapter } from './backend.js';
import { presetConfig } from './config.js';
import { useLavapipe } from './lavapipe.js';
import { createModel, flattenParams, setParamsFromFlat, type M3AEModel } from './model.js';
import { batchCounts, computeGradients, computeLosses, type MicroBatchResult } from './pretrain.js';
import { createDownstreamModel } from './downstream/downstream-model.js';
import { computeTaskGradients, type TaskGradients } from './downstream/objective.js';
import { syntheticBatch, syntheticTaskBatch } from './synthetic.js';

// The webgpu backend on Mesa's lavapipe (a CPU Vulkan driver, ≈4 GFLOP/s): small batches only.
const icd = useLavapipe();

function relL2(a: Float32Array, b: Float32Array): number {
  let dd = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    const d = (a[i] as number) - (b[i] as number);
    dd += d * d;
    bb += (b[i] as number) ** 2;
  }
  return Math.sqrt(dd) / Math.max(Math.sqrt(bb), 1e-30);
}

function nonFinite(a: Float32Array): number {
  let n = 0;
  for (const v of a) if (!Number.isFinite(v)) n++;
  return n;
}

/** The backend's live GPU buffers (tfjs-backend-webgpu's buffer manager), for the leak check. */
function usedGpuBuffers(): number {
  const manager = (tf.backend() as unknown as { bufferManager?: { getNumUsedBuffers(): number } }).bufferManager;
  if (!manager) throw new Error('the webgpu backend has no buffer manager to count');
  return manager.getNumUsedBuffers();
}

describe.skipIf(icd === undefined)('the webgpu backend on lavapipe against wasm (tiny, dropout on)', () => {
  const config = presetConfig('tiny');
  const batch = syntheticBatch(config, 2, 5);
  const normalizers = batchCounts(config, batch);
  let wasm: MicroBatchResult;
  let model: M3AEModel;

  beforeAll(async () => {
    await chooseBackend({ backend: 'wasm' });
    const ref = createModel(config, { seed: 3 });
    wasm = await computeGradients(ref, batch, { normalizers, training: true });
    ref.dispose();
    const adapter = await webGpuAdapter();
    if (!adapter.ok) throw new Error(`lavapipe at ${icd ?? '?'} gives no WebGPU adapter: ${adapter.reason}`);
    const choice = await chooseBackend({ backend: 'webgpu' });
    expect(choice.name).toBe('webgpu');
    expect(tf.getBackend()).toBe('webgpu');
    model = createModel(config, { seed: 3 });
  }, 120_000);
  afterAll(() => model?.dispose());

  it('is chosen only when asked for: auto passes a CPU adapter over', async () => {
    const adapter = await webGpuAdapter();
    expect(adapter.ok && adapter.info.cpu).toBe(true);
  });

  it('computes the losses within 1e-4 and the gradients within 1e-5 relative L2 of wasm', async () => {
    const gpu = await computeGradients(model, batch, { normalizers, training: true });
    expect(gpu.counts).toEqual(wasm.counts);
    expect(gpu.correct).toEqual(wasm.correct);
    for (const o of ['mlm', 'mim', 'itm'] as const) {
      expect(Math.abs(gpu.sums[o] - wasm.sums[o]) / Math.abs(wasm.sums[o]), o).toBeLessThan(1e-4);
    }
    expect(nonFinite(gpu.grads)).toBe(0);
    expect(gpu.grads.length).toBe(wasm.grads.length);
    const rel = { mlm: 0, mim: 0, itm: 0 };
    for (const o of ['mlm', 'mim', 'itm'] as const) rel[o] = Math.abs(gpu.sums[o] - wasm.sums[o]) / Math.abs(wasm.sums[o]);
    console.info(`webgpu vs wasm (tiny, B=2, dropout on): loss relative difference ${JSON.stringify(rel)}, gradient relative L2 ${relL2(gpu.grads, wasm.grads).toExponential(2)}`);
    expect(relL2(gpu.grads, wasm.grads)).toBeLessThan(1e-5);
    const losses = await computeLosses(model, batch, { training: true });
    for (const o of ['mlm', 'mim', 'itm'] as const) expect(losses.sums[o]).toBeCloseTo(gpu.sums[o], 4);
  }, 120_000);

  it('is reproducible: the same batch twice gives the same gradient bits (no float atomics)', async () => {
    const first = await computeGradients(model, batch, { normalizers, training: true });
    const second = await computeGradients(model, batch, { normalizers, training: true });
    const [a, b] = [new Uint32Array(first.grads.buffer, first.grads.byteOffset, first.grads.length), new Uint32Array(second.grads.buffer, second.grads.byteOffset, second.grads.length)];
    let differing = 0;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) differing++;
    expect(differing).toBe(0);
    expect(second.sums).toEqual(first.sums);
  }, 120_000);

  it('computes small (B=1) within the same bounds', async () => {
    const small = presetConfig('small');
    const one = syntheticBatch(small, 1, 5);
    const n = batchCounts(small, one);
    const run = async (backend: string): Promise<MicroBatchResult> => {
      await chooseBackend({ backend });
      const m = createModel(small, { seed: 3 });
      try {
        return await computeGradients(m, one, { normalizers: n, training: true });
      } finally {
        m.dispose();
      }
    };
    const ref = await run('wasm');
    const gpu = await run('webgpu');
    expect(gpu.counts).toEqual(ref.counts);
    for (const o of ['mlm', 'mim', 'itm'] as const) expect(Math.abs(gpu.sums[o] - ref.sums[o]) / Math.abs(ref.sums[o]), o).toBeLessThan(1e-4);
    expect(relL2(gpu.grads, ref.grads)).toBeLessThan(1e-5);
  }, 300_000);

  it('fine-tunes (a VQA head, dropout on) within 1e-4 of the loss and 1e-5 relative L2 of the gradient of wasm, without a leak', async () => {
    const batch = syntheticTaskBatch(config, 3, 1, 7, 5);
    const run = async (backend: string): Promise<TaskGradients> => {
      await chooseBackend({ backend });
      const m = createDownstreamModel(config, { kind: 'vqa', outputs: 7 }, { seed: 3 });
      try {
        await computeTaskGradients(m, batch, { normalizer: 3, training: true }); // warm-up: pools, shaders
        const tensors = tf.memory().numTensors;
        const g = await computeTaskGradients(m, batch, { normalizer: 3, training: true });
        expect(tf.memory().numTensors, backend).toBe(tensors);
        return g;
      } finally {
        m.dispose();
      }
    };
    const ref = await run('wasm');
    const gpu = await run('webgpu');
    expect(gpu.correct).toBe(ref.correct);
    expect(Math.abs(gpu.sum - ref.sum) / Math.abs(ref.sum)).toBeLessThan(1e-4);
    expect(nonFinite(gpu.grads)).toBe(0);
    expect(relL2(gpu.grads, ref.grads)).toBeLessThan(1e-5);
  }, 120_000);

  it('sets the parameters of a new version in few uploads, cut on the device: the same bits, no leak', async () => {
    const flat = Float32Array.from({ length: model.manifest.size }, (_, i) => Math.sin(i) * 0.01);
    const before = await flattenParams(model);
    const b = tf.backend() as unknown as { uploadToGPU(id: tf.DataId): void; tensorMap: { get(id: tf.DataId): { resource: unknown; values: unknown } } };
    const upload = b.uploadToGPU.bind(b);
    try {
      // Whole (one upload), then in groups of at most 40,000 values (several; a larger parameter alone).
      const groups = Math.ceil(model.manifest.size / 40_000);
      for (const [chunk, least, most] of [[undefined, 1, 1], [40_000, groups, 2 * groups]] as const) {
        let uploads = 0;
        // Data that goes up from the CPU (the backend's uploadToGPU returns at once for data already there).
        b.uploadToGPU = (id: tf.DataId): void => {
          const d = b.tensorMap.get(id);
          if (d.resource == null && d.values != null) uploads++;
          upload(id);
        };
        const tensors = tf.memory().numTensors;
        setParamsFromFlat(model, flat, chunk);
        b.uploadToGPU = upload;
        const back = await flattenParams(model);
        expect(Buffer.compare(Buffer.from(back.buffer, back.byteOffset, back.byteLength), Buffer.from(flat.buffer)), `chunk ${chunk ?? 'none'}`).toBe(0);
        expect(uploads, `chunk ${chunk ?? 'none'}`).toBeGreaterThanOrEqual(least);
        expect(uploads, `chunk ${chunk ?? 'none'}`).toBeLessThanOrEqual(most);
        expect(tf.memory().numTensors).toBe(tensors);
      }
    } finally {
      b.uploadToGPU = upload;
      setParamsFromFlat(model, before);
    }
  }, 120_000);

  it('leaks no tensor and no GPU buffer over 50 steps', async () => {
    await computeGradients(model, batch, { normalizers, training: true }); // warm-up: pools, shaders
    const tensors = tf.memory().numTensors;
    const buffers = usedGpuBuffers();
    for (let s = 0; s < 50; s++) await computeGradients(model, syntheticBatch(config, 2, 100 + s), { normalizers: batchCounts(config, syntheticBatch(config, 2, 100 + s)), training: true });
    expect(tf.memory().numTensors).toBe(tensors);
    expect(usedGpuBuffers()).toBe(buffers);
  }, 300_000);
});
