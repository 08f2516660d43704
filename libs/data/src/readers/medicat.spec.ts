import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sharedDataForTests } from '../shared-data.js';
import { SkipLog } from '../skip-log.js';
import { medicatHoldout, readMedicat } from './medicat.js';
import { PythonRandom } from './python-random.js';
import type { PairRecord } from './types.js';

const data = sharedDataForTests(resolve(import.meta.dirname, '../../../..'), 'MedICaT tests on the real sample');
const work = mkdtempSync(join(tmpdir(), 'm3ae-medicat-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

interface Raw {
  pdf_hash: string;
  fig_uri: string;
  s2_caption: string;
  s2orc_references: string[] | null;
  radiology: boolean;
}

describe.skipIf(!data)('readMedicat on the official sample', () => {
  const dir = join(data ?? '', 'medicat');

  it('keeps radiology figures only, one pair per caption and per inline reference, with images', async () => {
    const log = new SkipLog();
    const recs = await collect(readMedicat(dir, { skipLog: log }));
    const raw = readFileSync(join(dir, 'sample.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Raw);
    const radiology = new Set(raw.filter((r) => r.radiology).map((r) => `${r.pdf_hash}_${r.fig_uri}`));
    // 6 radiology figures: floor(6/10) = 0 held out, so all are train.
    expect(medicatHoldout(radiology.size)).toBe(0);
    expect(recs.length).toBeGreaterThan(radiology.size);
    for (const r of recs) {
      const fig = r.id.split('#')[0];
      expect(radiology.has(fig)).toBe(true);
      expect(r.imagePath).toBe(join(dir, 'figures', fig));
      expect(r.text.split(' ').length).toBeGreaterThanOrEqual(3);
      expect(r.text).not.toMatch(/\s\s|^\s|\s$/);
      expect(r.id).toMatch(/#(caption|ref\d+)$/);
    }
    // Every reference of a kept figure that passes the filter is its own pair, in order.
    const first = raw.find((r) => r.radiology && (r.s2orc_references?.length ?? 0) > 0);
    if (!first) throw new Error('the sample has a radiology figure with references');
    const refs = first.s2orc_references ?? [];
    const figId = `${first.pdf_hash}_${first.fig_uri}`;
    const mine = recs.filter((r) => r.id.startsWith(figId + '#'));
    expect(mine.map((r) => r.id)).toEqual([`${figId}#caption`, ...refs.map((_, k) => `${figId}#ref${k + 1}`)]);
    expect(mine[1].text).toBe(refs[0].trim().replace(/\s+/g, ' '));
    expect(log.counts()['missing-image'] ?? 0).toBe(0);
    expect(await collect(readMedicat(dir, { split: 'test', skipLog: new SkipLog() }))).toEqual([]);
  });
});

describe('readMedicat hold-out and skips on a generated release', () => {
  const dir = join(work, 'release');
  mkdirSync(join(dir, 'figures'), { recursive: true });
  const lines: string[] = [];
  for (let i = 0; i < 60; i++) {
    const rec = {
      pdf_hash: `p${i}`,
      fig_uri: `1-Figure${i}-1.png`,
      s2_caption: `Figure ${i}. CT   of case ${i}.`,
      s2orc_references: i % 3 === 0 ? [`Reference text for case ${i}.`, 'too short'] : null,
      radiology: i % 4 !== 3, // 45 radiology figures
    };
    lines.push(JSON.stringify(rec));
    writeFileSync(join(dir, 'figures', `${rec.pdf_hash}_${rec.fig_uri}`), 'x');
  }
  lines.splice(5, 0, '{not json');
  lines.push(lines[0]); // a repeated figure
  lines.push(JSON.stringify({ pdf_hash: 'q', fig_uri: 'f.png', s2_caption: 'Some long caption here.', radiology: 'yes' }));
  writeFileSync(join(dir, 'release.jsonl'), lines.join('\n') + '\n');

  it('splits with the exact rule: CPython shuffle of radiology figure numbers, last h test, h before validation', async () => {
    const read = async (split: 'train' | 'validation' | 'test', holdout?: number) =>
      (await collect(readMedicat(join(dir, 'release.jsonl'), { split, holdout, skipLog: new SkipLog() }))).filter((r) => r.id.endsWith('#caption'));
    const n = 45;
    const h = medicatHoldout(n); // floor(45/10) = 4
    expect(h).toBe(4);
    const train = await read('train');
    const val = await read('validation');
    const test = await read('test');
    expect([train.length, val.length, test.length]).toEqual([n - 2 * h, h, h]);
    const radiologyIds = Array.from({ length: 60 }, (_, i) => i).filter((i) => i % 4 !== 3).map((i) => `p${i}_1-Figure${i}-1.png#caption`);
    expect(new Set([...train, ...val, ...test].map((r) => r.id))).toEqual(new Set(radiologyIds));
    const order = new PythonRandom(42).shuffle([...Array(n).keys()]);
    const ids = (idx: number[]) => new Set(idx.map((k) => radiologyIds[k]));
    expect(new Set(test.map((r) => r.id))).toEqual(ids(order.slice(n - h)));
    expect(new Set(val.map((r) => r.id))).toEqual(ids(order.slice(n - 2 * h, n - h)));
    // With n >= 10 * holdout this is the official indices[:-2H] / [-2H:-H] / [-H:].
    const small = await read('test', 3);
    expect(new Set(small.map((r) => r.id))).toEqual(ids(order.slice(-3)));
    // Records come out in file order.
    const lineNos = train.map((r) => r.provenance.line);
    expect([...lineNos].sort((a, b) => a - b)).toEqual(lineNos);
  });

  it('reports malformed lines, repeated figures and short references; references become separate pairs', async () => {
    const all: PairRecord[] = [];
    let tooShort = 0;
    for (const split of ['train', 'validation', 'test'] as const) {
      const log = new SkipLog();
      all.push(...(await collect(readMedicat(join(dir, 'release.jsonl'), { split, skipLog: log }))));
      // Lines that never reach a split are reported by every split's read; text problems by the split's own.
      expect(log.counts()['malformed-line']).toBe(2); // bad JSON, radiology: "yes"
      expect(log.counts()['duplicate-id']).toBe(1);
      expect(log.entries.find((e) => e.reason === 'malformed-line')?.line).toBe(6);
      tooShort += log.counts()['too-short-text'] ?? 0;
    }
    const withRefs = Array.from({ length: 60 }, (_, i) => i).filter((i) => i % 4 !== 3 && i % 3 === 0).length;
    expect(tooShort).toBe(withRefs);
    expect(all.filter((r) => r.id.endsWith('#ref1'))).toHaveLength(withRefs);
    expect(all.find((r) => r.id === 'p0_1-Figure0-1.png#caption')?.text).toBe('Figure 0. CT of case 0.');
    expect(all.find((r) => r.id === 'p0_1-Figure0-1.png#caption')?.provenance.line).toBe(1);
  });
});
