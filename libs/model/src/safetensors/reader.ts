import { open, type FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import { toFloat32, toInt32 } from './convert.js';
import { viewAs, type DtypeArrays, type SafetensorsDtype, type TensorData } from './dtype.js';
import { SafetensorsError } from './errors.js';
import { MAX_HEADER_BYTES, checkHeaderLength, parseHeader, type SafetensorsHeader, type TensorInfo } from './header.js';

export interface SafetensorsTensor<D extends SafetensorsDtype = SafetensorsDtype> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly data: DtypeArrays[D];
}

export interface Float32Tensor {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

export interface Int32Tensor {
  readonly shape: readonly number[];
  readonly data: Int32Array;
}

export interface OpenOptions {
  /** @defaultValue 100,000,000 (the reference implementation's limit) */
  readonly maxHeaderBytes?: number;
}

export function assertLittleEndian(): void {
  // Typed arrays use the host's byte order and safetensors is little-endian; every platform Node ships on is LE.
  if (endianness() !== 'LE') throw new SafetensorsError('safetensors needs a little-endian host');
}

/** Largest single read; fs reads are limited to 2 GiB per call. */
const READ_CHUNK = 1 << 30;

/**
 * A safetensors file opened for random access: the header is read and validated at once, tensors are read
 * one at a time by offset, so a multi-gigabyte checkpoint never has to be in memory whole.
 */
export class SafetensorsFile {
  private constructor(
    readonly path: string,
    readonly header: SafetensorsHeader,
    private handle: FileHandle | undefined,
  ) {}

  static async open(path: string, options: OpenOptions = {}): Promise<SafetensorsFile> {
    assertLittleEndian();
    const handle = await open(path, 'r');
    try {
      const size = (await handle.stat()).size;
      const prefix = new Uint8Array(8);
      await readFully(handle, prefix, 0, path);
      const n = checkHeaderLength(prefix, size, options.maxHeaderBytes ?? MAX_HEADER_BYTES);
      const headerBytes = new Uint8Array(n);
      await readFully(handle, headerBytes, 8, path);
      const header = parseHeader(headerBytes, size - 8 - n);
      return new SafetensorsFile(path, header, handle);
    } catch (e) {
      await handle.close();
      if (e instanceof SafetensorsError) throw new SafetensorsError(`${path}: ${e.message}`);
      throw e;
    }
  }

  get metadata(): Readonly<Record<string, string>> {
    return this.header.metadata;
  }

  /** Tensor names in file order. */
  names(): string[] {
    return this.header.tensors.map((t) => t.name);
  }

  has(name: string): boolean {
    return this.header.byName.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.header.byName.get(name);
    if (!t) throw new SafetensorsError(`${this.path}: no tensor named ${name}`);
    return t;
  }

  /** The tensor's bytes, in a fresh (aligned) buffer. */
  async readBytes(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    if (!this.handle) throw new SafetensorsError(`${this.path}: file is closed`);
    const bytes = new Uint8Array(t.end - t.begin);
    await readFully(this.handle, bytes, this.header.dataOffset + t.begin, this.path);
    return bytes;
  }

  /**
   * Reads the tensor's bytes straight into `into` (which must be exactly its size): lets a loader fill one big
   * flat buffer without a copy per tensor.
   */
  async readBytesInto(name: string, into: Uint8Array): Promise<void> {
    const t = this.info(name);
    if (!this.handle) throw new SafetensorsError(`${this.path}: file is closed`);
    if (into.byteLength !== t.end - t.begin) {
      throw new SafetensorsError(`${this.path}: tensor ${name} has ${t.end - t.begin} bytes; the target holds ${into.byteLength}`);
    }
    await readFully(this.handle, into, this.header.dataOffset + t.begin, this.path);
  }

  async read(name: string): Promise<SafetensorsTensor> {
    const t = this.info(name);
    return { dtype: t.dtype, shape: t.shape, data: viewAs(t.dtype, await this.readBytes(name)) };
  }

  /** Any float (or integer) dtype as float32: F16/BF16 are widened exactly. */
  async readFloat32(name: string): Promise<Float32Tensor> {
    const t = await this.read(name);
    return { shape: t.shape, data: toFloat32(t.dtype, t.data, name) };
  }

  /** Any integer dtype as int32, range-checked (I64 token ids from PyTorch become Int32Array). */
  async readInt32(name: string): Promise<Int32Tensor> {
    const t = await this.read(name);
    return { shape: t.shape, data: toInt32(t.dtype, t.data, name) };
  }

  async close(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    await h?.close();
  }
}

async function readFully(handle: FileHandle, into: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < into.byteLength) {
    const want = Math.min(READ_CHUNK, into.byteLength - done);
    const { bytesRead } = await handle.read(into, done, want, position + done);
    if (bytesRead === 0) throw new SafetensorsError(`${path}: unexpected end of file at byte ${position + done}`);
    done += bytesRead;
  }
}

/** Opens, runs `fn`, and always closes. */
export async function withSafetensors<T>(path: string, fn: (file: SafetensorsFile) => Promise<T>, options?: OpenOptions): Promise<T> {
  const file = await SafetensorsFile.open(path, options);
  try {
    return await fn(file);
  } finally {
    await file.close();
  }
}

export interface SafetensorsContents {
  readonly metadata: Readonly<Record<string, string>>;
  /** In file order. */
  readonly tensors: ReadonlyMap<string, SafetensorsTensor>;
}

/** Reads a whole file into memory (for small files; use `SafetensorsFile` for large ones). */
export async function readSafetensors(path: string, options?: OpenOptions): Promise<SafetensorsContents> {
  return withSafetensors(
    path,
    async (file) => {
      const tensors = new Map<string, SafetensorsTensor>();
      for (const name of file.names()) tensors.set(name, await file.read(name));
      return { metadata: file.metadata, tensors };
    },
    options,
  );
}

/** Parses a whole safetensors image held in memory (validated exactly as a file is). */
export function decodeSafetensors(bytes: Uint8Array, options: OpenOptions = {}): SafetensorsContents {
  assertLittleEndian();
  const n = checkHeaderLength(bytes.subarray(0, 8), bytes.byteLength, options.maxHeaderBytes ?? MAX_HEADER_BYTES);
  const header = parseHeader(bytes.subarray(8, 8 + n), bytes.byteLength - 8 - n);
  const tensors = new Map<string, SafetensorsTensor>();
  for (const t of header.tensors) {
    // Copied so each tensor is aligned for its typed array whatever the offsets.
    const copy = bytes.slice(header.dataOffset + t.begin, header.dataOffset + t.end);
    tensors.set(t.name, { dtype: t.dtype, shape: t.shape, data: viewAs(t.dtype, copy) as TensorData });
  }
  return { metadata: header.metadata, tensors };
}
