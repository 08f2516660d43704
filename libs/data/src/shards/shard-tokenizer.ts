import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '@m3ae/protocol';
import { join, resolve } from 'node:path';
import type { TextTokenizer } from '../tokenizer/load.js';
import { ShardFormatError, type DatasetManifest } from './format.js';

/**
 * A dataset carries what it was made with: `prepareShards` with a tokenizer copies its tokenizer.json into the
 * shard folder under this name and records it in dataset.json (`tokenizer.file`, with the file's SHA-256), so a
 * run given only the shards (`m3ae train --data SHARDS`) finds the vocabulary its token ids came from.
 */
export const SHARD_TOKENIZER_FILE = 'tokenizer.json';

/** Copies the tokenizer's file into `output` (atomically; nothing to do when it is that file already). */
export async function keepTokenizerWithShards(output: string, tokenizer: Pick<TextTokenizer, 'path'>): Promise<string> {
  const target = join(output, SHARD_TOKENIZER_FILE);
  if (resolve(tokenizer.path) === resolve(target)) return SHARD_TOKENIZER_FILE;
  await writeFileAtomic(target, await readFile(tokenizer.path));
  return SHARD_TOKENIZER_FILE;
}

/**
 * The tokenizer.json a shard dataset was prepared with, kept beside its shards: its path, after checking the
 * file against the SHA-256 dataset.json records. `undefined` when the dataset was prepared without a tokenizer
 * (and none lies beside it). Datasets prepared before the tokenizer was kept (no `tokenizer.file`) are served
 * a `tokenizer.json` found beside them if its hash is the recorded one.
 */
export function shardTokenizer(dir: string): string | undefined {
  const manifestPath = join(resolve(dir), 'dataset.json');
  let manifest: Pick<DatasetManifest, 'tokenizer'>;
  try {
    manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as DatasetManifest;
  } catch (e) {
    throw new ShardFormatError(`${manifestPath}: not readable (${(e as Error).message}); expected a folder written by m3ae prepare`);
  }
  const recorded = manifest.tokenizer;
  const path = join(resolve(dir), recorded?.file ?? SHARD_TOKENIZER_FILE);
  if (!existsSync(path)) {
    if (recorded?.file) throw new ShardFormatError(`${path}: missing; ${manifestPath} records it as the tokenizer the dataset was prepared with`);
    return undefined;
  }
  if (recorded) {
    const hash = createHash('sha256').update(readFileSync(path)).digest('hex');
    if (hash !== recorded.hash) throw new ShardFormatError(`${path}: SHA-256 ${hash} is not the tokenizer ${manifestPath} was prepared with (${recorded.hash})`);
  }
  return path;
}
