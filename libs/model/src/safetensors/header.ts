import { DTYPE_BYTES, SAFETENSORS_DTYPES, elementCount, isSafetensorsDtype, type SafetensorsDtype } from './dtype.js';
import { SafetensorsError } from './errors.js';

/** The Rust reference implementation's limit; a larger header is refused before anything is allocated. */
export const MAX_HEADER_BYTES = 100_000_000;

export const METADATA_KEY = '__metadata__';

export interface TensorInfo {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** Byte offsets into the data section (which starts right after the header). */
  readonly begin: number;
  readonly end: number;
}

export interface SafetensorsHeader {
  /** Tensors in file (offset) order. */
  readonly tensors: readonly TensorInfo[];
  readonly byName: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Readonly<Record<string, string>>;
  /** Length of the JSON header in bytes (the u64 at the start of the file). */
  readonly headerBytes: number;
  /** Absolute file offset of the data section: 8 + headerBytes. */
  readonly dataOffset: number;
  /** Length of the data section in bytes (= the end of the last tensor). */
  readonly dataBytes: number;
}

/**
 * Checks the 8-byte length prefix against the limit and the file size. Returns the header length.
 * `fileBytes` is the size of the whole file (or buffer).
 */
export function checkHeaderLength(prefix: Uint8Array, fileBytes: number, maxHeaderBytes = MAX_HEADER_BYTES): number {
  if (fileBytes < 8 || prefix.byteLength < 8) {
    throw new SafetensorsError(`file is ${fileBytes} bytes; a safetensors file starts with an 8-byte header length`);
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(maxHeaderBytes)) {
    throw new SafetensorsError(`header length ${n} exceeds the limit of ${maxHeaderBytes} bytes`);
  }
  const len = Number(n);
  if (len < 2) throw new SafetensorsError(`header length ${len} is too small for a JSON object`);
  if (8 + len > fileBytes) {
    throw new SafetensorsError(`header length ${len} runs past the end of the file (${fileBytes} bytes; expected at most ${fileBytes - 8})`);
  }
  return len;
}

/**
 * Parses and validates a header: valid UTF-8 JSON object, unique names, known dtypes, integer shapes, byte
 * sizes that match shape × dtype, offsets inside the data section with neither overlaps nor holes, and a
 * `__metadata__` map of strings. Every error names the tensor, the field, the value and what was expected.
 */
export function parseHeader(headerBytes: Uint8Array, dataBytes: number): SafetensorsHeader {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError('header is not valid UTF-8');
  }
  if (!text.startsWith('{')) throw new SafetensorsError(`header must be a JSON object starting with "{", found ${JSON.stringify(text.slice(0, 16))}`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(`header is not valid JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new SafetensorsError('header must be a JSON object');
  const dup = firstDuplicateTopLevelKey(text);
  if (dup !== undefined) throw new SafetensorsError(`tensor name ${JSON.stringify(dup)} appears twice in the header; names must be unique`);

  let metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === METADATA_KEY) {
      metadata = parseMetadata(entry);
      continue;
    }
    tensors.push(parseEntry(name, entry));
  }

  // Sorted by (begin, end) the tensors must tile [0, dataBytes) exactly: each starts where the previous ended.
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous: TensorInfo | undefined;
  for (const t of tensors) {
    if (t.begin < cursor) {
      throw new SafetensorsError(`tensor ${t.name}: data_offsets [${t.begin}, ${t.end}] overlap tensor ${previous?.name ?? '?'} which ends at ${cursor}`);
    }
    if (t.begin > cursor) {
      throw new SafetensorsError(`tensor ${t.name}: data_offsets begin at ${t.begin} but the previous tensor ends at ${cursor}; the data section must have no holes`);
    }
    cursor = t.end;
    previous = t;
  }
  if (cursor !== dataBytes) {
    throw new SafetensorsError(
      cursor > dataBytes
        ? `tensor ${previous?.name ?? '?'}: data_offsets end at ${cursor}, past the end of the data section (${dataBytes} bytes; file truncated?)`
        : `the tensors cover ${cursor} bytes but the data section holds ${dataBytes}; expected them to be equal (trailing bytes)`,
    );
  }
  return {
    tensors,
    byName: new Map(tensors.map((t) => [t.name, t])),
    metadata,
    headerBytes: headerBytes.byteLength,
    dataOffset: 8 + headerBytes.byteLength,
    dataBytes,
  };
}

function parseMetadata(entry: unknown): Record<string, string> {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
    throw new SafetensorsError(`${METADATA_KEY} must be an object of string values, found ${describe(entry)}`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
    if (typeof v !== 'string') throw new SafetensorsError(`${METADATA_KEY}.${k} must be a string, found ${describe(v)}`);
    out[k] = v;
  }
  return out;
}

const ENTRY_FIELDS = new Set(['dtype', 'shape', 'data_offsets']);

function parseEntry(name: string, entry: unknown): TensorInfo {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
    throw new SafetensorsError(`tensor ${name}: expected an object {dtype, shape, data_offsets}, found ${describe(entry)}`);
  }
  const e = entry as Record<string, unknown>;
  for (const k of Object.keys(e)) {
    if (!ENTRY_FIELDS.has(k)) throw new SafetensorsError(`tensor ${name}: unknown field ${JSON.stringify(k)}; expected only dtype, shape, data_offsets`);
  }
  const dtype = e['dtype'];
  if (!isSafetensorsDtype(dtype)) {
    throw new SafetensorsError(`tensor ${name}: dtype ${describe(dtype)} is not supported; expected one of ${SAFETENSORS_DTYPES.join(', ')}`);
  }
  const shape = e['shape'];
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
    throw new SafetensorsError(`tensor ${name}: shape ${describe(shape)} must be an array of non-negative integers`);
  }
  const offsets = e['data_offsets'];
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)) {
    throw new SafetensorsError(`tensor ${name}: data_offsets ${describe(offsets)} must be [begin, end], two non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) throw new SafetensorsError(`tensor ${name}: data_offsets [${begin}, ${end}] end before they begin`);
  const expected = elementCount(shape as number[]) * BigInt(DTYPE_BYTES[dtype]);
  if (BigInt(end - begin) !== expected) {
    throw new SafetensorsError(
      `tensor ${name}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape [${(shape as number[]).join(', ')}] of ${dtype} needs ${expected}`,
    );
  }
  return { name, dtype, shape: shape as number[], begin, end };
}

function describe(v: unknown): string {
  const s = JSON.stringify(v);
  if (s === undefined) return String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * JSON.parse keeps the last of two equal keys silently; a safetensors header with two tensors of one name is
 * broken, so the top-level keys are scanned directly. Returns the first repeated key, if any.
 */
export function firstDuplicateTopLevelKey(text: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      while (j < text.length && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c /* \ */ ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      depth++;
      expectKey = depth === 1;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    } else if (c === 0x2c /* , */ && depth === 1) {
      expectKey = true;
    }
  }
  return undefined;
}
