import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { chooseBackend } from '../backend.js';
import { Dropout } from '../dropout.js';
import { useLavapipe } from '../lavapipe.js';
import { HashStream, hashWords } from '../random.js';
import { attend, gelu, layerNormOp } from '../ops.js';
import { DROPOUT_MASK, GELU, GELU_GRAD, LAYER_NORM, LAYER_NORM_GRAD, SCATTER_ADD_ROWS, dropoutMask, dropoutValue, scatterAddRows } from './device.js';

// The device kernels on the webgpu backend (Mesa's lavapipe in CI) against their portable definitions on cpu.
const icd = useLavapipe();

function normals(n: number, seed: number): Float32Array {
  const s = new HashStream(seed);
  return Float32Array.from({ length: n }, () => s.normal());
}

/** Indices in [0, rows) with many repeats (Zipf-like: a few rows take most positions, as token ids do). */
function skewedIndices(n: number, rows: number, seed: number): Int32Array {
  const s = new HashStream(seed);
  return Int32Array.from({ length: n }, () => Math.min(rows - 1, Math.floor(rows * s.uniform() ** 4)));
}

async function on(backend: string, f: () => tf.Tensor): Promise<Float32Array> {
  await chooseBackend({ backend });
  const t = f();
  try {
    return (await t.data()) as Float32Array;
  } finally {
    t.dispose();
  }
}

/** ‖a − b‖ / ‖b‖. */
function relL2(a: Float32Array, b: Float32Array): number {
  let dd = 0;
  let bb = 0;
  for (let k = 0; k < a.length; k++) {
    dd += ((a[k] as number) - (b[k] as number)) ** 2;
    bb += (b[k] as number) ** 2;
  }
  return Math.sqrt(dd / bb);
}

/** How many elements differ in their bits (vitest's deep equality is too slow for millions of elements). */
function bitDifferences(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Math.max(a.length, b.length);
  const [x, y] = [new Uint32Array(a.buffer, a.byteOffset, a.length), new Uint32Array(b.buffer, b.byteOffset, b.length)];
  let n = 0;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) n++;
  return n;
}

describe('device kernels, portable definitions (cpu)', () => {
  it('scatterAddRows sums duplicate rows in position order from zero, as a loop does', async () => {
    await chooseBackend({ backend: 'cpu' });
    const n = 300;
    const d = 5;
    const rows = 40;
    const idx = skewedIndices(n, rows, 1);
    const upd = normals(n * d, 2);
    const expected = new Float32Array(rows * d);
    for (let i = 0; i < n; i++) for (let c = 0; c < d; c++) expected[(idx[i] as number) * d + c] = Math.fround((expected[(idx[i] as number) * d + c] as number) + (upd[i * d + c] as number));
    const got = await on('cpu', () => scatterAddRows(tf.tensor1d(idx, 'int32'), tf.tensor2d(upd, [n, d]), rows));
    expect(bitDifferences(got, expected)).toBe(0);
  });

  it('dropoutMask holds 0 or 1/(1−p) with the drop share near p, per sample key', async () => {
    await chooseBackend({ backend: 'cpu' });
    const keys = Int32Array.from([hashWords(7, 0, 0), hashWords(8, 0, 0)]);
    const m = await on('cpu', () => dropoutMask(keys, { shape: [20_000], canonical: [20_000] }, Math.round(0.1 * 16777216), 1 / 0.9));
    const dropped = m.filter((v) => v === 0).length / m.length;
    expect(dropped).toBeGreaterThan(0.09);
    expect(dropped).toBeLessThan(0.11);
    expect(new Set(m)).toEqual(new Set([0, Math.fround(1 / 0.9)]));
    expect(m[5]).toBe(dropoutValue(keys[0] as number, 5, Math.round(0.1 * 16777216), Math.fround(1 / 0.9)));
  });
});

describe.skipIf(icd === undefined)('device kernels on webgpu (lavapipe) against cpu, bit for bit', () => {
  beforeAll(async () => {
    await chooseBackend({ backend: 'webgpu' });
    expect(tf.getKernel(SCATTER_ADD_ROWS, 'webgpu')).toBeDefined();
    expect(tf.getKernel(DROPOUT_MASK, 'webgpu')).toBeDefined();
    expect(tf.getKernel(LAYER_NORM, 'webgpu')).toBeDefined();
    expect(tf.getKernel(LAYER_NORM_GRAD, 'webgpu')).toBeDefined();
    expect(tf.getKernel(GELU, 'webgpu')).toBeDefined();
    expect(tf.getKernel(GELU_GRAD, 'webgpu')).toBeDefined();
  }, 120_000);

  it('scatterAddRows: the same bits as the cpu scatter, every run', async () => {
    for (const [n, d, rows, seed] of [[300, 7, 40, 3], [1, 1, 1, 4], [2048, 33, 1000, 5], [64, 128, 70_000, 6]] as const) {
      const idx = skewedIndices(n, rows, seed);
      const upd = normals(n * d, seed + 10);
      const make = (): tf.Tensor => scatterAddRows(tf.tensor1d(idx, 'int32'), tf.tensor2d(upd, [n, d]), rows);
      const cpu = await on('cpu', make);
      const gpu = await on('webgpu', make);
      const again = await on('webgpu', make);
      expect(bitDifferences(gpu, cpu), `${n}×${d} into ${rows}`).toBe(0);
      expect(bitDifferences(again, gpu)).toBe(0);
    }
  }, 120_000);

  it('dropout masks made on the device are bit-equal to the JavaScript ones', async () => {
    const seeds = Int32Array.from([11, -5, 2 ** 31 - 1, 0]);
    const draw = (): tf.Tensor => {
      const dropout = new Dropout(seeds, 0.1, 2);
      dropout.mask([3, 5]); // site 0
      return dropout.mask([4, 17, 17]) as tf.Tensor; // site 1
    };
    const cpu = await on('cpu', draw);
    const gpu = await on('webgpu', draw);
    expect(gpu.length).toBe(4 * 4 * 17 * 17);
    expect(bitDifferences(gpu, cpu)).toBe(0);
  }, 120_000);

  it('a mask drawn within a canonical shape is the leading corner of the canonical mask, on both', async () => {
    const seeds = Int32Array.from([3, 4]);
    const full = (): tf.Tensor => new Dropout(seeds, 0.2, 1).mask([2, 9, 11]) as tf.Tensor;
    const corner = (): tf.Tensor => new Dropout(seeds, 0.2, 1).mask([2, 5, 7], [2, 9, 11]) as tf.Tensor;
    for (const backend of ['cpu', 'webgpu']) {
      const f = await on(backend, full);
      const c = await on(backend, corner);
      const expected = new Float32Array(2 * 2 * 5 * 7);
      let o = 0;
      for (let b = 0; b < 2; b++) for (let h = 0; h < 2; h++) for (let q = 0; q < 5; q++) for (let k = 0; k < 7; k++) expected[o++] = f[((b * 2 + h) * 9 + q) * 11 + k] as number;
      expect(bitDifferences(c, expected), backend).toBe(0);
      expect(c.filter((v) => v === 0).length, backend).toBeGreaterThan(0);
    }
  }, 120_000);

  it('fused LayerNorm: value and gradients as the composite on cpu (1e-5), the same bits every run', async () => {
    // Rows past one chunk of the parameter-gradient sums (64) and a width that is no multiple of the workgroup.
    for (const [rows, d, eps] of [[3, 8, 1e-5], [150, 100, 1e-12], [70, 64, 1e-5]] as const) {
      const x = normals(rows * d, rows);
      const gamma = normals(d, d + 1).map((v) => 1 + 0.1 * v);
      const beta = normals(d, d + 2).map((v) => 0.1 * v);
      const upstream = normals(rows * d, rows + 3);
      const run = async (backend: string): Promise<Float32Array[]> => {
        await chooseBackend({ backend });
        const [xt, gt, bt, w] = [tf.tensor2d(x, [rows, d]), tf.tensor1d(gamma), tf.tensor1d(beta), tf.tensor2d(upstream, [rows, d])];
        const f = (a: tf.Tensor, g: tf.Tensor, b: tf.Tensor): tf.Scalar => tf.sum(tf.mul(layerNormOp(a as tf.Tensor2D, g, b, eps), w));
        const y = layerNormOp(xt, gt, bt, eps);
        const grads = tf.grads(f)([xt, gt, bt]);
        const out = await Promise.all([y, ...grads].map(async (t) => (await t.data()) as Float32Array));
        tf.dispose([xt, gt, bt, w, y, ...grads]);
        return out;
      };
      const cpu = await run('cpu');
      const gpu = await run('webgpu');
      const again = await run('webgpu');
      ['y', 'dx', 'dγ', 'dβ'].forEach((name, i) => {
        const a = gpu[i] as Float32Array;
        expect(relL2(a, cpu[i] as Float32Array), `${name} of ${rows}×${d}`).toBeLessThan(1e-5);
        expect(bitDifferences(again[i] as Float32Array, a), `${name} repeat`).toBe(0);
      });
    }
  }, 120_000);

  it('fused GELU: value and gradient as the composite on cpu (1e-6 / 1e-5), the same bits every run', async () => {
    const n = 3000;
    const x = normals(n, 21).map((v) => 3 * v); // well into both tails
    const w = normals(n, 22);
    const run = async (backend: string): Promise<Float32Array[]> => {
      await chooseBackend({ backend });
      const [xt, wt] = [tf.tensor2d(x, [30, 100]), tf.tensor2d(w, [30, 100])];
      const y = gelu(xt);
      const g = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(gelu(a as tf.Tensor2D), wt)))(xt);
      const out = [(await y.data()) as Float32Array, (await g.data()) as Float32Array];
      tf.dispose([xt, wt, y, g]);
      return out;
    };
    const cpu = await run('cpu');
    const gpu = await run('webgpu');
    const again = await run('webgpu');
    expect(relL2(gpu[0] as Float32Array, cpu[0] as Float32Array)).toBeLessThan(1e-6);
    expect(relL2(gpu[1] as Float32Array, cpu[1] as Float32Array)).toBeLessThan(1e-5);
    expect(bitDifferences(again[0] as Float32Array, gpu[0] as Float32Array)).toBe(0);
    expect(bitDifferences(again[1] as Float32Array, gpu[1] as Float32Array)).toBe(0);
  }, 120_000);

  it('fused attention probabilities (key bias, softmax, dropout mask): attention and its gradients as on cpu (1e-5)', async () => {
    const [B, h, tq, tk, dh] = [2, 3, 5, 70, 4]; // keys past one workgroup (64)
    const q = normals(B * h * tq * dh, 31);
    const kT = normals(B * h * dh * tk, 32);
    const v = normals(B * h * tk * dh, 33);
    const bias = Float32Array.from({ length: B * tk }, (_, i) => (i % tk > 60 + (i < tk ? 0 : 5) ? -1e9 : 0));
    const w = normals(B * h * tq * dh, 34);
    for (const withExtras of [true, false]) {
      const run = async (backend: string): Promise<Float32Array[]> => {
        await chooseBackend({ backend });
        const [qt, kt, vt, wt] = [tf.tensor4d(q, [B, h, tq, dh]), tf.tensor4d(kT, [B, h, dh, tk]), tf.tensor4d(v, [B, h, tk, dh]), tf.tensor4d(w, [B, h, tq, dh])];
        const bt = tf.tensor4d(bias, [B, 1, 1, tk]);
        const mask = new Dropout(Int32Array.from([5, 6]), 0.1, 1).mask([h, tq, tk]) as tf.Tensor;
        const f = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor): tf.Scalar =>
          tf.sum(tf.mul(attend(a as tf.Tensor4D, b as tf.Tensor4D, c as tf.Tensor4D, withExtras ? bt : undefined, withExtras ? mask : undefined), wt));
        const y = attend(qt, kt, vt, withExtras ? bt : undefined, withExtras ? mask : undefined);
        const grads = tf.grads(f)([qt, kt, vt]);
        const out = await Promise.all([y, ...grads].map(async (t) => (await t.data()) as Float32Array));
        tf.dispose([qt, kt, vt, wt, bt, mask, y, ...grads]);
        return out;
      };
      const cpu = await run('cpu');
      const gpu = await run('webgpu');
      const again = await run('webgpu');
      ['out', 'dq', 'dk', 'dv'].forEach((name, i) => {
        const a = gpu[i] as Float32Array;
        expect(relL2(a, cpu[i] as Float32Array), `${name}, bias and mask ${withExtras}`).toBeLessThan(1e-5);
        expect(bitDifferences(again[i] as Float32Array, a), `${name} repeat`).toBe(0);
      });
    }
  }, 120_000);
});
