import * as tf from '@tensorflow/tfjs-core';
// Gradients are registered by the umbrella package (see ops.ts).
import '@tensorflow/tfjs';
import { nativeTransposedProducts } from '../backend.js';

/**
 * Batched matrix product through a small WebAssembly SIMD kernel (`bmm.wat` beside this file; the bytes below
 * are its compiled form, checked by `kernels.spec.ts`). The wasm backend of TensorFlow.js sends batched products
 * (attention scores and contexts) to a scalar triple loop; this kernel is about an order of magnitude faster on
 * them, including the copies in and out of its memory. Used on the `wasm` and `cpu` backends only.
 */
const BMM_WASM = 'AGFzbQEAAAABCwFgB39/f39/f38AAwIBAAUDAQABBxACBm1lbW9yeQIAA2JtbQAACu8EAewEAgx/C3sgBUECdCERIAZBAnQhEiAAIQsgASEMIAIhDUEAIQcDQEEAIQgDQEEAIQkDQP0MAAAAAAAAAAAAAAAAAAAAACEW/QwAAAAAAAAAAAAAAAAAAAAAIRf9DAAAAAAAAAAAAAAAAAAAAAAhGP0MAAAAAAAAAAAAAAAAAAAAACEZ/QwAAAAAAAAAAAAAAAAAAAAAIRr9DAAAAAAAAAAAAAAAAAAAAAAhG/0MAAAAAAAAAAAAAAAAAAAAACEc/QwAAAAAAAAAAAAAAAAAAAAAIR0gCyAIIBFsaiEOIAwgCUECdGohD0EAIQoDQCAP/QAEACETIA/9AAQQIRQgDioCAP0TIRUgFiAVIBP95gH95AEhFiAXIBUgFP3mAf3kASEXIA4gEWoqAgD9EyEVIBggFSAT/eYB/eQBIRggGSAVIBT95gH95AEhGSAOIBFBAXRqKgIA/RMhFSAaIBUgE/3mAf3kASEaIBsgFSAU/eYB/eQBIRsgDiARQQNsaioCAP0TIRUgHCAVIBP95gH95AEhHCAdIBUgFP3mAf3kASEdIA5BBGohDiAPIBJqIQ8gCkEBaiEKIAogBUkNAAsgDSAIIBJsIAlBAnRqaiEQIBAgFv0LBAAgECAX/QsEECAQIBJqIRAgECAY/QsEACAQIBn9CwQQIBAgEmohECAQIBr9CwQAIBAgG/0LBBAgECASaiEQIBAgHP0LBAAgECAd/QsEECAJQQhqIQkgCSAGSQ0ACyAIQQRqIQggCCAESQ0ACyALIAQgEWxqIQsgDCAFIBJsaiEMIA0gBCASbGohDSAHQQFqIQcgByADSQ0ACws=';

// The compiler options carry no DOM/WebAssembly typings: the little of the WebAssembly API used here.
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
}
const wasmApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

interface Kernel {
  memory: WasmMemory;
  bmm: (a: number, b: number, c: number, g: number, m: number, k: number, n: number) => void;
}

let kernel: Kernel | undefined;

function load(): Kernel {
  if (!kernel) {
    const instance = new wasmApi.Instance(new wasmApi.Module(Buffer.from(BMM_WASM, 'base64')), {});
    const e = instance.exports as unknown as Kernel;
    kernel = { memory: e.memory, bmm: e.bmm };
  }
  return kernel;
}

/** C[g] = A[g] · B[g] for A [G, M, K] and B [G, K, N] given as flat row-major arrays; returns C [G, M, N]. */
export function bmmArrays(a: Float32Array, b: Float32Array, G: number, M: number, K: number, N: number): Float32Array {
  if (a.length !== G * M * K || b.length !== G * K * N) throw new Error(`bmmArrays: got ${a.length} and ${b.length} values; expected ${G * M * K} and ${G * K * N}`);
  const k = load();
  // The kernel computes 4×8 blocks: pad M to a multiple of 4 and N to a multiple of 8. Padded rows of A and
  // columns of B only reach padded entries of C, which are dropped, so they need no clearing.
  const Mp = Math.ceil(M / 4) * 4;
  const Np = Math.ceil(N / 8) * 8;
  const offA = 0;
  const offB = offA + G * Mp * K;
  const offC = offB + G * K * Np;
  const bytes = 4 * (offC + G * Mp * Np);
  const pages = Math.ceil(bytes / 65536) - k.memory.buffer.byteLength / 65536;
  if (pages > 0) k.memory.grow(pages);
  const mem = new Float32Array(k.memory.buffer);
  if (Mp === M) mem.set(a, offA);
  else for (let g = 0; g < G; g++) mem.set(a.subarray(g * M * K, (g + 1) * M * K), offA + g * Mp * K);
  if (Np === N) mem.set(b, offB);
  else for (let r = 0; r < G * K; r++) mem.set(b.subarray(r * N, (r + 1) * N), offB + r * Np);
  k.bmm(4 * offA, 4 * offB, 4 * offC, G, Mp, K, Np);
  const c = new Float32Array(G * M * N);
  if (Np === N && Mp === M) c.set(mem.subarray(offC, offC + G * M * N));
  else {
    for (let g = 0; g < G; g++) {
      for (let i = 0; i < M; i++) {
        const src = offC + (g * Mp + i) * Np;
        c.set(mem.subarray(src, src + N), (g * M + i) * N);
      }
    }
  }
  return c;
}

function useKernel(): boolean {
  const backend = tf.getBackend();
  return backend === 'wasm' || backend === 'cpu';
}

function product(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  if (!useKernel()) return tf.matMul(a, b);
  const r = a.rank;
  const M = a.shape[r - 2] ?? 1;
  const K = a.shape[r - 1] ?? 1;
  const N = b.shape[r - 1] ?? 1;
  const G = a.size / (M * K);
  // A kernel must compute synchronously; this one runs only where reads are synchronous (wasm, cpu: useKernel).
  // eslint-disable-next-line no-restricted-properties
  const out = bmmArrays(a.dataSync() as Float32Array, b.dataSync() as Float32Array, G, M, K, N);
  return tf.tensor(out, [...a.shape.slice(0, r - 2), M, N], 'float32');
}

function swapLast(x: tf.Tensor): tf.Tensor {
  const perm = x.shape.map((_, i) => i);
  const r = x.rank;
  perm[r - 2] = r - 1;
  perm[r - 1] = r - 2;
  return tf.transpose(x, perm);
}

/**
 * a · b over the last two axes with identical leading (batch) axes, differentiable. The gradient is two more
 * batched products, da = dy · bᵀ and db = aᵀ · dy: with explicit transposes, or transposed in place where the
 * backend does that (`nativeTransposedProducts`).
 */
export function batchMatMul<T extends tf.Tensor>(a: T, b: T): T {
  if (a.rank < 3 || a.rank !== b.rank || a.shape.slice(0, -2).join() !== b.shape.slice(0, -2).join() || a.shape[a.rank - 1] !== b.shape[b.rank - 2]) {
    throw new Error(`batchMatMul: shapes [${a.shape.join(', ')}] and [${b.shape.join(', ')}] do not multiply`);
  }
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [x, y] = args as [tf.Tensor, tf.Tensor];
    (args[2] as tf.GradSaveFunc)([x, y]);
    return {
      value: product(x, y),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, ys] = saved as [tf.Tensor, tf.Tensor];
        if (nativeTransposedProducts()) return [tf.matMul(dy, ys, false, true), tf.matMul(xs, dy, true, false)];
        return [product(dy, swapLast(ys)), product(swapLast(xs), dy)];
      },
    };
  });
  return op(a, b) as T;
}
