import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { chooseBackend } from '../backend.js';
import { HashStream } from '../random.js';
import { batchMatMul, bmmArrays } from './bmm.js';

function randomArray(n: number, seed: number): Float32Array {
  const s = new HashStream(seed);
  return Float32Array.from({ length: n }, () => s.normal());
}

function reference(a: Float32Array, b: Float32Array, G: number, M: number, K: number, N: number): Float64Array {
  const c = new Float64Array(G * M * N);
  for (let g = 0; g < G; g++)
    for (let i = 0; i < M; i++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += (a[(g * M + i) * K + k] ?? 0) * (b[(g * K + k) * N + j] ?? 0);
        c[(g * M + i) * N + j] = s;
      }
  return c;
}

describe('SIMD batched matrix product', () => {
  it('matches a float64 reference for aligned and ragged shapes', () => {
    for (const [G, M, K, N] of [[2, 4, 3, 8], [3, 65, 64, 65], [5, 17, 32, 17], [1, 1, 1, 1], [4, 9, 65, 64]] as const) {
      const a = randomArray(G * M * K, 1 + M);
      const b = randomArray(G * K * N, 2 + N);
      const c = bmmArrays(a, b, G, M, K, N);
      const r = reference(a, b, G, M, K, N);
      let err = 0;
      for (let i = 0; i < c.length; i++) err = Math.max(err, Math.abs((c[i] ?? 0) - (r[i] ?? 0)));
      expect(err, `${G}×${M}×${K}×${N}`).toBeLessThan(1e-4 * Math.sqrt(K));
    }
  });

  it('has the gradient of tf.matMul', async () => {
    await chooseBackend({ backend: 'wasm' });
    const a = tf.tensor(randomArray(2 * 3 * 5 * 4, 7), [2, 3, 5, 4]);
    const b = tf.tensor(randomArray(2 * 3 * 4 * 6, 8), [2, 3, 4, 6]);
    const w = tf.tensor(randomArray(2 * 3 * 5 * 6, 9), [2, 3, 5, 6]);
    const mine = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(batchMatMul(x, y), w)))([a, b]);
    const theirs = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, y), w)))([a, b]);
    for (let i = 0; i < 2; i++) {
      const d = tf.max(tf.abs(tf.sub(mine[i] as tf.Tensor, theirs[i] as tf.Tensor))).dataSync()[0] ?? 1;
      expect(d).toBeLessThan(1e-4);
    }
    tf.dispose([a, b, w, ...mine, ...theirs]);
  });

  it('embeds exactly the compiled bmm.wat (regenerate with wabt when the source changes)', async () => {
    let wabt: ((...a: unknown[]) => Promise<{ parseWat(name: string, src: string, f: object): { validate(): void; toBinary(o: object): { buffer: Uint8Array } } }>) | undefined;
    try {
      wabt = (await import('wabt' as string)).default;
    } catch {
      console.warn('wabt is not installed: skipping the check of the embedded kernel bytes');
      return;
    }
    if (!wabt) return;
    const w = await wabt();
    const source = readFileSync(new URL('./bmm.wat', import.meta.url), 'utf8');
    const mod = w.parseWat('bmm.wat', source, { simd: true });
    mod.validate();
    const compiled = Buffer.from(mod.toBinary({}).buffer).toString('base64');
    const embedded = /const BMM_WASM = '([^']+)'/.exec(readFileSync(new URL('./bmm.ts', import.meta.url), 'utf8'))?.[1];
    expect(embedded).toBe(compiled);
  });
});
