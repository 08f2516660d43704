import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { SHARD_MAGIC, ShardFormatError, type DatasetManifest, type ShardHeader, type ShardSampleEntry } from './format.js';
import { computeDatasetHash } from './writer.js';

/** One sample's text side: what `pretrainCounts` needs, without touching image bytes. */
export interface ShardRecord {
  index: number;
  id: string;
  text: string;
  source: string;
  provenance: { file: string; line: number };
  /** Token ids without special tokens, when the dataset was prepared with a tokenizer. */
  tokens: Int32Array | undefined;
}

export interface ShardSample extends ShardRecord {
  /** The prepared size×size picture as interleaved RGB (HWC) uint8. */
  image: { data: Uint8Array; width: number; height: number };
}

/** A sample's picture as stored: size×size pixels, HWC, 1 channel (exactly grey) or 3. */
export interface ShardPixels {
  data: Uint8Array;
  channels: 1 | 3;
  size: number;
}

export interface OpenShardDatasetOptions {
  /**
   * `lazy` (default): a shard's SHA-256 is checked the first time this process opens it, before any of its
   * samples is returned. `eager`: every shard is checked by `openShardDataset`. `none`: never (benchmarks only).
   */
  verify?: 'lazy' | 'eager' | 'none';
  /** Shards kept open (file handle + parsed header). @defaultValue 8 */
  maxOpenShards?: number;
}

export interface ShardDataset {
  readonly dir: string;
  readonly size: number;
  readonly datasetHash: string;
  readonly imageSize: number;
  readonly manifest: DatasetManifest;
  /** The sample at a global index (0 ≤ index < size): text, provenance, tokens and the RGB picture. */
  get(index: number): Promise<ShardSample>;
  /** The picture as stored (grey pictures keep one channel): what batch building normalises from. */
  getPixels(index: number): Promise<ShardPixels>;
  /** The text side of a sample only (no image read). */
  getRecord(index: number): Promise<ShardRecord>;
  close(): Promise<void>;
}

interface OpenShard {
  fh: FileHandle;
  header: ShardHeader;
  dataStart: number;
  /** Reads in flight; an evicted shard is closed when the last one ends. */
  users: number;
  evicted: boolean;
}

async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

function expandGrey(grey: Uint8Array): Uint8Array {
  const rgb = new Uint8Array(grey.length * 3);
  for (let p = 0, i = 0; p < grey.length; p++, i += 3) {
    const v = grey[p] as number;
    rgb[i] = v;
    rgb[i + 1] = v;
    rgb[i + 2] = v;
  }
  return rgb;
}

class Dataset implements ShardDataset {
  readonly size: number;
  readonly datasetHash: string;
  readonly imageSize: number;
  /** starts[k] = global index of shard k's first sample; starts[S] = size. */
  private readonly starts: number[];
  private readonly openShards = new Map<number, Promise<OpenShard>>();
  private readonly verified = new Set<number>();

  constructor(
    readonly dir: string,
    readonly manifest: DatasetManifest,
    private readonly verify: 'lazy' | 'eager' | 'none',
    private readonly maxOpen: number,
  ) {
    this.size = manifest.count;
    this.datasetHash = manifest.datasetHash;
    this.imageSize = manifest.imageSize;
    this.starts = [0];
    for (const s of manifest.shards) this.starts.push((this.starts[this.starts.length - 1] as number) + s.count);
  }

  async verifyAll(): Promise<void> {
    for (let k = 0; k < this.manifest.shards.length; k++) await this.verifyShard(k);
  }

  private async verifyShard(k: number): Promise<void> {
    if (this.verified.has(k)) return;
    const info = this.manifest.shards[k];
    if (!info) throw new ShardFormatError(`shard ${k} is not in ${this.dir}/dataset.json`);
    const actual = await hashFile(join(this.dir, info.file));
    if (actual !== info.sha256) throw new ShardFormatError(`${join(this.dir, info.file)}: SHA-256 ${actual} does not match dataset.json (${info.sha256}); the shard is corrupt, prepare it again`);
    this.verified.add(k);
  }

  private locate(index: number): [number, number] {
    if (!Number.isInteger(index) || index < 0 || index >= this.size) {
      throw new RangeError(`index must be an integer in [0, ${this.size}), got ${String(index)}`);
    }
    let lo = 0;
    let hi = this.starts.length - 2;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.starts[mid] as number) <= index) lo = mid;
      else hi = mid - 1;
    }
    return [lo, index - (this.starts[lo] as number)];
  }

  private shard(k: number): Promise<OpenShard> {
    let p = this.openShards.get(k);
    if (p) {
      // LRU: re-insert as most recent.
      this.openShards.delete(k);
      this.openShards.set(k, p);
      return p;
    }
    p = this.openShard(k);
    this.openShards.set(k, p);
    p.catch(() => this.openShards.delete(k));
    while (this.openShards.size > this.maxOpen) {
      const [oldest, op] = this.openShards.entries().next().value as [number, Promise<OpenShard>];
      this.openShards.delete(oldest);
      void op
        .then((o) => {
          o.evicted = true;
          if (o.users === 0) return o.fh.close();
          return undefined;
        })
        .catch(() => undefined);
    }
    return p;
  }

  private async openShard(k: number): Promise<OpenShard> {
    const info = this.manifest.shards[k] as DatasetManifest['shards'][number];
    const path = join(this.dir, info.file);
    if (this.verify === 'lazy') await this.verifyShard(k);
    const fh = await open(path, 'r');
    try {
      const head = Buffer.alloc(12);
      await fh.read(head, 0, 12, 0);
      if (head.toString('latin1', 0, 8) !== SHARD_MAGIC) throw new ShardFormatError(`${path}: not a shard (magic ${JSON.stringify(head.toString('latin1', 0, 8))}, expected ${SHARD_MAGIC})`);
      const length = head.readUInt32LE(8);
      const json = Buffer.alloc(length);
      await fh.read(json, 0, length, 12);
      const header = JSON.parse(json.toString('utf8')) as ShardHeader;
      if (header.samples.length !== info.count) throw new ShardFormatError(`${path}: holds ${header.samples.length} samples, dataset.json says ${info.count}`);
      return { fh, header, dataStart: 12 + length, users: 0, evicted: false };
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  private record(index: number, e: ShardSampleEntry): ShardRecord {
    return {
      index,
      id: e.id,
      text: e.text,
      source: e.source,
      provenance: { file: e.file, line: e.line },
      tokens: e.tokens ? Int32Array.from(e.tokens) : undefined,
    };
  }

  async getRecord(index: number): Promise<ShardRecord> {
    const [k, i] = this.locate(index);
    const s = await this.shard(k);
    return this.record(index, s.header.samples[i] as ShardSampleEntry);
  }

  async get(index: number): Promise<ShardSample> {
    const [record, pixels] = await Promise.all([this.getRecord(index), this.getPixels(index)]);
    const n = pixels.size;
    return { ...record, image: { data: pixels.channels === 1 ? expandGrey(pixels.data) : pixels.data, width: n, height: n } };
  }

  async getPixels(index: number): Promise<ShardPixels> {
    const [k, i] = this.locate(index);
    let s = await this.shard(k);
    while (s.evicted) s = await this.shard(k); // evicted (and maybe closed) while we waited: reopen
    const e = s.header.samples[i] as ShardSampleEntry;
    const bytes = new Uint8Array(e.length);
    s.users++;
    let bytesRead: number;
    try {
      ({ bytesRead } = await s.fh.read(bytes, 0, e.length, s.dataStart + e.offset));
    } finally {
      s.users--;
      if (s.evicted && s.users === 0) void s.fh.close().catch(() => undefined);
    }
    const file = this.manifest.shards[k]?.file;
    if (bytesRead !== e.length) throw new ShardFormatError(`${file}: sample ${i} is cut short (${bytesRead} of ${e.length} bytes)`);
    const n = this.imageSize;
    let data = bytes;
    let channels = e.channels;
    if (s.header.imageFormat === 'jpeg') {
      const decoded = await sharp(bytes).raw().toBuffer({ resolveWithObject: true });
      data = new Uint8Array(decoded.data.buffer, decoded.data.byteOffset, decoded.data.length);
      if (decoded.info.channels !== 1 && decoded.info.channels !== 3) throw new ShardFormatError(`${file}: sample ${i} decodes to ${decoded.info.channels} channels`);
      channels = decoded.info.channels;
    }
    if (data.length !== n * n * channels) throw new ShardFormatError(`${file}: sample ${i} has ${data.length} bytes, expected ${n * n * channels}`);
    return { data, channels, size: n };
  }

  async close(): Promise<void> {
    const all = [...this.openShards.values()];
    this.openShards.clear();
    for (const p of all) {
      try {
        await (await p).fh.close();
      } catch {
        // already closed or failed to open
      }
    }
  }
}

/**
 * Opens a prepared dataset for random access by global index: dataset.json gives the shard boundaries;
 * shards are opened on first use (file handle + header, small LRU) and read by byte range.
 */
export async function openShardDataset(dir: string, options: OpenShardDatasetOptions = {}): Promise<ShardDataset> {
  const root = resolve(dir);
  const manifestPath = join(root, 'dataset.json');
  let manifest: DatasetManifest;
  try {
    manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as DatasetManifest;
  } catch (e) {
    throw new ShardFormatError(`${manifestPath}: not readable (${(e as Error).message}); expected a folder written by m3ae prepare`);
  }
  if (manifest.format !== 'm3ae-shards') throw new ShardFormatError(`${manifestPath}: format is ${JSON.stringify(manifest.format)}, expected "m3ae-shards"`);
  const hash = computeDatasetHash(manifest);
  if (hash !== manifest.datasetHash) throw new ShardFormatError(`${manifestPath}: datasetHash ${manifest.datasetHash} does not match its shard list (${hash})`);
  const maxOpen = options.maxOpenShards ?? 8;
  if (!Number.isInteger(maxOpen) || maxOpen < 1) throw new RangeError(`maxOpenShards must be a positive integer, got ${String(maxOpen)}`);
  const ds = new Dataset(root, manifest, options.verify ?? 'lazy', maxOpen);
  if (options.verify === 'eager') await ds.verifyAll();
  return ds;
}
