import { SafetensorsFile, toFloat32, type Float32Tensor } from '../safetensors/index.js';

/** Where weights are read from: a safetensors file (read tensor by tensor) or tensors in memory. */
export interface TensorSource {
  names(): string[];
  shapeOf(name: string): readonly number[];
  readFloat32(name: string): Promise<Float32Tensor>;
}

/** A source backed by an open safetensors file (F16/BF16/F64 are widened to float32 on read). */
export function fileSource(file: SafetensorsFile): TensorSource {
  return {
    names: () => file.names(),
    shapeOf: (name) => file.info(name).shape,
    readFloat32: (name) => file.readFloat32(name),
  };
}

/** A source over tensors in memory (e.g. a synthetic state dict in tests). */
export function memorySource(tensors: ReadonlyMap<string, { readonly shape: readonly number[]; readonly data: Float32Array }>): TensorSource {
  return {
    names: () => [...tensors.keys()],
    shapeOf: (name) => {
      const t = tensors.get(name);
      if (!t) throw new Error(`no tensor named ${name}`);
      return t.shape;
    },
    readFloat32: (name) => {
      const t = tensors.get(name);
      if (!t) return Promise.reject(new Error(`no tensor named ${name}`));
      return Promise.resolve({ shape: t.shape, data: toFloat32('F32', t.data, name) });
    },
  };
}

/** Opens a safetensors file as a source, runs `fn`, and closes it. */
export async function withFileSource<T>(path: string, fn: (source: TensorSource) => Promise<T>): Promise<T> {
  const file = await SafetensorsFile.open(path);
  try {
    return await fn(fileSource(file));
  } finally {
    await file.close();
  }
}
