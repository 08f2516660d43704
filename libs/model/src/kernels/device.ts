import * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { hash32 } from '../random.js';

/**
 * Kernels the model runs where its tensors live, registered under our own kernel names so that the model never
 * asks which backend runs: a backend with the kernel registered runs it on the device; any other backend runs
 * the portable definition below (tfjs's own ops, or plain JavaScript), which gives the same bits.
 *
 * - `M3aeScatterAddRows`: out[idx[i]] += updates[i] in the order of i, from zero — the gradient of a row
 *   lookup. tfjs-backend-webgpu's scatter adds floats with atomics in whatever order the GPU's threads arrive,
 *   so its last bits vary from run to run; this one walks the rows of each index in order (as the CPU and
 *   wasm scatters do), so it is reproducible and bit-equal to them.
 * - `M3aeDropoutMask`: the inverted-dropout mask of `Dropout` (libs/model/src/dropout.ts) made from per-sample
 *   keys, instead of hashed element by element in JavaScript and uploaded.
 */
export const SCATTER_ADD_ROWS = 'M3aeScatterAddRows';
export const DROPOUT_MASK = 'M3aeDropoutMask';

function deviceKernel(name: string): boolean {
  return tf.getKernel(name, tf.getBackend()) !== undefined;
}

/** out [rows, D] with out[idx[i]] = Σ updates[i] over i in order (zero rows elsewhere); idx int32 [N], updates [N, D]. */
export function scatterAddRows(indices: tf.Tensor1D, updates: tf.Tensor2D, rows: number): tf.Tensor2D {
  if (deviceKernel(SCATTER_ADD_ROWS)) {
    return tf.engine().runKernel(SCATTER_ADD_ROWS, { indices, updates }, { rows }) as tf.Tensor2D;
  }
  return tf.scatterND(tf.reshape(indices, [-1, 1]), updates, [rows, updates.shape[1]]);
}

/** The multiplier of element i of a sample whose dropout key is `key`: 0 (dropped) or `keep`. */
export function dropoutValue(key: number, i: number, threshold: number, keep: number): number {
  // Compare 24-bit uniforms against an integer threshold: u < rate drops.
  return hash32(key ^ Math.imul(i, 0x9e3779b9)) >>> 8 < threshold ? 0 : keep;
}

/**
 * A float32 mask [keys.length, per] of values 0 or `keep` (`dropoutValue` for every sample and element),
 * made on the device when the backend has the kernel.
 */
export function dropoutMask(keys: Int32Array, per: number, threshold: number, keep: number): tf.Tensor2D {
  if (deviceKernel(DROPOUT_MASK)) {
    return tf.tidy(() => tf.engine().runKernel(DROPOUT_MASK, { keys: tf.tensor1d(keys, 'int32') }, { per, threshold, keep }) as tf.Tensor2D);
  }
  const values = new Float32Array(keys.length * per);
  const keepF = Math.fround(keep);
  for (let b = 0; b < keys.length; b++) {
    const key = keys[b] ?? 0;
    const base = b * per;
    for (let i = 0; i < per; i++) values[base + i] = dropoutValue(key, i, threshold, keepF);
  }
  return tf.tensor2d(values, [keys.length, per], 'float32');
}

// ---- WebGPU definitions (tfjs-backend-webgpu's program interface; registered once, used only on that backend) ----

const WORKGROUP = 64;

function flatProgram(outputShape: number[], shaderKey: string, variableNames: string[], uniforms: string, body: string): WebGPUProgram {
  const size = outputShape.reduce((a, b) => a * b, 1);
  // A 2-D grid of workgroups when one dimension would exceed WebGPU's 65,535 limit.
  const groups = Math.ceil(size / WORKGROUP);
  const x = Math.min(groups, 65535);
  return {
    outputShape,
    shaderKey,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    dispatch: [x, Math.ceil(groups / x), 1],
    variableNames,
    workgroupSize: [WORKGROUP, 1, 1],
    uniforms,
    size: true,
    getUserCode: () => `
      fn main(index : i32) {
        if (index >= uniforms.size) { return; }
        ${body}
      }`,
  };
}

type Uniforms = Parameters<WebGPUBackend['runWebGPUProgram']>[3];
type Run = (program: WebGPUProgram, inputs: tf.TensorInfo[], dtype: tf.DataType, uniforms: Uniforms) => tf.TensorInfo;

function runner(backend: object): Run {
  const b = backend as WebGPUBackend;
  return (program, inputs, dtype, uniforms) => b.runWebGPUProgram(program, inputs, dtype, uniforms);
}

let registered = false;

/** Registers the device kernels for the `webgpu` backend (idempotent). Called by the backend chooser. */
export function registerWebGpuKernels(): void {
  if (registered) return;
  registered = true;
  tf.registerKernel({
    kernelName: SCATTER_ADD_ROWS,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { indices, updates } = inputs as { indices: tf.TensorInfo; updates: tf.TensorInfo };
      const rows = (attrs as { rows: number }).rows;
      const [n, d] = updates.shape as [number, number];
      const run = runner(backend);
      const dims = [{ type: 'int32', data: [n] }];
      // next[i]: the next position j > i with the same index, or -1 (N threads of N steps each).
      const next = run(
        flatProgram([n], 'm3ae_rows_next', ['indices'], 'n : i32,', `
          let v = indices[index];
          var found = -1;
          for (var j = index + 1; j < uniforms.n; j = j + 1) {
            if (indices[j] == v) { found = j; break; }
          }
          result[index] = found;`),
        [indices],
        'int32',
        dims,
      );
      // first[r]: the first position with index r, or -1.
      const first = run(
        flatProgram([rows], 'm3ae_rows_first', ['indices'], 'n : i32,', `
          var found = -1;
          for (var j = 0; j < uniforms.n; j = j + 1) {
            if (indices[j] == index) { found = j; break; }
          }
          result[index] = found;`),
        [indices],
        'int32',
        dims,
      );
      // out[r, c]: the rows of r's positions summed in position order, starting from zero.
      const out = run(
        flatProgram([rows, d], 'm3ae_rows_sum', ['updates', 'headPos', 'nextPos'], 'd : i32,', `
          let r = index / uniforms.d;
          let c = index - r * uniforms.d;
          var sum = 0.0;
          var j = headPos[r];
          loop {
            if (j < 0) { break; }
            sum = sum + updates[j * uniforms.d + c];
            j = nextPos[j];
          }
          result[index] = sum;`),
        [updates, first, next],
        'float32',
        [{ type: 'int32', data: [d] }],
      );
      const b = backend as WebGPUBackend;
      b.disposeData(next.dataId);
      b.disposeData(first.dataId);
      return out;
    },
  });
  tf.registerKernel({
    kernelName: DROPOUT_MASK,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { keys } = inputs as { keys: tf.TensorInfo };
      const { per, threshold, keep } = attrs as { per: number; threshold: number; keep: number };
      const batch = keys.shape[0] as number;
      // dropoutValue in WGSL: u32 arithmetic wraps as Math.imul does.
      return runner(backend)(
        flatProgram([batch, per], 'm3ae_dropout_mask', ['keys'], 'per : i32, threshold : i32, keep : f32,', `
          let b = index / uniforms.per;
          let i = index - b * uniforms.per;
          var x = bitcast<u32>(keys[b]) ^ (u32(i) * 0x9e3779b9u);
          x = x ^ (x >> 16u);
          x = x * 0x7feb352du;
          x = x ^ (x >> 15u);
          x = x * 0x846ca68bu;
          x = x ^ (x >> 16u);
          result[index] = select(uniforms.keep, 0.0, (x >> 8u) < u32(uniforms.threshold));`),
        [keys],
        'float32',
        [
          { type: 'int32', data: [per] },
          { type: 'int32', data: [threshold] },
          { type: 'float32', data: [keep] },
        ],
      );
    },
  });
}
