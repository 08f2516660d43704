import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildPretrainBatch, itmNegativeIndex, itmPositives, maskedPatchCount, pretrainCounts, type PretrainBatch, type PretrainBatchOptions } from './batch.js';
import { normalizeRgb } from './images/normalize.js';
import { EpochSampler } from './sampler.js';
import { openShardDataset, type ShardDataset } from './shards/reader.js';
import { prepareShards } from './shards/writer.js';
import { medpixDevManifestLines, sharedDataForTests } from './shared-data.js';
import { loadTokenizer, type TextTokenizer } from './tokenizer/load.js';
import { trainTokenizer } from './tokenizer/train.js';

const data = sharedDataForTests(resolve(import.meta.dirname, '../../..'), 'batch tests');
const work = mkdtempSync(join(tmpdir(), 'm3ae-batch-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const ARRAYS = ['pixelValues', 'inputIds', 'attentionMask', 'mlmInputIds', 'mlmLabels', 'mimNoise', 'itmPixelValues', 'itmLabels', 'dropoutSeeds'] as const;

function concat(parts: PretrainBatch[]): PretrainBatch {
  const first = parts[0] as PretrainBatch;
  const out = { ...first, batchSize: parts.reduce((n, p) => n + p.batchSize, 0) } as PretrainBatch;
  for (const k of ARRAYS) {
    const total = parts.reduce((n, p) => n + p[k].length, 0);
    const arr = new (first[k].constructor as new (n: number) => PretrainBatch[typeof k])(total);
    let o = 0;
    for (const p of parts) {
      arr.set(p[k] as never, o);
      o += p[k].length;
    }
    (out as unknown as Record<string, unknown>)[k] = arr;
  }
  return out;
}

function bytes(a: ArrayBufferView): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

describe.skipIf(!data)('buildPretrainBatch on shards of real MedPix pairs', () => {
  let ds: ShardDataset;
  let plain: ShardDataset; // the same pairs prepared without token ids
  let tokenizer: TextTokenizer;
  const H = 32;
  const N = 16; // 32 px / patch 8
  const G = 8;

  beforeAll(async () => {
    const d = data as string;
    const manifest = join(work, 'pairs.jsonl');
    writeFileSync(manifest, medpixDevManifestLines(d, 24).map((l) => JSON.stringify(l)).join('\n'));
    await trainTokenizer({ sources: [{ kind: 'medpix', path: join(d, 'medpix2') }], vocabSize: 500, output: join(work, 'tok.json'), agreementSamples: 10 });
    tokenizer = await loadTokenizer(join(work, 'tok.json'));
    await prepareShards({ source: 'manifest', input: manifest, output: join(work, 'shards'), imageSize: H, samplesPerShard: 10, tokenizer });
    await prepareShards({ source: 'manifest', input: manifest, output: join(work, 'plain'), imageSize: H, samplesPerShard: 7 });
    ds = await openShardDataset(join(work, 'shards'));
    plain = await openShardDataset(join(work, 'plain'));
  });
  afterAll(async () => {
    await ds.close();
    await plain.close();
  });

  const opts = (indices: Uint32Array, positions: Uint32Array, step: number): PretrainBatchOptions => ({
    dataset: ds,
    tokenizer,
    indices,
    positions,
    globalBatchSize: G,
    step,
    seed: 42,
    imageSize: H,
    maxTextLength: 16,
    mlmProbability: 0.15,
    mimMaskRatio: 0.75,
    numPatches: N,
  });

  it('gives byte-identical arrays whether built at once or as 4 micro-batches of 2', async () => {
    const sampler = new EpochSampler({ size: ds.size, seed: 42, globalBatchSize: G });
    for (const step of [0, 1, 5]) {
      const g = sampler.batchAt(step);
      const whole = await buildPretrainBatch(opts(g.indices, g.positions, step));
      const parts = [];
      for (let k = 0; k < 4; k++) parts.push(await buildPretrainBatch(opts(g.indices.subarray(2 * k, 2 * k + 2), g.positions.subarray(2 * k, 2 * k + 2), step)));
      const joined = concat(parts);
      expect(joined.batchSize).toBe(G);
      for (const k of ARRAYS) expect(bytes(joined[k]).equals(bytes(whole[k])), k).toBe(true);
      // Micro-batches built in another order (another worker finishing first) change nothing either.
      const reversed = await buildPretrainBatch(opts(g.indices.slice().reverse(), g.positions.slice().reverse(), step));
      expect(Array.from(reversed.itmLabels).reverse()).toEqual(Array.from(whole.itmLabels));
    }
  });

  it('fills every field as the contract says', async () => {
    const g = new EpochSampler({ size: ds.size, seed: 42, globalBatchSize: G }).batchAt(2);
    const b = await buildPretrainBatch(opts(g.indices, g.positions, 2));
    const plane = 3 * H * H;
    expect([b.batchSize, b.imageSize, b.textLength]).toEqual([G, H, 16]);
    expect(b.pixelValues).toHaveLength(G * plane);
    expect(b.mimNoise).toHaveLength(G * N);
    // Images: the shard's pixels through CLIP normalisation.
    const s0 = await ds.get(g.indices[0] as number);
    expect(b.pixelValues.subarray(0, plane)).toEqual(normalizeRgb(s0.image.data, H, H));
    // ITM: exactly floor(G/2) positives over the global batch; a positive's ITM image is its own, a negative's
    // is the drawn corpus image (never its own).
    expect(b.itmLabels.reduce((a, x) => a + x, 0)).toBe(G / 2);
    const pos = itmPositives(42, 2, G);
    for (let k = 0; k < G; k++) {
      const own = b.pixelValues.subarray(k * plane, (k + 1) * plane);
      const itm = b.itmPixelValues.subarray(k * plane, (k + 1) * plane);
      expect(b.itmLabels[k]).toBe(pos[g.positions[k] as number]);
      if (b.itmLabels[k] === 1) expect(itm).toEqual(own);
      else {
        const j = itmNegativeIndex(42, 2, g.indices[k] as number, ds.size);
        expect(j).not.toBe(g.indices[k]);
        expect(itm).toEqual(normalizeRgb((await ds.get(j)).image.data, H, H));
      }
    }
    // Text: cls … sep then padding; masking only where labelled; noise in [0,1); seeds differ per sample.
    for (let k = 0; k < G; k++) {
      const ids = b.inputIds.subarray(k * 16, (k + 1) * 16);
      const mask = b.attentionMask.subarray(k * 16, (k + 1) * 16);
      const n = mask.reduce((a, x) => a + x, 0);
      expect(ids[0]).toBe(tokenizer.special.cls);
      expect(ids[n - 1]).toBe(tokenizer.special.sep);
      expect(Array.from(ids.subarray(n)).every((x) => x === tokenizer.special.pad)).toBe(true);
    }
    for (let i = 0; i < b.mlmLabels.length; i++) if (b.mlmLabels[i] === -100) expect(b.mlmInputIds[i]).toBe(b.inputIds[i]);
    expect(b.mimNoise.every((x) => x >= 0 && x < 1)).toBe(true);
    expect(new Set(b.dropoutSeeds).size).toBe(G);
  });

  it('uses stored token ids only when they match, with the same result as tokenising the text', async () => {
    const g = new EpochSampler({ size: ds.size, seed: 1, globalBatchSize: G }).batchAt(0);
    const a = await buildPretrainBatch(opts(g.indices, g.positions, 3));
    const b = await buildPretrainBatch({ ...opts(g.indices, g.positions, 3), dataset: plain });
    for (const k of ['inputIds', 'attentionMask', 'mlmInputIds', 'mlmLabels'] as const) expect(b[k]).toEqual(a[k]);
    expect(bytes(b.pixelValues).equals(bytes(a.pixelValues))).toBe(true);
  });

  it('pretrainCounts equals the counts of the built batch and splits over micro-batches', async () => {
    const g = new EpochSampler({ size: ds.size, seed: 42, globalBatchSize: G }).batchAt(4);
    const b = await buildPretrainBatch(opts(g.indices, g.positions, 4));
    const counts = await pretrainCounts(opts(g.indices, g.positions, 4));
    expect(counts.mlm).toBe(b.mlmLabels.filter((x) => x !== -100).length);
    expect(counts.mim).toBe(G * maskedPatchCount(N, 0.75));
    expect(counts.mim).toBe(G * 12);
    expect(counts.itm).toBe(G);
    let mlm = 0;
    for (let k = 0; k < 4; k++) mlm += (await pretrainCounts(opts(g.indices.subarray(2 * k, 2 * k + 2), g.positions.subarray(2 * k, 2 * k + 2), 4))).mlm;
    expect(mlm).toBe(counts.mlm);
    expect(maskedPatchCount(324, 0.75)).toBe(243);
  });

  it('rejects inconsistent arguments naming the field', async () => {
    const idx = Uint32Array.of(0, 1);
    await expect(buildPretrainBatch({ ...opts(idx, Uint32Array.of(0), 0) })).rejects.toThrow(/positions has 1 entries, expected 2/);
    await expect(buildPretrainBatch({ ...opts(idx, Uint32Array.of(0, 8), 0) })).rejects.toThrow(/positions\[1\] must be an integer in \[0, 8\), got 8/);
    await expect(buildPretrainBatch({ ...opts(Uint32Array.of(0, 999), Uint32Array.of(0, 1), 0) })).rejects.toThrow(/indices\[1\] must be an integer in \[0, 24\), got 999/);
    await expect(buildPretrainBatch({ ...opts(idx, Uint32Array.of(0, 1), 0), imageSize: 64 })).rejects.toThrow(/imageSize is 64 but the dataset was prepared at 32 px/);
    await expect(buildPretrainBatch({ ...opts(idx, Uint32Array.of(0, 1), 0), mimMaskRatio: 1 })).rejects.toThrow(/mimMaskRatio must be in \[0, 1\), got 1/);
  });
});
