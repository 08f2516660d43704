import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sharedDataForTests } from '../shared-data.js';
import { SkipLog } from '../skip-log.js';
import { readMedpix } from './medpix.js';
import { DatasetError } from './types.js';

const data = sharedDataForTests(resolve(import.meta.dirname, '../../../..'), 'MedPix tests');

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe.skipIf(!data)('readMedpix on MedPix 2.0', () => {
  const root = join(data ?? '', 'medpix2');

  for (const split of ['train', 'dev'] as const) {
    it(`reads ${split}: caption text, images present, short captions skipped`, async () => {
      const log = new SkipLog();
      const recs = await collect(readMedpix(root, { split, skipLog: log }));
      const file = join(root, `descriptions_${split}.jsonl`);
      const raw = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { image: string; Description: { Caption: string } });
      const short = raw.filter((r) => r.Description.Caption.trim().split(/\s+/).length < 3).length;
      expect(recs.length).toBe(raw.length - short);
      expect(log.counts()).toEqual(short ? { 'too-short-text': short } : {});
      const byImage = new Map(raw.map((r) => [r.image, r.Description.Caption]));
      for (const r of recs) {
        expect(r.imagePath).toBe(join(root, 'images_288', `${r.id}.jpg`));
        expect(r.text).toBe((byImage.get(r.id) ?? '').trim().replace(/\s+/g, ' '));
        expect(r.provenance.file).toBe(file);
      }
    });
  }

  it('accepts validation for dev and names the file of a split that is absent here', async () => {
    const dev = await collect(readMedpix(root, { split: 'validation', skipLog: new SkipLog() }));
    expect(dev.length).toBeGreaterThan(100);
    await expect(collect(readMedpix(root, { split: 'test', skipLog: new SkipLog() }))).rejects.toThrow(DatasetError);
    await expect(collect(readMedpix(root, { split: 'test', skipLog: new SkipLog() }))).rejects.toThrow(/descriptions_test\.jsonl/);
  });
});
