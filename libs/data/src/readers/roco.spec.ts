import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { sharedDataForTests } from '../shared-data.js';
import { SkipLog } from '../skip-log.js';
import { readRoco } from './roco.js';
import { DatasetError, type PairRecord } from './types.js';

const data = sharedDataForTests(resolve(import.meta.dirname, '../../../..'), 'ROCO tests on the real files');
const work = mkdtempSync(join(tmpdir(), 'm3ae-roco-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe.skipIf(!data)('readRoco on the real ROCO text files', () => {
  const root = join(data ?? '', 'roco');

  it('reads validation radiology captions text-only: trimmed, >= 3 words, provenance points at the line', async () => {
    const log = new SkipLog();
    const recs = await collect(readRoco(root, { split: 'validation', requireImages: false, skipLog: log }));
    const file = join(root, 'validation', 'radiology', 'captions.txt');
    const lines = readFileSync(file, 'utf8').split('\n');
    const nonBlank = lines.filter((l) => l.trim() !== '').length;
    expect(recs.length).toBeGreaterThan(7000);
    expect(recs.length + log.total).toBe(nonBlank);
    expect(log.counts()['too-short-text']).toBeGreaterThan(0);
    for (const r of recs) {
      expect(r.id).toMatch(/^ROCO_\d+$/);
      expect(r.text.split(' ').length).toBeGreaterThanOrEqual(3);
      expect(r.text).toBe(r.text.trim());
      expect(r.text).not.toMatch(/\s\s/);
      expect(r.source).toBe('roco');
      expect(r.imagePath).toBe(join(root, 'validation', 'radiology', 'images', `${r.id}.jpg`));
      expect(lines[r.provenance.line - 1]?.startsWith(`${r.id}\t`)).toBe(true);
    }
    expect(new Set(recs.map((r) => r.id)).size).toBe(recs.length);
    for (const e of log.entries.filter((x) => x.reason === 'too-short-text')) {
      const caption = lines[e.line - 1].split('\t')[1];
      expect(caption.trim().split(/\s+/).length).toBeLessThan(3);
    }
  });

  it('skips every pair as missing-image when images are required and absent (as here)', async () => {
    const log = new SkipLog();
    const textOnly = await collect(readRoco(root, { split: 'val', requireImages: false, skipLog: new SkipLog() }));
    const recs = await collect(readRoco(root, { split: 'validation', skipLog: log }));
    expect(recs).toHaveLength(0);
    expect(log.counts()['missing-image']).toBe(textOnly.length);
    expect(log.entries[0].detail).toContain('images');
  });

  it('reads both subsets, radiology first', async () => {
    const rad = await collect(readRoco(root, { split: 'validation', requireImages: false, skipLog: new SkipLog() }));
    const non = await collect(readRoco(root, { split: 'validation', subset: 'non-radiology', requireImages: false, skipLog: new SkipLog() }));
    const all = await collect(readRoco(root, { split: 'validation', subset: 'all', requireImages: false, skipLog: new SkipLog() }));
    expect(all.length).toBe(rad.length + non.length);
    expect(all[0].id).toBe(rad[0].id);
    expect(all.at(-1)?.id).toBe(non.at(-1)?.id);
  });

  it('refuses a split whose captions.txt is absent, naming the file', async () => {
    // roco/train/radiology holds only licences.txt in the shared sample.
    await expect(collect(readRoco(root, { split: 'train', skipLog: new SkipLog() }))).rejects.toThrow(DatasetError);
    await expect(collect(readRoco(root, { split: 'train', skipLog: new SkipLog() }))).rejects.toThrow(/train\/radiology\/captions\.txt/);
  });

  it('rejects an unknown split by value', async () => {
    await expect(collect(readRoco(root, { split: 'dev' as never, skipLog: new SkipLog() }))).rejects.toThrow(/split must be one of train, validation, test, got "dev"/);
  });
});

describe('readRoco on a hand-made layout with images', () => {
  it('yields pairs with images and reports each problem with file and line', async () => {
    const root = join(work, 'roco');
    const dir = join(root, 'test', 'radiology');
    mkdirSync(join(dir, 'images'), { recursive: true });
    const jpeg = await sharp({ create: { width: 8, height: 6, channels: 3, background: '#808080' } }).jpeg().toBuffer();
    for (const id of ['ROCO_00001', 'ROCO_00002', 'ROCO_00004', 'ROCO_00006']) writeFileSync(join(dir, 'images', `${id}.jpg`), jpeg);
    writeFileSync(join(dir, 'images', 'ROCO_00007.jpg'), new Uint8Array(0));
    const lines = [
      'ROCO_00001\t Axial CT of the   chest showing a mass.', // 1 ok (whitespace collapsed)
      'ROCO_00002\t Two words', // 2 too short
      'ROCO_00003\t Coronal MRI of the knee.', // 3 image missing
      'this line has no tab at all', // 4 malformed
      'ROCO_00001\t Duplicate of the first id.', // 5 duplicate
      '', // 6 blank: passed over
      'ROCO_00004\t   ', // 7 empty text
      'ROCO_00006\t Sagittal T2 MRI of the spine.\r', // 8 ok (CRLF)
      'ROCO_00007\t Image file is empty here.', // 9 zero-byte image
    ];
    writeFileSync(join(dir, 'captions.txt'), lines.join('\n') + '\n');
    const log = new SkipLog();
    const recs: PairRecord[] = await collect(readRoco(root, { split: 'test', skipLog: log }));
    const file = join(dir, 'captions.txt');
    expect(recs).toEqual([
      { id: 'ROCO_00001', imagePath: join(dir, 'images', 'ROCO_00001.jpg'), text: 'Axial CT of the chest showing a mass.', source: 'roco', provenance: { file, line: 1 } },
      { id: 'ROCO_00006', imagePath: join(dir, 'images', 'ROCO_00006.jpg'), text: 'Sagittal T2 MRI of the spine.', source: 'roco', provenance: { file, line: 8 } },
    ]);
    expect(log.counts()).toEqual({ 'too-short-text': 1, 'missing-image': 1, 'malformed-line': 1, 'duplicate-id': 1, 'empty-text': 1, 'unreadable-image': 1 });
    expect(log.entries.map((e) => [e.reason, e.line])).toEqual([
      ['too-short-text', 2],
      ['missing-image', 3],
      ['malformed-line', 4],
      ['duplicate-id', 5],
      ['empty-text', 7],
      ['unreadable-image', 9],
    ]);
    expect(log.entries.every((e) => e.file === file)).toBe(true);
  });
});
