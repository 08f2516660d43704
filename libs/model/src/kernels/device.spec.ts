import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { chooseBackend } from '../backend.js';
import { Dropout } from '../dropout.js';
import { useLavapipe } from '../lavapipe.js';
import { HashStream, hashWords } from '../random.js';
import { attend, attentionProjections, dense, gelu, layerNormAndInput, layerNormOp, linear, quickGelu, linearScaled, mergeHeads, multiHeadAttention, paramsFromMap, residualAdd, splitHeads, type AttentionQuery } from '../ops.js';
import { ATTENTION, ATTENTION_GRAD, BIAS_GRADS, DENSE, DENSE_GRAD, DROPOUT, DROPOUT_MASK, FLAT_CONCAT, FLAT_SPLIT, flatConcat, flatSplit, RESIDUAL_ADD, GELU, GELU_GRAD, HEADS, keyedMask, LAYER_NORM, LAYER_NORM_GRAD, LAYER_NORM_RESIDUAL, PROJECTIONS_INPUT_GRAD, projectionsKernel, QUICK_GELU, QUICK_GELU_GRAD, SCATTER_ADD_ROWS, dropoutMask, dropoutValue, scatterAddRows, type MaskKeys } from './device.js';

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
/**
 * On `backend`: f(x) and the gradient of Σ f(x)·w with respect to x, x and w given as [rows, cols] values; every
 * tensor released.
 */
async function valueAndGradient(backend: string, f: (a: tf.Tensor2D) => tf.Tensor2D, x: Float32Array, w: Float32Array, shape: [number, number]): Promise<Float32Array[]> {
  await chooseBackend({ backend });
  const [xt, wt] = [tf.tensor2d(x, shape), tf.tensor2d(w, shape)];
  const y = f(xt);
  const g = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(f(a as tf.Tensor2D), wt)))(xt);
  const out = [(await y.data()) as Float32Array, (await g.data()) as Float32Array];
  tf.dispose([xt, wt, y, g]);
  return out;
}

/** f(args) and its gradients by every argument, read back, with the number of Add kernels they ran; args and `also` released. */
async function valuesGradientsAdds(f: (...a: tf.Tensor[]) => tf.Scalar, args: tf.Tensor[], also: tf.Tensor[]): Promise<{ out: Float32Array[]; adds: number }> {
  let list: tf.Tensor[] = [];
  const profile = await tf.profile(() => {
    const { value, grads } = tf.valueAndGrads(f)(args);
    list = [value, ...grads];
    return list;
  });
  const out = await Promise.all(list.map(async (t) => (await t.data()) as Float32Array));
  tf.dispose([...list, ...args, ...also]);
  return { out, adds: profile.kernels.filter((k) => k.name === 'Add').length };
}

function relL2(a: Float32Array, b: Float32Array): number {
  let dd = 0;
  let bb = 0;
  for (let k = 0; k < a.length; k++) {
    dd += ((a[k] as number) - (b[k] as number)) ** 2;
    bb += (b[k] as number) ** 2;
  }
  return Math.sqrt(dd / bb);
}

/**
 * The column sums of a [rows, d] matrix as the device's column-sum program orders them, in float32: 16 lanes per
 * column summing rows lane, lane + 16, … in order, the lanes combined in a fixed tree (8, 4, 2, 1), then × scale.
 */
function columnSumReference(values: Float32Array, rows: number, d: number, scale: number): Float32Array {
  const f = Math.fround;
  const out = new Float32Array(d);
  for (let c = 0; c < d; c++) {
    const lanes = Array.from({ length: 16 }, (_, lane) => {
      let sum = 0;
      for (let r = lane; r < rows; r += 16) sum = f(sum + (values[r * d + c] as number));
      return sum;
    });
    for (let k = 8; k > 0; k >>= 1) for (let l = 0; l < k; l++) lanes[l] = f((lanes[l] as number) + (lanes[l + k] as number));
    out[c] = f((lanes[0] as number) * f(scale));
  }
  return out;
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
    expect(tf.getKernel(DENSE, 'webgpu')).toBeDefined();
    expect(tf.getKernel(DENSE_GRAD, 'webgpu')).toBeDefined();
    expect(tf.getKernel(HEADS, 'webgpu')).toBeDefined();
    expect(tf.getKernel(DROPOUT, 'webgpu')).toBeDefined();
    expect(tf.getKernel(FLAT_CONCAT, 'webgpu')).toBeDefined();
    expect(tf.getKernel(RESIDUAL_ADD, 'webgpu')).toBeDefined();
    expect(tf.getKernel(ATTENTION, 'webgpu')).toBeDefined();
    expect(tf.getKernel(ATTENTION_GRAD, 'webgpu')).toBeDefined();
    expect(tf.getKernel(QUICK_GELU, 'webgpu')).toBeDefined();
    expect(tf.getKernel(QUICK_GELU_GRAD, 'webgpu')).toBeDefined();
    expect(tf.getKernel(projectionsKernel(1), 'webgpu')).toBeDefined();
    expect(tf.getKernel(projectionsKernel(2), 'webgpu')).toBeDefined();
    expect(tf.getKernel(LAYER_NORM_RESIDUAL, 'webgpu')).toBeDefined();
    expect(tf.getKernel(BIAS_GRADS, 'webgpu')).toBeDefined();
    expect(tf.getKernel(projectionsKernel(3), 'webgpu')).toBeDefined();
    expect(tf.getKernel(PROJECTIONS_INPUT_GRAD, 'webgpu')).toBeDefined();
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
      // dγ and dβ come from one program (two column groups): dβ = Σ_rows dy in the plain column sum's order.
      expect(bitDifferences(columnSumReference(upstream, rows, d, 1), gpu[3] as Float32Array), `dβ of ${rows}×${d} in its order`).toBe(0);
    }
  }, 120_000);

  for (const [name, f, seed, scale] of [
    ['GELU', gelu, 21, 3],
    ['QuickGELU', quickGelu, 91, 4],
  ] as const) {
    it(`fused ${name}: value and gradient as the composite on cpu (1e-6 / 1e-5), the same bits every run`, async () => {
      const n = 3000;
      const x = normals(n, seed).map((v) => scale * v); // well into both tails
      const w = normals(n, seed + 1);
      const run = async (backend: string): Promise<Float32Array[]> => await valueAndGradient(backend, f, x, w, [30, 100]);
      const cpu = await run('cpu');
      const gpu = await run('webgpu');
      const again = await run('webgpu');
      expect(relL2(gpu[0] as Float32Array, cpu[0] as Float32Array)).toBeLessThan(1e-6);
      expect(relL2(gpu[1] as Float32Array, cpu[1] as Float32Array)).toBeLessThan(1e-5);
      expect(bitDifferences(again[0] as Float32Array, gpu[0] as Float32Array)).toBe(0);
      expect(bitDifferences(again[1] as Float32Array, gpu[1] as Float32Array)).toBe(0);
    }, 120_000);
  }

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

  it('regrouped dense (M3aeDense, M3aeDenseGrad): as the composite on cpu (1e-5), the same bits as tfjs\'s own kernels on webgpu (db: as its column sum orders it)', async () => {
    // Shapes past one 32×32 tile in every dimension, a bias-less and a data-input (no dx) case, and scaled weights
    // (linearScaled: the attention queries' 1/√dh, and a scale that is no power of two).
    // Weights as model variables too (read where they are, not saved).
    const cases: [number, number, number, boolean, boolean, number?, boolean?][] = [[70, 40, 33, true, true], [5, 3, 2, true, true], [70, 40, 33, false, true], [34, 48, 32, true, false], [34, 32, 32, true, true, 0.25], [70, 40, 33, true, true, 0.3], [70, 40, 33, true, true, undefined, true], [34, 32, 32, true, true, 0.3, true]];
    for (const [m, k, n, hasBias, inputGrad, scale, variables] of cases) {
      const x = normals(m * k, m + k);
      const w = normals(k * n, k + n);
      const b = normals(n, n + 1);
      const up = normals(m * n, m + n + 2);
      const label = `${m}×${k}·${k}×${n}, bias ${hasBias}, dx ${inputGrad}, scale ${scale ?? 'none'}, variables ${variables === true}`;
      /** y, dx, dW (, db) through `op`. */
      const run = async (backend: string, op: (x: tf.Tensor2D, w: tf.Tensor2D, b?: tf.Tensor) => tf.Tensor2D): Promise<Float32Array[]> => {
        await chooseBackend({ backend });
        const [xt, ut] = [tf.tensor2d(x, [m, k]), tf.tensor2d(up, [m, n])];
        const [wt, bt] = variables === true ? tf.tidy(() => [tf.variable(tf.tensor2d(w, [k, n])), tf.variable(tf.tensor1d(b))]) : [tf.tensor2d(w, [k, n]), tf.tensor1d(b)];
        const y = hasBias ? op(xt, wt, bt) : op(xt, wt);
        const f = (...a: tf.Tensor[]): tf.Scalar => tf.sum(tf.mul(op(a[0] as tf.Tensor2D, a[1] as tf.Tensor2D, a[2]), ut));
        const grads = tf.grads(f)(hasBias ? [xt, wt, bt] : [xt, wt]);
        const out = await Promise.all([y, ...grads].map(async (t) => (await t.data()) as Float32Array));
        tf.dispose([xt, wt, bt, ut, y, ...grads]);
        return out;
      };
      const ours = (a: tf.Tensor2D, ww: tf.Tensor2D, bb?: tf.Tensor): tf.Tensor2D =>
        scale === undefined ? dense(a, ww, bb, inputGrad) : linearScaled(paramsFromMap(new Map([['l.weight', ww], ['l.bias', bb as tf.Tensor]])), 'l', a, scale);
      // What `dense` ran on webgpu before the regrouping: tfjs's fused.matMul forward, two products and a sum back.
      const unscaled = (a: tf.Tensor2D, ww: tf.Tensor2D, bb?: tf.Tensor): tf.Tensor2D =>
        tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
          const [xi, wi] = args as [tf.Tensor2D, tf.Tensor2D];
          (args[args.length - 1] as tf.GradSaveFunc)([xi, wi]);
          return {
            value: bb ? (tf.fused.matMul({ a: xi, b: wi, bias: args[2] as tf.Tensor }) as tf.Tensor2D) : tf.matMul(xi, wi),
            gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
              const [xs, ws] = saved as [tf.Tensor2D, tf.Tensor2D];
              const dx = inputGrad ? tf.matMul(dy as tf.Tensor2D, ws, false, true) : tf.zerosLike(xs);
              const dw = tf.matMul(xs, dy as tf.Tensor2D, true, false);
              return bb ? [dx, dw, tf.sum(dy, 0)] : [dx, dw];
            },
          };
        })(...(bb ? [a, ww, bb] : [a, ww])) as tf.Tensor2D;
      const before = (a: tf.Tensor2D, ww: tf.Tensor2D, bb?: tf.Tensor): tf.Tensor2D =>
        scale === undefined ? unscaled(a, ww, bb) : unscaled(a, tf.mul(ww, scale) as tf.Tensor2D, tf.mul(bb as tf.Tensor, scale));
      const cpu = await run('cpu', ours);
      const gpu = await run('webgpu', ours);
      const again = await run('webgpu', ours);
      const tfjs = await run('webgpu', before);
      expect(gpu.length).toBe(hasBias ? 4 : 3);
      gpu.forEach((a, i) => {
        const name = ['y', 'dx', 'dW', 'db'][i] as string;
        if (name === 'dx' && !inputGrad) expect(a.every((v) => v === 0), `${name} of ${label}`).toBe(true);
        else expect(relL2(a, cpu[i] as Float32Array), `${name} of ${label}`).toBeLessThan(1e-5);
        expect(bitDifferences(again[i] as Float32Array, a), `${name} repeat, ${label}`).toBe(0);
        // db is our column sum (tfjs's Sum over rows transposes first): its documented order, bit for bit.
        if (name === 'db') expect(bitDifferences(columnSumReference(up, m, n, scale ?? 1), a), `${name} in its order, ${label}`).toBe(0);
        else expect(bitDifferences(tfjs[i] as Float32Array, a), `${name} against tfjs's kernels, ${label}`).toBe(0);
      });
    }
  }, 120_000);

  it('heads split and merged in one kernel (M3aeHeads): values and gradients bit-equal to cpu, and fewer kernels', async () => {
    const [B, T, h, dh] = [2, 7, 3, 5];
    const x = normals(B * T * h * dh, 41);
    const up = normals(B * T * h * dh, 42);
    const run = async (backend: string): Promise<Float32Array[]> => {
      await chooseBackend({ backend });
      const [xt, ut] = [tf.tensor2d(x, [B * T, h * dh]), tf.tensor2d(up, [B * T, h * dh])];
      const q = splitHeads(xt, B, T, h);
      const kT = splitHeads(xt, B, T, h, true);
      const merged = mergeHeads(tf.tensor4d(x, [B, h, T, dh]));
      // Through both ways: the keys' transposed split back through a product-free path to [B, h, T, dh].
      const f = (a: tf.Tensor): tf.Scalar => tf.sum(tf.mul(tf.add(mergeHeads(splitHeads(a as tf.Tensor2D, B, T, h)), mergeHeads(tf.transpose(splitHeads(a as tf.Tensor2D, B, T, h, true), [0, 1, 3, 2]) as tf.Tensor4D)), ut));
      const g = tf.grad(f)(xt);
      const out = await Promise.all([q, kT, merged, g].map(async (t) => (await t.data()) as Float32Array));
      expect(q.shape).toEqual([B, h, T, dh]);
      expect(kT.shape).toEqual([B, h, dh, T]);
      expect(merged.shape).toEqual([B * T, h * dh]);
      tf.dispose([xt, ut, q, kT, merged, g]);
      return out;
    };
    const cpu = await run('cpu');
    const gpu = await run('webgpu');
    ['q', 'kT', 'merged', 'dx'].forEach((name, i) => expect(bitDifferences(gpu[i] as Float32Array, cpu[i] as Float32Array), name).toBe(0));
    // One tfjs kernel each way on webgpu (a reshape, a transpose and a saved copy otherwise).
    await chooseBackend({ backend: 'webgpu' });
    const xt = tf.tensor2d(x, [B * T, h * dh]);
    const info = await tf.profile(() => {
      const g = tf.grad((a: tf.Tensor) => tf.sum(mergeHeads(splitHeads(a as tf.Tensor2D, B, T, h))))(xt);
      g.dispose();
    });
    const heads = info.kernels.filter((k) => k.name === HEADS).length;
    const transposes = info.kernels.filter((k) => k.name === 'Transpose').length;
    xt.dispose();
    expect(heads).toBe(4);
    expect(transposes).toBe(0);
  }, 120_000);

  it('dropout applied in one kernel (M3aeDropout): value and gradient bit-equal to the mask and product on cpu, and a site the same whatever the kernels', async () => {
    const [B, rows, cols] = [3, 7, 70];
    const x = normals(B * rows * cols, 51).map((v, i) => (i % 97 === 0 ? -v * v : v)); // negatives: x·0 is −0
    const up = normals(B * rows * cols, 52);
    const apply = (a: tf.Tensor2D): tf.Tensor2D => {
      const d = new Dropout(Int32Array.from([9, -3, 77]), 0.15, 2);
      d.mask([2, 3]); // site 0 drawn as a mask, site 1 applied
      return d.apply2d(a, B);
    };
    // A site past the first table of device keys (64 sites: the table grows).
    const late = (a: tf.Tensor2D): tf.Tensor2D => {
      const d = new Dropout(Int32Array.from([9, -3, 77]), 0.15, 2);
      d.apply2d(a, B);
      for (let i = 1; i < 70; i++) d.lazyMask([2, 3]);
      return d.apply2d(a, B);
    };
    for (const [label, f] of [['site 1', apply], ['site 70', late]] as const) {
      const run = async (backend: string): Promise<Float32Array[]> => await valueAndGradient(backend, f, x, up, [B * rows, cols]);
      const cpu = await run('cpu');
      const gpu = await run('webgpu');
      const again = await run('webgpu');
      ['y', 'dx'].forEach((name, i) => {
        expect(bitDifferences(gpu[i] as Float32Array, cpu[i] as Float32Array), `${name}, ${label}`).toBe(0);
        expect(bitDifferences(again[i] as Float32Array, gpu[i] as Float32Array), `${name} repeat, ${label}`).toBe(0);
      });
      expect((cpu[0] as Float32Array).filter((v) => v === 0).length).toBeGreaterThan(0);
    }
  }, 120_000);

  it('dropout and a residual add in one kernel (Dropout.applyAndAdd): values and gradients as the dropout and the add on cpu (1e-6), the same site, no Add', async () => {
    const [B, rows, cols] = [3, 7, 70];
    const [x, r, up] = [normals(B * rows * cols, 53), normals(B * rows * cols, 54), normals(B * rows * cols, 55)];
    const run = async (backend: string, fused: boolean): Promise<{ out: Float32Array[]; adds: number }> => {
      await chooseBackend({ backend });
      const args = [tf.tensor2d(x, [B * rows, cols]), tf.tensor2d(r, [B * rows, cols])];
      const u = tf.tensor2d(up, [B * rows, cols]);
      const f = (...a: tf.Tensor[]): tf.Scalar => {
        const d = new Dropout(Int32Array.from([9, -3, 77]), 0.15, 2);
        d.mask([2, 3]); // site 0 drawn as a mask, site 1 applied
        const y = fused ? d.applyAndAdd(a[0] as tf.Tensor2D, B, a[1] as tf.Tensor2D) : tf.add(d.apply2d(a[0] as tf.Tensor2D, B), a[1] as tf.Tensor2D);
        return tf.sum(tf.mul(y, u));
      };
      return await valuesGradientsAdds(f, args, [u]);
    };
    const gpu = await run('webgpu', true);
    const separate = await run('webgpu', false);
    const cpu = await run('cpu', true);
    ['loss', 'dx', 'dresidual'].forEach((name, i) => {
      expect(relL2(gpu.out[i] as Float32Array, separate.out[i] as Float32Array), `${name} against the dropout and the add`).toBeLessThan(1e-6);
      expect(relL2(gpu.out[i] as Float32Array, cpu.out[i] as Float32Array), `${name} against cpu`).toBeLessThan(1e-6);
    });
    expect(bitDifferences(gpu.out[2] as Float32Array, Float32Array.from(up)), 'the residual\'s gradient is dy').toBe(0);
    expect(separate.adds - gpu.adds).toBe(1);
  }, 120_000);

  it('tensors flattened and concatenated in one kernel (M3aeFlatConcat, buffer copies): the same bits as on cpu, nothing left behind', async () => {
    const shapes = [[3, 4], [5], [2, 3, 2], [], [3, 4], [1, 70]];
    const make = (): tf.Tensor => {
      const parts = shapes.map((s, i) => tf.tensor(normals(s.reduce((a, b) => a * b, 1), 60 + i), s));
      const shared = parts[0] as tf.Tensor;
      // Values still in JavaScript, a kernel's output on the device, an empty tensor, a tensor twice (as the shared
      // zeros are); all disposed before the result is read.
      const computed = tf.add(parts[1] as tf.Tensor, 1);
      const empty = tf.zeros([0]);
      const out = flatConcat([...parts, computed, empty, shared]);
      tf.dispose([...parts, computed, empty]);
      return out;
    };
    const cpu = await on('cpu', make);
    await chooseBackend({ backend: 'webgpu' });
    const before = tf.memory().numTensors;
    const gpu = await on('webgpu', make);
    expect(tf.memory().numTensors).toBe(before);
    expect(gpu.length).toBe(12 + 5 + 12 + 1 + 12 + 70 + 5 + 12);
    expect(bitDifferences(gpu, cpu)).toBe(0);
    const info = await tf.profile(() => make().dispose());
    expect(info.kernels.filter((k) => k.name === 'Reshape' || k.name === 'Concat').length).toBe(0);
  }, 120_000);

  it('a flat tensor cut into parts (flatSplit; M3aeFlatSplit, buffer copies): the same bits as on cpu, nothing left behind, a wrong size refused', async () => {
    const sizes = [12, 5, 0, 1, 70, 3];
    const values = normals(91, 64);
    const cut = (): tf.Tensor => {
      const flat = tf.tensor1d(values);
      const parts = flatSplit(flat, sizes);
      expect(parts.map((t) => t.size)).toEqual(sizes);
      // Read back in reverse order: each part in its own place.
      const out = tf.concat([...parts].reverse());
      tf.dispose([flat, ...parts]);
      return out;
    };
    const cpu = await on('cpu', cut);
    await chooseBackend({ backend: 'webgpu' });
    const before = tf.memory().numTensors;
    const gpu = await on('webgpu', cut);
    expect(tf.memory().numTensors).toBe(before);
    expect(bitDifferences(gpu, cpu)).toBe(0);
    expect(Array.from(gpu.subarray(0, 3))).toEqual(Array.from(values.subarray(88, 91)));
    const info = await tf.profile(() => tf.tidy(() => tf.dispose(flatSplit(tf.tensor1d(values), sizes))));
    expect(info.kernels.map((k) => k.name)).toEqual([FLAT_SPLIT]);
    const t = tf.tensor1d(values);
    expect(() => flatSplit(t, [90])).toThrow(/sizes add up to 90; expected the 91 values/);
    t.dispose();
  }, 120_000);

  it('residual add in one kernel each way (M3aeResidualAdd): value and gradients bit-equal to cpu, no saved copies', async () => {
    const [m, n] = [9, 70];
    const [a, b, up] = [normals(m * n, 71), normals(m * n, 72), normals(m * n, 73)];
    const run = async (backend: string): Promise<Float32Array[]> => {
      await chooseBackend({ backend });
      const [at, bt, ut] = [tf.tensor2d(a, [m, n]), tf.tensor2d(b, [m, n]), tf.tensor2d(up, [m, n])];
      const y = residualAdd(at, bt);
      // a reaches the loss twice (as the residual stream does): its two gradients are summed.
      const f = (x: tf.Tensor, z: tf.Tensor): tf.Scalar => tf.sum(tf.mul(residualAdd(residualAdd(x as tf.Tensor2D, z as tf.Tensor2D), x as tf.Tensor2D), ut));
      const grads = tf.grads(f)([at, bt]);
      const out = await Promise.all([y, ...grads].map(async (t) => (await t.data()) as Float32Array));
      tf.dispose([at, bt, ut, y, ...grads]);
      return out;
    };
    const cpu = await run('cpu');
    const gpu = await run('webgpu');
    ['y', 'da', 'db'].forEach((name, i) => expect(bitDifferences(gpu[i] as Float32Array, cpu[i] as Float32Array), name).toBe(0));
    await chooseBackend({ backend: 'webgpu' });
    const [at, bt] = [tf.tensor2d(a, [m, n]), tf.tensor2d(b, [m, n])];
    const before = tf.memory().numTensors;
    const info = await tf.profile(() => tf.dispose(tf.grads((x: tf.Tensor, z: tf.Tensor) => tf.sum(residualAdd(x as tf.Tensor2D, z as tf.Tensor2D)))([at, bt])));
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([at, bt]);
    expect(info.kernels.filter((k) => k.name === RESIDUAL_ADD).length).toBe(1);
    expect(info.kernels.filter((k) => k.name === 'Add').length).toBe(0);
  }, 120_000);

  it('multi-head attention in one kernel each way (M3aeAttention, M3aeAttentionGrad): as on cpu (1e-5), the same bits as the split kernels on webgpu and every run', async () => {
    // Cross-attention shapes (Tq ≠ Tk), keys past one workgroup (64) and past a product tile (32), heads wider than
    // a tile, with and without key bias and dropout mask.
    for (const [B, h, tq, tk, dh, withExtras] of [[2, 3, 5, 70, 4, true], [2, 3, 5, 70, 4, false], [2, 2, 37, 9, 40, true]] as const) {
      const D = h * dh;
      const [q, k, v, w] = [normals(B * tq * D, 81), normals(B * tk * D, 82), normals(B * tk * D, 83), normals(B * tq * D, 84)];
      const bias = Float32Array.from({ length: B * tk }, (_, i) => (i % tk > 60 + (i < tk ? 0 : 5) ? -1e9 : 0));
      const dims = { batch: B, tq, tk, heads: h };
      type Attention = (a: tf.Tensor2D, b: tf.Tensor2D, c: tf.Tensor2D, bias?: tf.Tensor, mask?: MaskKeys) => tf.Tensor2D;
      const ours: Attention = (a, b, c, bt, mask) => multiHeadAttention(a, b, c, dims, bt, mask);
      // What ran before: a mask tensor, split heads, M3aeAttentionProbs, merged heads.
      const split: Attention = (a, b, c, bt, mask) => {
        const m = mask && keyedMask(mask);
        const out = mergeHeads(attend(splitHeads(a, B, tq, h), splitHeads(b, B, tk, h, true), splitHeads(c, B, tk, h), bt, m));
        m?.dispose();
        return out;
      };
      const run = async (backend: string, op: Attention): Promise<Float32Array[]> => {
        await chooseBackend({ backend });
        const [qt, kt, vt, wt] = [tf.tensor2d(q, [B * tq, D]), tf.tensor2d(k, [B * tk, D]), tf.tensor2d(v, [B * tk, D]), tf.tensor2d(w, [B * tq, D])];
        const bt = tf.tensor4d(bias, [B, 1, 1, tk]);
        // Indexed in a larger canonical shape, as the model's masks are ([heads, span, span]).
        const mask = new Dropout(Int32Array.from([5, 6]), 0.1, 1).lazyMask([h, tq, tk], [h, 80, 80]);
        const [eb, em] = withExtras ? [bt, mask] : [undefined, undefined];
        const f = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor): tf.Scalar => tf.sum(tf.mul(op(a as tf.Tensor2D, b as tf.Tensor2D, c as tf.Tensor2D, eb, em), wt));
        const y = op(qt, kt, vt, eb, em);
        const grads = tf.grads(f)([qt, kt, vt]);
        const out = await Promise.all([y, ...grads].map(async (t) => (await t.data()) as Float32Array));
        tf.dispose([qt, kt, vt, wt, bt, y, ...grads]);
        return out;
      };
      const cpu = await run('cpu', ours);
      const gpu = await run('webgpu', ours);
      const again = await run('webgpu', ours);
      const before = await run('webgpu', split);
      ['out', 'dq', 'dk', 'dv'].forEach((name, i) => {
        const a = gpu[i] as Float32Array;
        expect(relL2(a, cpu[i] as Float32Array), `${name}, bias and mask ${withExtras}`).toBeLessThan(1e-5);
        expect(bitDifferences(again[i] as Float32Array, a), `${name} repeat`).toBe(0);
        expect(bitDifferences(before[i] as Float32Array, a), `${name} against the split kernels`).toBe(0);
      });
    }
    // No tensor left behind, one kernel each way.
    await chooseBackend({ backend: 'webgpu' });
    const [B, h, tq, tk, D] = [2, 3, 5, 70, 12];
    const dims = { batch: B, tq, tk, heads: h };
    const [qt, kt, vt] = [tf.tensor2d(normals(B * tq * D, 81), [B * tq, D]), tf.tensor2d(normals(B * tk * D, 82), [B * tk, D]), tf.tensor2d(normals(B * tk * D, 83), [B * tk, D])];
    const tensors = tf.memory().numTensors;
    // The mask's keys as a pass makes them: in its scope (the keys' device table is released with it).
    const info = await tf.profile(() =>
      tf.tidy(() => {
        const keys = new Dropout(Int32Array.from([5, 6]), 0.1, 1).lazyMask([h, tq, tk]);
        tf.dispose(tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(multiHeadAttention(a as tf.Tensor2D, b as tf.Tensor2D, c as tf.Tensor2D, dims, undefined, keys)))([qt, kt, vt]));
      }),
    );
    expect(tf.memory().numTensors).toBe(tensors);
    tf.dispose([qt, kt, vt]);
    expect(info.kernels.filter((x) => x.name === ATTENTION || x.name === ATTENTION_GRAD).length).toBe(2);
    expect(info.kernels.filter((x) => x.name === 'BatchMatMul' || x.name === HEADS || x.name === DROPOUT_MASK).length).toBe(0);
  }, 120_000);

  it('an attention\'s projections in one kernel (M3aeProjections), x again for the residual: the same bits as dense kernels and an Add summed by the tape, as on cpu (1e-5), without the tape\'s Adds', async () => {
    // Self-attention (q, k, v of one input; the queries' scale a power of two, then not: the MIM decoder's) and
    // cross-attention (k, v of the other input), with and without x returned for a residual. Shapes past one 32×32 tile.
    const [rows, other, din, d] = [70, 45, 40, 36];
    const names = { query: 'q', key: 'k', value: 'v' };
    for (const [s, cross, residual] of [[0.25, false, false], [0.3, false, false], [0.25, true, false], [0.25, false, true], [0.3, true, true]] as const) {
      const label = `scale ${s}, ${cross ? 'cross' : 'self'}${residual ? ', residual' : ''}`;
      const sourceRows = cross ? other : rows;
      const params = ['q', 'k', 'v'].flatMap((n, i) => [[`${n}.weight`, normals(din * d, 103 + i), [din, d]], [`${n}.bias`, normals(d, 106 + i), [d]]] as [string, Float32Array, number[]][]);
      const inputs: [Float32Array, number[]][] = [[normals(rows * din, 101), [rows, din]], ...(cross ? [[normals(other * din, 102), [other, din]] as [Float32Array, number[]]] : [])];
      const ups = [normals(rows * d, 109), normals(sourceRows * d, 110), normals(sourceRows * d, 111), normals(rows * din, 112)];
      /** Σ q·u₀ + k·u₁ + v·u₂ (+ x·u₃ through `input`; q scaled as the attention kernel would), its gradients by the inputs and parameters, and the Adds run. */
      const run = async (backend: string, project: typeof attentionProjections): Promise<{ out: Float32Array[]; adds: number }> => {
        await chooseBackend({ backend });
        const args = [...inputs, ...params.map(([, v, shape]) => [v, shape] as const)].map(([v, shape]) => tf.tensor(v, shape));
        const us = ups.map((u, i) => tf.tensor2d(u, [i === 0 ? rows : i === 3 ? rows : sourceRows, i === 3 ? din : d]));
        const f = (...a: tf.Tensor[]): tf.Scalar => {
          const p = paramsFromMap(new Map(params.map(([n], i) => [n, a[inputs.length + i] as tf.Tensor])));
          const { query, k, v, input } = project(p, names, a[0] as tf.Tensor2D, cross ? (a[1] as tf.Tensor2D) : undefined, s, residual);
          const q = query.scale === 1 ? query.q : tf.mul(query.q, query.scale);
          return tf.addN([q, k, v, ...(residual ? [input] : [])].map((t, i) => tf.sum(tf.mul(t, us[i] as tf.Tensor)))) as tf.Scalar;
        };
        return await valuesGradientsAdds(f, args, us);
      };
      // What the model ran before: scaled queries (linearScaled, also where the attention kernel now scales the
      // scores), keys and values by linear, x itself for the residual, the tape summing x's gradients.
      const separate: typeof attentionProjections = (p, n, a, b, scale) => ({ query: { q: linearScaled(p, n.query, a, scale), scale: 1 }, k: linear(p, n.key, b ?? a), v: linear(p, n.value, b ?? a), input: a });
      const gpu = await run('webgpu', attentionProjections);
      const before = await run('webgpu', separate);
      const again = await run('webgpu', attentionProjections);
      const cpu = await run('cpu', attentionProjections);
      const labels = ['loss', 'dx', ...(cross ? ['dsource'] : []), ...params.map(([n]) => `d${n}`)];
      expect(gpu.out.length).toBe(labels.length);
      gpu.out.forEach((a, i) => {
        const name = `${labels[i] as string} (${label})`;
        expect(bitDifferences(a, before.out[i] as Float32Array), `${name} against the separate kernels`).toBe(0);
        expect(bitDifferences(again.out[i] as Float32Array, a), `${name} repeat`).toBe(0);
        expect(relL2(a, cpu.out[i] as Float32Array), `${name} against cpu`).toBeLessThan(1e-5);
      });
      // The tape's Adds of the input gradients are gone: x's 3 terms (self-attention) or the source's 2 (cross),
      // and the residual's term of x.
      expect(before.adds - gpu.adds, label).toBe((cross ? 1 : 2) + (residual ? 1 : 0));
    }
  }, 120_000);

  it('LayerNorm with x again for the residual (M3aeLayerNormResidual): x\'s gradient in the dx program, as LayerNorm and an Add (1e-6), no Add', async () => {
    const [rows, d] = [37, 80];
    const [x, g, b, u, ur] = [normals(rows * d, 121), normals(d, 122), normals(d, 123), normals(rows * d, 124), normals(rows * d, 125)];
    const run = async (backend: string, fused: boolean): Promise<{ out: Float32Array[]; adds: number }> => {
      await chooseBackend({ backend });
      const args = [tf.tensor2d(x, [rows, d]), tf.tensor1d(g), tf.tensor1d(b)];
      const [ut, urt] = [tf.tensor2d(u, [rows, d]), tf.tensor2d(ur, [rows, d])];
      const f = (...a: tf.Tensor[]): tf.Scalar => {
        const p = paramsFromMap(new Map([['ln.weight', a[1] as tf.Tensor], ['ln.bias', a[2] as tf.Tensor]]));
        const { y, input } = fused ? layerNormAndInput(p, 'ln', a[0] as tf.Tensor2D, 1e-5) : { y: layerNormOp(a[0] as tf.Tensor2D, a[1] as tf.Tensor, a[2] as tf.Tensor, 1e-5), input: a[0] as tf.Tensor2D };
        return tf.add(tf.sum(tf.mul(y, ut)), tf.sum(tf.mul(input, urt)));
      };
      return await valuesGradientsAdds(f, args, [ut, urt]);
    };
    const gpu = await run('webgpu', true);
    const before = await run('webgpu', false);
    const again = await run('webgpu', true);
    const cpu = await run('cpu', true);
    ['loss', 'dx', 'dγ', 'dβ'].forEach((name, i) => {
      expect(relL2(gpu.out[i] as Float32Array, before.out[i] as Float32Array), `${name} against LayerNorm and an Add`).toBeLessThan(1e-6);
      expect(bitDifferences(again.out[i] as Float32Array, gpu.out[i] as Float32Array), `${name} repeat`).toBe(0);
      expect(relL2(gpu.out[i] as Float32Array, cpu.out[i] as Float32Array), `${name} against cpu`).toBeLessThan(1e-5);
    });
    expect(before.adds - gpu.adds).toBe(1);
  }, 120_000);

  it('queries scaled by the attention kernel (attentionProjections, a power-of-two scale): the same bits as linearScaled, values and every gradient', async () => {
    const [B, h, tq, tk, dh, din] = [2, 2, 6, 67, 16, 12];
    const D = h * dh;
    const s = dh ** -0.5; // 1/4
    const [x, w, b, k, v, up] = [normals(B * tq * din, 91), normals(din * D, 92), normals(D, 93), normals(B * tk * D, 94), normals(B * tk * D, 95), normals(B * tq * D, 96)];
    const bias = Float32Array.from({ length: B * tk }, (_, i) => (i % tk > 60 ? -1e9 : 0));
    const dims = { batch: B, tq, tk, heads: h };
    type Query = (p: ReturnType<typeof paramsFromMap>, xt: tf.Tensor2D) => tf.Tensor2D | AttentionQuery;
    const run = async (backend: string, query: Query): Promise<Float32Array[]> => {
      await chooseBackend({ backend });
      const [xt, wt, bt, kt, vt, ut] = [tf.tensor2d(x, [B * tq, din]), tf.tensor2d(w, [din, D]), tf.tensor1d(b), tf.tensor2d(k, [B * tk, D]), tf.tensor2d(v, [B * tk, D]), tf.tensor2d(up, [B * tq, D])];
      const kb = tf.tensor4d(bias, [B, 1, 1, tk]);
      const mask = new Dropout(Int32Array.from([7, 8]), 0.1, 1).lazyMask([h, tq, tk], [h, 80, 80]);
      const f = (...a: tf.Tensor[]): tf.Scalar => {
        const p = paramsFromMap(new Map([['l.weight', a[1] as tf.Tensor], ['l.bias', a[2] as tf.Tensor]]));
        return tf.sum(tf.mul(multiHeadAttention(query(p, a[0] as tf.Tensor2D), a[3] as tf.Tensor2D, a[4] as tf.Tensor2D, dims, kb, mask), ut));
      };
      const { value, grads } = tf.valueAndGrads(f)([xt, wt, bt, kt, vt]);
      const out = await Promise.all([value, ...grads].map(async (t) => (await t.data()) as Float32Array));
      tf.dispose([xt, wt, bt, kt, vt, ut, kb, value, ...grads]);
      return out;
    };
    // The queries as attentionProjections makes them on webgpu for this scale: unscaled, the kernel scaling the scores.
    const byKernel: Query = (p, xt) => ({ q: linear(p, 'l', xt), scale: s });
    const byWeights: Query = (p, xt) => linearScaled(p, 'l', xt, s);
    const gpu = await run('webgpu', byKernel);
    const before = await run('webgpu', byWeights);
    const cpu = await run('cpu', byKernel);
    ['loss', 'dx', 'dW', 'db', 'dk', 'dv'].forEach((name, i) => {
      expect(bitDifferences(before[i] as Float32Array, gpu[i] as Float32Array), `${name} against linearScaled`).toBe(0);
      expect(relL2(gpu[i] as Float32Array, cpu[i] as Float32Array), `${name} against cpu`).toBeLessThan(1e-5);
    });
    // attentionProjections gives the scale to the kernel only where it is exact there, and only on a backend with it.
    const names = { query: 'l', key: 'l', value: 'l' };
    for (const backend of ['webgpu', 'cpu']) {
      await chooseBackend({ backend });
      const p = paramsFromMap(new Map<string, tf.Tensor>([['l.weight', tf.tensor2d(w, [din, D])], ['l.bias', tf.tensor1d(b)]]));
      const xt = tf.tensor2d(x, [B * tq, din]);
      const projected = (scale: number): { q: tf.Tensor; scale: number; rest: tf.Tensor[] } => {
        const r = attentionProjections(p, names, xt, undefined, scale);
        return { q: r.query.q, scale: r.query.scale, rest: [r.k, r.v] };
      };
      const kernels = (
        await tf.profile(() => {
          const r = projected(s);
          tf.dispose([r.q, ...r.rest]);
        })
      ).kernels.map((kk) => kk.name);
      if (backend === 'webgpu') expect(kernels).not.toContain('Multiply');
      const scales = [s, 8 ** -0.5].map((scale) => tf.tidy(() => projected(scale).scale));
      expect(scales, backend).toEqual(backend === 'webgpu' ? [s, 1] : [1, 1]);
      tf.dispose([xt, p.get('l.weight'), p.get('l.bias')]);
    }
  }, 120_000);
});
