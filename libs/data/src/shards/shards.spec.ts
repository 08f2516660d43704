import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resizeToRgb } from '../images/image.js';
import type { PairManifestLine } from '../readers/manifest.js';
import { medpixDevManifestLines, sharedDataForTests } from '../shared-data.js';
import { loadTokenizer } from '../tokenizer/load.js';
import { trainTokenizer } from '../tokenizer/train.js';
import type { DatasetManifest } from './format.js';
import { openShardDataset } from './reader.js';
import { PrepareError, prepareShards } from './writer.js';

const data = sharedDataForTests(resolve(import.meta.dirname, '../../../..'), 'shard tests');
const work = mkdtempSync(join(tmpdir(), 'm3ae-shards-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe.skipIf(!data)('shards from real MedPix images', () => {
  const lines: PairManifestLine[] = [];
  const manifest = join(work, 'corpus.jsonl');

  beforeAll(() => {
    const d = data as string;
    lines.push(...medpixDevManifestLines(d, 20, (caption, image) => `${caption} (case ${image})`));
    // Hostile inputs between real ones: a truncated JPEG, a text file named .jpg, a missing file.
    const real = readFileSync(lines[0]?.image as string);
    writeFileSync(join(work, 'truncated.jpg'), real.subarray(0, Math.floor(real.length / 3)));
    writeFileSync(join(work, 'not-an-image.jpg'), 'hello, this is text');
    lines.splice(3, 0, { id: 'cut', image: join(work, 'truncated.jpg'), text: 'a truncated axial image of the chest' });
    lines.splice(8, 0, { id: 'text', image: join(work, 'not-an-image.jpg'), text: 'a text file pretending to be an image' });
    lines.splice(12, 0, { id: 'gone', image: join(work, 'missing.jpg'), text: 'an image that does not exist at all' });
    writeFileSync(manifest, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  });

  it('writes checksummed shards whose pixels equal a direct resize, and skips bad images', async () => {
    const out = join(work, 'raw');
    const progress: number[] = [];
    const r = await prepareShards({ source: 'manifest', input: manifest, output: out, imageSize: 32, samplesPerShard: 5, onProgress: (p) => progress.push(p.done) });
    expect(r.written).toBe(20);
    expect(r.skipped).toEqual({ 'missing-image': 1, 'unreadable-image': 2 });
    expect(r.shards).toBe(5); // 22 records that passed the reader, 5 per shard
    expect(progress[progress.length - 1]).toBe(22);
    const files = readdirSync(out).sort();
    expect(files).toEqual(['dataset.json', 'index.json', 'shard-00000.m3s', 'shard-00001.m3s', 'shard-00002.m3s', 'shard-00003.m3s', 'shard-00004.m3s', 'skips.json']);
    const m = JSON.parse(readFileSync(join(out, 'dataset.json'), 'utf8')) as DatasetManifest;
    expect(m.count).toBe(20);
    expect(m.shards.map((s) => s.count)).toEqual([4, 4, 5, 5, 2]); // the two undecodable images fall in shards 0 and 1
    expect(m.datasetHash).toMatch(/^[0-9a-f]{64}$/);
    const skips = JSON.parse(readFileSync(join(out, 'skips.json'), 'utf8')) as { entries: { reason: string; file: string }[] };
    expect(skips.entries.map((e) => e.reason).sort()).toEqual(['missing-image', 'unreadable-image', 'unreadable-image']);

    const ds = await openShardDataset(out);
    expect(ds.size).toBe(20);
    expect(ds.datasetHash).toBe(m.datasetHash);
    const good = lines.filter((l) => !['cut', 'text', 'gone'].includes(l.id));
    for (const i of [0, 3, 7, 19, 12]) {
      const s = await ds.get(i);
      const want = good[i] as PairManifestLine;
      expect(s.id).toBe(want.id);
      expect(s.text).toBe(want.text.trim().replace(/\s+/g, ' ')); // the reader collapses whitespace
      expect(s.provenance).toEqual({ file: 'corpus.jsonl', line: lines.indexOf(want) + 1 });
      expect(s.image.width).toBe(32);
      const direct = await resizeToRgb(want.image, 32);
      expect(Buffer.from(s.image.data).equals(Buffer.from(direct.data))).toBe(true); // raw storage is lossless
    }
    await expect(ds.get(20)).rejects.toThrow(/index must be an integer in \[0, 20\), got 20/);
    await ds.close();
  });

  it('stores JPEG when asked: smaller, and close to the raw pixels', async () => {
    const out = join(work, 'jpeg');
    const r = await prepareShards({ source: 'manifest', input: manifest, output: out, imageSize: 64, imageFormat: 'jpeg', samplesPerShard: 100 });
    const raw = await prepareShards({ source: 'manifest', input: manifest, output: join(work, 'raw64'), imageSize: 64, samplesPerShard: 100 });
    expect(r.manifest.shards[0]?.bytes).toBeLessThan(raw.manifest.shards[0]?.bytes ?? 0);
    expect(r.manifest.datasetHash).not.toBe(raw.manifest.datasetHash);
    const a = await openShardDataset(out);
    const b = await openShardDataset(join(work, 'raw64'));
    for (let i = 0; i < 20; i += 6) {
      const x = (await a.get(i)).image.data;
      const y = (await b.get(i)).image.data;
      let diff = 0;
      for (let p = 0; p < x.length; p++) diff += Math.abs((x[p] as number) - (y[p] as number));
      expect(diff / x.length).toBeLessThan(3);
    }
    await a.close();
    await b.close();
  });

  it('resumes after an interruption without redoing finished shards, to the same dataset hash', async () => {
    const clean = await prepareShards({ source: 'manifest', input: manifest, output: join(work, 'clean'), imageSize: 32, samplesPerShard: 5, concurrency: 2 });
    const out = join(work, 'resumed');
    const ac = new AbortController();
    await expect(
      prepareShards({
        source: 'manifest',
        input: manifest,
        output: out,
        imageSize: 32,
        samplesPerShard: 5,
        concurrency: 1,
        signal: ac.signal,
        onProgress: (p) => {
          if (p.shardsDone >= 2) ac.abort();
        },
      }),
    ).rejects.toThrow(PrepareError);
    expect(existsSync(join(out, 'dataset.json'))).toBe(false);
    const index = JSON.parse(readFileSync(join(out, 'index.json'), 'utf8')) as { shards: Record<string, unknown> };
    expect(Object.keys(index.shards).sort()).toEqual(['0', '1']);
    const firstShard = readFileSync(join(out, 'shard-00000.m3s'));
    // Damage shard 1: it must be redone, shard 0 kept.
    writeFileSync(join(out, 'shard-00001.m3s'), 'garbage');
    const r = await prepareShards({ source: 'manifest', input: manifest, output: out, imageSize: 32, samplesPerShard: 5 });
    expect(r.resumedShards).toBe(1);
    expect(r.written).toBe(20);
    expect(r.skipped).toEqual(clean.skipped);
    expect(r.manifest.datasetHash).toBe(clean.manifest.datasetHash);
    expect(readFileSync(join(out, 'shard-00000.m3s')).equals(firstShard)).toBe(true);
    // A different preparation into the same folder is refused.
    await expect(prepareShards({ source: 'manifest', input: manifest, output: out, imageSize: 48, samplesPerShard: 5 })).rejects.toThrow(
      /holds shards of a different preparation/,
    );
  });

  it('a shard that cannot be written stops the preparation naming the file and the way on; running it again resumes', async () => {
    const out = join(work, 'blocked');
    // A directory where shard 1 should go: its rename fails, as a full disk would fail its write.
    mkdirSync(join(out, 'shard-00001.m3s'), { recursive: true });
    const err = await prepareShards({ source: 'manifest', input: manifest, output: out, imageSize: 32, samplesPerShard: 5, concurrency: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PrepareError);
    expect((err as Error).message).toMatch(/^could not write .*shard-00001\.m3s: .*; check the directory or choose another --output, then run the same command again: the shards already written are kept$/);
    expect(readdirSync(out).filter((n) => n.includes('.tmp-'))).toEqual([]);
    rmSync(join(out, 'shard-00001.m3s'), { recursive: true });
    const r = await prepareShards({ source: 'manifest', input: manifest, output: out, imageSize: 32, samplesPerShard: 5 });
    expect(r.resumedShards).toBeGreaterThanOrEqual(1);
    expect(r.written).toBe(20);
  });

  it('detects a corrupt shard: lazily on first use, or at open with verify eager', async () => {
    const out = join(work, 'corrupt');
    await prepareShards({ source: 'manifest', input: manifest, output: out, imageSize: 32, samplesPerShard: 5 });
    const path = join(out, 'shard-00002.m3s');
    const bytes = readFileSync(path);
    bytes[bytes.length - 10] = (bytes[bytes.length - 10] as number) ^ 0xff;
    writeFileSync(path, bytes);
    const ds = await openShardDataset(out);
    await expect(ds.get(0)).resolves.toBeDefined(); // shard 0 is fine
    await expect(ds.get(10)).rejects.toThrow(/shard-00002\.m3s: SHA-256 [0-9a-f]+ does not match dataset\.json/);
    await ds.close();
    await expect(openShardDataset(out, { verify: 'eager' })).rejects.toThrow(/does not match dataset\.json/);
    await expect(openShardDataset(join(work, 'nowhere'))).rejects.toThrow(/dataset\.json: not readable .* expected a folder written by m3ae prepare/);
  });

  it('prepares the MedPix source itself with token ids, and reads with a tiny LRU', async () => {
    const d = data as string;
    const tokFile = join(work, 'tok.json');
    await trainTokenizer({ sources: [{ kind: 'medpix', path: join(d, 'medpix2') }], vocabSize: 600, output: tokFile, agreementSamples: 20 });
    const tokenizer = await loadTokenizer(tokFile);
    const out = join(work, 'medpix');
    const r = await prepareShards({ source: 'medpix', input: join(d, 'medpix2'), split: 'dev', output: out, imageSize: 24, samplesPerShard: 64, tokenizer });
    expect(r.written).toBeGreaterThan(150);
    expect(r.manifest.tokenizer).toEqual({ hash: tokenizer.hash, vocabSize: 600, modelType: 'BPE', file: 'tokenizer.json' });
    const ds = await openShardDataset(out, { maxOpenShards: 1 });
    // Alternate between shards so the single open slot is evicted on every call.
    for (const i of [0, r.written - 1, 70, 1, 140, 2]) {
      const s = await ds.get(i);
      expect(Array.from(s.tokens ?? [])).toEqual(Array.from(tokenizer.encodeContent(s.text)));
      expect(s.source).toBe('medpix');
      expect(s.provenance.file).toBe('descriptions_dev.jsonl');
    }
    const all = await Promise.all(Array.from({ length: 40 }, (_, k) => ds.get((k * 37) % r.written)));
    expect(all.every((s) => s.image.data.length === 24 * 24 * 3)).toBe(true);
    await ds.close();
  });
});
