import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import sharp from 'sharp';
import { isAtomicTemp, writeFileAtomic, writeFailureAdvice } from '@m3ae/protocol';
import { resizeToRgb } from '../images/image.js';
import { readPairs, type PairSource } from '../readers/index.js';
import type { PairRecord } from '../readers/types.js';
import { SkipLog, type SkipLogJson } from '../skip-log.js';
import type { TextTokenizer } from '../tokenizer/load.js';
import {
  encodeShard,
  IMAGE_FORMATS,
  MAX_STORED_TOKENS,
  SHARD_FORMAT_VERSION,
  shardFileName,
  type DatasetManifest,
  type ShardHeader,
  type ShardImageFormat,
  type ShardInfo,
  type ShardSampleEntry,
} from './format.js';
import { keepTokenizerWithShards } from './shard-tokenizer.js';

export interface PrepareShardsOptions {
  source: PairSource;
  /** The source's root folder (roco, medpix), JSONL file or folder (medicat), or manifest file. */
  input: string;
  output: string;
  /** Passed to the reader (each reader has its default). */
  split?: string;
  /** @defaultValue 288 (M3AE's pre-training size) */
  imageSize?: number;
  /**
   * `raw` (default): the resized pixels as they are — lossless, and about 5× faster to read than JPEG, which
   * decides data-loader throughput; grey pictures (98% of MedPix) are stored with one channel, 83 KB at 288 px.
   * `jpeg`: quality 95, about 12× smaller than raw RGB (≈21 KB at 288 px), for corpora where disk matters.
   */
  imageFormat?: ShardImageFormat;
  /** Reader records per shard. @defaultValue 1000 */
  samplesPerShard?: number;
  /** When given, each sample also stores its token ids (without special tokens). */
  tokenizer?: TextTokenizer;
  /** Images decoded at once (sharp runs them on its thread pool). @defaultValue 2 × available cores */
  concurrency?: number;
  /** Minimum words per text, passed to the reader. @defaultValue the reader's (3) */
  minWords?: number;
  onProgress?: (p: PrepareProgress) => void;
  /** Stops starting new images; finished shards stay and a later run resumes after them. */
  signal?: AbortSignal;
}

export interface PrepareProgress {
  /** Records processed (including those in shards finished by an earlier run). */
  done: number;
  total: number;
  shardsDone: number;
  shardsTotal: number;
}

export interface PrepareResult {
  written: number;
  skipped: Record<string, number>;
  shards: number;
  /** Shards found finished from an interrupted earlier run and kept. */
  resumedShards: number;
  manifest: DatasetManifest;
}

interface IndexShard extends ShardInfo {
  skipped: SkipLogJson;
}

interface PrepareIndex {
  version: number;
  fingerprint: string;
  shards: Record<string, IndexShard>;
}

export class PrepareError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PrepareError';
  }
}

function sha256(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Writes one of the dataset's files atomically (`writeFileAtomic`); a failure names the file and the way on. */
async function writeAtomic(path: string, data: Uint8Array | string): Promise<void> {
  try {
    await writeFileAtomic(path, data);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    throw new PrepareError(`could not write ${path}: ${message}; ${writeFailureAdvice(e)} or choose another --output, then run the same command again: the shards already written are kept`);
  }
}

/** The content-defined dataset hash coordinator and workers compare. */
export function computeDatasetHash(m: Pick<DatasetManifest, 'version' | 'imageSize' | 'imageFormat' | 'tokenizer' | 'shards'>): string {
  return sha256(
    JSON.stringify({
      version: m.version,
      imageSize: m.imageSize,
      imageFormat: m.imageFormat,
      tokenizer: m.tokenizer?.hash ?? null,
      shards: m.shards.map((s) => [s.count, s.sha256]),
    }),
  );
}

function isGrey(rgb: Uint8Array): boolean {
  for (let i = 0; i < rgb.length; i += 3) if (rgb[i] !== rgb[i + 1] || rgb[i] !== rgb[i + 2]) return false;
  return true;
}

interface Processed {
  entry: Omit<ShardSampleEntry, 'offset' | 'length'>;
  image: Uint8Array;
}

/** The options that shape the shards, with their defaults, checked. */
interface ShardSettings {
  imageSize: number;
  imageFormat: ShardImageFormat;
  perShard: number;
  concurrency: number;
}

function shardSettings(options: PrepareShardsOptions): ShardSettings {
  const imageSize = options.imageSize ?? 288;
  const imageFormat = options.imageFormat ?? 'raw';
  const perShard = options.samplesPerShard ?? 1000;
  const concurrency = options.concurrency ?? Math.max(2, 2 * availableParallelism());
  if (!Number.isInteger(imageSize) || imageSize < 1 || imageSize > 8192) throw new RangeError(`imageSize must be an integer in 1..8192, got ${String(imageSize)}`);
  if (!(IMAGE_FORMATS as readonly string[]).includes(imageFormat)) throw new RangeError(`imageFormat must be one of ${IMAGE_FORMATS.join(', ')}, got ${JSON.stringify(imageFormat)}`);
  if (!Number.isInteger(perShard) || perShard < 1) throw new RangeError(`samplesPerShard must be a positive integer, got ${String(perShard)}`);
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be a positive integer, got ${String(concurrency)}`);
  return { imageSize, imageFormat, perShard, concurrency };
}

/** What makes a preparation the same one: a resumed run must match it. */
function preparationFingerprint(options: PrepareShardsOptions, input: string, settings: ShardSettings, records: readonly PairRecord[]): string {
  return sha256(
    JSON.stringify({
      v: SHARD_FORMAT_VERSION,
      source: options.source,
      input,
      split: options.split ?? null,
      imageSize: settings.imageSize,
      imageFormat: settings.imageFormat,
      perShard: settings.perShard,
      tokenizer: options.tokenizer?.hash ?? null,
      records: sha256(records.map((r) => `${r.id}\t${r.imagePath}\t${r.text}`).join('\n')),
    }),
  );
}

/** The shards an earlier run of the same preparation finished (file intact), as a fresh index holding them. */
async function finishedShards(output: string, indexPath: string, fingerprint: string): Promise<PrepareIndex> {
  const index: PrepareIndex = { version: SHARD_FORMAT_VERSION, fingerprint, shards: {} };
  let previous: PrepareIndex | undefined;
  try {
    previous = JSON.parse(await readFile(indexPath, 'utf8')) as PrepareIndex;
  } catch {
    previous = undefined;
  }
  if (previous && previous.fingerprint !== fingerprint) {
    throw new PrepareError(`${output} holds shards of a different preparation (other source, options or records); use an empty output folder`);
  }
  for (const [k, s] of Object.entries(previous?.shards ?? {})) {
    try {
      if (sha256(await readFile(join(output, s.file))) === s.sha256) index.shards[k] = s;
    } catch {
      // missing file: redo the shard
    }
  }
  return index;
}

/** One record as stored: the resized picture (one channel when grey; JPEG when asked), its text and token ids. */
async function encodeRecord(r: PairRecord, settings: ShardSettings, tokenizer: TextTokenizer | undefined, baseDir: string): Promise<Processed> {
  const { imageSize, imageFormat } = settings;
  const rgb = await resizeToRgb(r.imagePath, imageSize);
  const grey = isGrey(rgb.data);
  const channels: 1 | 3 = grey ? 1 : 3;
  let pixels = rgb.data;
  if (grey) {
    pixels = new Uint8Array(imageSize * imageSize);
    for (let p = 0; p < pixels.length; p++) pixels[p] = rgb.data[3 * p] as number;
  }
  const image =
    imageFormat === 'raw'
      ? pixels
      : new Uint8Array(
          await sharp(pixels, { raw: { width: imageSize, height: imageSize, channels } })
            .jpeg({ quality: 95, chromaSubsampling: '4:4:4' })
            .toBuffer(),
        );
  const tokens = tokenizer ? Array.from(tokenizer.encodeContent(r.text).subarray(0, MAX_STORED_TOKENS)) : undefined;
  const entry: Processed['entry'] = {
    id: r.id,
    text: r.text,
    source: r.source,
    file: relative(baseDir, r.provenance.file) || r.provenance.file,
    line: r.provenance.line,
    ...(tokens ? { tokens } : {}),
    channels,
  };
  return { entry, image };
}

/** Shard k's bytes from its records in order (undecodable ones left out). */
function encodeShardOf(k: number, results: readonly (Processed | undefined)[], settings: ShardSettings): { bytes: Buffer; count: number } {
  const samples: ShardSampleEntry[] = [];
  const images: Uint8Array[] = [];
  let offset = 0;
  for (const p of results) {
    if (!p) continue;
    samples.push({ ...p.entry, offset, length: p.image.length });
    images.push(p.image);
    offset += p.image.length;
  }
  const header: ShardHeader = { version: SHARD_FORMAT_VERSION, shard: k, imageSize: settings.imageSize, imageFormat: settings.imageFormat, samples };
  return { bytes: encodeShard(header, images), count: samples.length };
}

/** Runs `tasks` with at most `concurrency` in flight, starting none after `signal` aborts. */
async function runPool<T>(tasks: readonly T[], concurrency: number, run: (task: T) => Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < tasks.length && !signal?.aborted) await run(tasks[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, tasks.length)) }, lane));
}

/** dataset.json of the finished shards (with the tokenizer kept beside them), and skips.json. */
async function writeManifest(options: PrepareShardsOptions, input: string, output: string, settings: ShardSettings, index: PrepareIndex, shardCount: number, readerLog: SkipLog): Promise<DatasetManifest> {
  const skipLog = new SkipLog();
  skipLog.merge(readerLog);
  const shards: ShardInfo[] = [];
  for (let k = 0; k < shardCount; k++) {
    const s = index.shards[String(k)] as IndexShard;
    skipLog.merge(s.skipped);
    shards.push({ file: s.file, count: s.count, bytes: s.bytes, sha256: s.sha256 });
  }
  const count = shards.reduce((n, s) => n + s.count, 0);
  const kept = options.tokenizer ? await keepTokenizerWithShards(output, options.tokenizer) : undefined;
  const tokenizer = options.tokenizer ? { hash: options.tokenizer.hash, vocabSize: options.tokenizer.vocabSize, modelType: options.tokenizer.modelType, file: kept } : null;
  const base = { format: 'm3ae-shards' as const, version: SHARD_FORMAT_VERSION, imageSize: settings.imageSize, imageFormat: settings.imageFormat, tokenizer, shards };
  const manifest: DatasetManifest = {
    ...base,
    source: options.source,
    input,
    split: options.split ?? null,
    samplesPerShard: settings.perShard,
    count,
    skipped: skipLog.counts(),
    datasetHash: computeDatasetHash(base),
    createdAt: new Date().toISOString(),
  };
  await writeAtomic(join(output, 'skips.json'), JSON.stringify(skipLog.toJSON(), null, 1));
  await writeAtomic(join(output, 'dataset.json'), JSON.stringify(manifest, null, 2) + '\n');
  return manifest;
}

/**
 * Converts a source into checksummed shards (see format.ts) with a manifest. Resumable: shards are written
 * atomically and recorded in index.json; a second run with the same inputs keeps the finished ones (after
 * checking their hashes) and writes the rest. Images that fail to decode are skipped as `unreadable-image`.
 */
export async function prepareShards(options: PrepareShardsOptions): Promise<PrepareResult> {
  const settings = shardSettings(options);
  const perShard = settings.perShard;
  const input = resolve(options.input);
  const output = resolve(options.output);
  const baseDir = (await stat(input)).isDirectory() ? input : dirname(input);
  await mkdir(output, { recursive: true });
  // Temp files of a run that was killed mid-write: never part of the dataset.
  for (const name of await readdir(output)) if (isAtomicTemp(name)) await rm(join(output, name), { force: true });

  // 1. Read the source (fast: text files and stat calls), then partition into shards.
  const readerLog = new SkipLog();
  const records: PairRecord[] = [];
  for await (const r of readPairs(options.source, input, { skipLog: readerLog, split: options.split, minWords: options.minWords })) records.push(r);
  const shardCount = Math.ceil(records.length / perShard);

  // 2. Keep the shards an earlier run finished (same fingerprint, file intact).
  const indexPath = join(output, 'index.json');
  const index = await finishedShards(output, indexPath, preparationFingerprint(options, input, settings, records));
  const resumedShards = Object.keys(index.shards).length;
  const pending = Array.from({ length: shardCount }, (_, k) => k).filter((k) => index.shards[String(k)] === undefined);

  const total = records.length;
  const shardRecords = (k: number): number => Math.min(perShard, total - k * perShard);
  let done = 0;
  for (let k = 0; k < shardCount; k++) if (index.shards[String(k)]) done += shardRecords(k);
  let shardsDone = shardCount - pending.length;
  const progress = (): void => options.onProgress?.({ done, total, shardsDone, shardsTotal: shardCount });
  progress();

  // 3. Decode and resize with `concurrency` images in flight over all pending shards (sharp uses every core);
  //    a shard is written as soon as its last image is done.
  const slots = new Map<number, { results: (Processed | undefined)[]; left: number; log: SkipLog }>();
  for (const k of pending) {
    const n = shardRecords(k);
    slots.set(k, { results: new Array<Processed | undefined>(n), left: n, log: new SkipLog({ maxEntries: 100 }) });
  }
  let indexWrite = Promise.resolve();
  const finishShard = async (k: number): Promise<void> => {
    const slot = slots.get(k);
    if (!slot) return;
    const { bytes, count } = encodeShardOf(k, slot.results, settings);
    const file = shardFileName(k);
    await writeAtomic(join(output, file), bytes);
    slots.delete(k);
    index.shards[String(k)] = { file, count, bytes: bytes.length, sha256: sha256(bytes), skipped: slot.log.toJSON() };
    shardsDone++;
    indexWrite = indexWrite.then(() => writeAtomic(indexPath, JSON.stringify(index)));
    await indexWrite;
  };

  const processRecord = async ([k, i]: [number, number]): Promise<void> => {
    const r = records[k * perShard + i] as PairRecord;
    const slot = slots.get(k) as NonNullable<ReturnType<typeof slots.get>>;
    try {
      slot.results[i] = await encodeRecord(r, settings, options.tokenizer, baseDir);
    } catch (e) {
      slot.log.skip('unreadable-image', r.imagePath, r.provenance.line, `${r.id}: ${(e as Error).message}`);
    }
    done++;
    slot.left--;
    if (slot.left === 0) await finishShard(k);
    progress();
  };

  const tasks: [number, number][] = [];
  for (const k of pending) for (let i = 0; i < (slots.get(k)?.results.length ?? 0); i++) tasks.push([k, i]);
  // A shard whose images all fail is still written (empty) when its last record is done.
  await runPool(tasks, settings.concurrency, processRecord, options.signal);
  await indexWrite;
  if (options.signal?.aborted) {
    throw new PrepareError(`prepare was interrupted: ${shardsDone} of ${shardCount} shards are finished in ${output}; run the same command again to resume`);
  }

  // 4. The manifest, written last: its presence means the dataset is complete.
  const manifest = await writeManifest(options, input, output, settings, index, shardCount, readerLog);
  return { written: manifest.count, skipped: manifest.skipped, shards: shardCount, resumedShards, manifest };
}
