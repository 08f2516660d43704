import { mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writePhantomCorpus } from '../synth/corpus.js';
import { loadTokenizer, type TextTokenizer } from '../tokenizer/load.js';
import { trainTokenizer } from '../tokenizer/train.js';
import type { DatasetManifest } from './format.js';
import { openShardDataset } from './reader.js';
import { SHARD_TOKENIZER_FILE, shardTokenizer } from './shard-tokenizer.js';
import { prepareShards } from './writer.js';

describe('a dataset carries the tokenizer it was prepared with', () => {
  let work: string;
  let manifest: string;
  let tokenizer: TextTokenizer;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'm3ae-shard-tok-'));
    manifest = (await writePhantomCorpus({ output: join(work, 'corpus'), count: 6, seed: 3, size: 32 })).manifest;
    const captions = (await readFile(manifest, 'utf8')).split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { text: string }).text);
    await writeFile(join(work, 'captions.txt'), captions.join('\n') + '\n');
    await trainTokenizer({ sources: [{ kind: 'text', path: join(work, 'captions.txt') }], vocabSize: 300, output: join(work, 'vocab', 'tokenizer.json'), agreementSamples: 5 });
    tokenizer = await loadTokenizer(join(work, 'vocab', 'tokenizer.json'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('prepare copies tokenizer.json beside the shards and records it; shardTokenizer finds and checks it', async () => {
    const out = join(work, 'shards');
    const r = await prepareShards({ source: 'manifest', input: manifest, output: out, imageSize: 32, tokenizer });
    expect(r.manifest.tokenizer).toEqual({ hash: tokenizer.hash, vocabSize: tokenizer.vocabSize, modelType: 'BPE', file: SHARD_TOKENIZER_FILE });
    const onDisk = JSON.parse(await readFile(join(out, 'dataset.json'), 'utf8')) as DatasetManifest;
    expect(onDisk.tokenizer?.file).toBe('tokenizer.json');
    const path = shardTokenizer(out);
    expect(path).toBe(join(out, 'tokenizer.json'));
    expect((await readFile(path as string)).equals(await readFile(tokenizer.path))).toBe(true);
    // The kept copy is the same vocabulary: the stored token ids decode with it.
    const kept = await loadTokenizer(path as string);
    expect(kept.hash).toBe(tokenizer.hash);
    const ds = await openShardDataset(out);
    const s = await ds.get(0);
    expect(Array.from(s.tokens ?? [])).toEqual(Array.from(kept.encodeContent(s.text)));
    await ds.close();
    // Preparing again (resume) keeps the same files and dataset hash.
    const again = await prepareShards({ source: 'manifest', input: manifest, output: out, imageSize: 32, tokenizer });
    expect(again.manifest.datasetHash).toBe(r.manifest.datasetHash);
    // A replaced vocabulary is refused, naming both hashes; a lost one is named too.
    await writeFile(path as string, (await readFile(path as string, 'utf8')).replace('"<mask>"', '"<masq>"'));
    expect(() => shardTokenizer(out)).toThrow(/tokenizer\.json: SHA-256 [0-9a-f]{64} is not the tokenizer .*dataset\.json was prepared with/);
    await unlink(path as string);
    expect(() => shardTokenizer(out)).toThrow(/tokenizer\.json: missing; .*dataset\.json records it/);
  });

  it('serves older datasets (hash recorded, no file) from a tokenizer.json beside them, and none when prepared without one', async () => {
    const out = join(work, 'old');
    const r = await prepareShards({ source: 'manifest', input: manifest, output: out, imageSize: 32, tokenizer });
    const { file: _file, ...old } = r.manifest.tokenizer as NonNullable<DatasetManifest['tokenizer']>;
    await writeFile(join(out, 'dataset.json'), JSON.stringify({ ...r.manifest, tokenizer: old }, null, 2) + '\n');
    expect(shardTokenizer(out)).toBe(join(out, 'tokenizer.json'));
    await unlink(join(out, 'tokenizer.json'));
    expect(shardTokenizer(out)).toBeUndefined();

    const bare = join(work, 'bare');
    const b = await prepareShards({ source: 'manifest', input: manifest, output: bare, imageSize: 32 });
    expect(b.manifest.tokenizer).toBeNull();
    expect(shardTokenizer(bare)).toBeUndefined();
    expect(() => shardTokenizer(join(work, 'nowhere'))).toThrow(/dataset\.json: not readable .*expected a folder written by m3ae prepare/);
  });

  it('keeps the tokenizer in place when it already lies in the shard folder', async () => {
    const out = join(work, 'inplace');
    await prepareShards({ source: 'manifest', input: manifest, output: out, imageSize: 32 });
    await writeFile(join(out, 'tokenizer.json'), await readFile(tokenizer.path));
    const local = await loadTokenizer(join(out, 'tokenizer.json'));
    await rm(join(out, 'index.json'));
    await rm(join(out, 'dataset.json'));
    const r = await prepareShards({ source: 'manifest', input: manifest, output: out, imageSize: 32, tokenizer: local });
    expect(r.manifest.tokenizer?.file).toBe('tokenizer.json');
    expect(shardTokenizer(out)).toBe(join(out, 'tokenizer.json'));
  });
});
