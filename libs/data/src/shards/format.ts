/**
 * The on-disk shard format (version 1).
 *
 * A prepared dataset is a folder:
 * - `shard-00000.m3s`, `shard-00001.m3s`, …: shard k holds the records [k·S, (k+1)·S) of the reader's output
 *   (S = samplesPerShard) minus those whose image could not be decoded.
 * - `index.json`: the preparation's progress (finished shards with hash, count and skips), for resuming.
 * - `dataset.json`: the manifest coordinator and workers compare (`DatasetManifest`), written last.
 * - `skips.json`: the skip log (counts, and the first entries with file, line and detail).
 *
 * A shard file is:
 *   bytes 0–7    magic `M3AESHD1`
 *   bytes 8–11   uint32 LE: length H of the header
 *   bytes 12…    header: UTF-8 JSON `ShardHeader`
 *   then         the image data; sample i's bytes are [dataStart + offset_i, dataStart + offset_i + length_i)
 * Images are the resized size×size pictures, either `raw` (uint8 pixels, HWC, 1 channel when the picture is
 * exactly grey, else 3) or `jpeg` (quality 95, 4:4:4, 1 or 3 channels likewise).
 */
export const SHARD_MAGIC = 'M3AESHD1';
export const SHARD_FORMAT_VERSION = 1;
export const IMAGE_FORMATS = ['raw', 'jpeg'] as const;
export type ShardImageFormat = (typeof IMAGE_FORMATS)[number];

export interface ShardSampleEntry {
  id: string;
  text: string;
  source: string;
  /** The annotation file, relative to the prepared input's folder (so the hash does not depend on mount points). */
  file: string;
  line: number;
  /** Token ids of the text without special tokens (at most MAX_STORED_TOKENS), when prepared with a tokenizer. */
  tokens?: number[];
  offset: number;
  length: number;
  channels: 1 | 3;
}

export interface ShardHeader {
  version: number;
  shard: number;
  imageSize: number;
  imageFormat: ShardImageFormat;
  samples: ShardSampleEntry[];
}

export interface ShardInfo {
  file: string;
  count: number;
  bytes: number;
  sha256: string;
}

export interface DatasetManifest {
  format: 'm3ae-shards';
  version: number;
  source: string;
  /** The input as given to prepare (absolute). Not part of the hash. */
  input: string;
  split: string | null;
  imageSize: number;
  imageFormat: ShardImageFormat;
  samplesPerShard: number;
  count: number;
  skipped: Record<string, number>;
  /**
   * The tokenizer the token ids came from: the SHA-256 of its file, and `file`, its copy in the shard folder
   * (`shardTokenizer(dir)`; absent in datasets prepared before the copy was kept). Not part of the hash but `hash`.
   */
  tokenizer: { hash: string; vocabSize: number; modelType: string; file?: string } | null;
  shards: ShardInfo[];
  /** SHA-256 over the content (format version, image size and format, tokenizer hash, each shard's count and hash). */
  datasetHash: string;
  createdAt: string;
}

/** Stored token ids are capped: far above any max text length, and the header stays small. */
export const MAX_STORED_TOKENS = 512;

export function shardFileName(k: number): string {
  return `shard-${String(k).padStart(5, '0')}.m3s`;
}

export class ShardFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ShardFormatError';
  }
}

export function encodeShard(header: ShardHeader, images: readonly Uint8Array[]): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const dataLength = images.reduce((n, b) => n + b.length, 0);
  const out = Buffer.allocUnsafe(12 + json.length + dataLength);
  out.write(SHARD_MAGIC, 0, 'latin1');
  out.writeUInt32LE(json.length, 8);
  json.copy(out, 12);
  let p = 12 + json.length;
  for (const img of images) {
    out.set(img, p);
    p += img.length;
  }
  return out;
}
