import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SkipLog } from '../skip-log.js';
import { parseCsv } from './csv.js';
import { readManifest } from './manifest.js';
import { DatasetError } from './types.js';

const work = mkdtempSync(join(tmpdir(), 'm3ae-manifest-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
mkdirSync(join(work, 'img'));
for (const f of ['a.png', 'b.png', 'c.png', 'd.png']) writeFileSync(join(work, 'img', f), 'x');
writeFileSync(join(work, 'abs.png'), 'x');

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('parseCsv (RFC 4180)', () => {
  it('handles quotes, doubled quotes, embedded delimiters and line breaks, CRLF, BOM and blank lines', () => {
    const text = '\ufeffa,b\r\n"x, y","say ""hi"""\r\n\r\n"multi\nline",z\n,\nlast,"q"';
    expect([...parseCsv(text)]).toEqual([
      { line: 1, fields: ['a', 'b'] },
      { line: 2, fields: ['x, y', 'say "hi"'] },
      { line: 4, fields: ['multi\nline', 'z'] },
      { line: 6, fields: ['', ''] },
      { line: 7, fields: ['last', 'q'] },
    ]);
  });

  it('turns a bad record into an error row and resumes at the next line', () => {
    const rows = [...parseCsv('h1,h2\n"open,never closed\nok,1\nbad"quote,2\n"x"y,3\nfine,4\n')];
    expect(rows).toEqual([
      { line: 1, fields: ['h1', 'h2'] },
      // The opening quote pairs with the one in line 4, then "q" follows it: the record is bad from line 2.
      { line: 2, error: 'unexpected "q" after a closing quote (field 1)' },
      { line: 3, fields: ['ok', '1'] },
      { line: 4, error: 'quote inside an unquoted field (field 1)' },
      { line: 5, error: 'unexpected "y" after a closing quote (field 1)' },
      { line: 6, fields: ['fine', '4'] },
    ]);
  });

  it('reports a quote that never closes and still reads the lines after it', () => {
    expect([...parseCsv('a,b\n"never closed,1\nok,2\n')]).toEqual([
      { line: 1, fields: ['a', 'b'] },
      { line: 2, error: 'unterminated quoted field' },
      { line: 3, fields: ['ok', '2'] },
    ]);
  });

  it('supports another delimiter and a trailing empty field', () => {
    expect([...parseCsv('a\tb\n1\t', '\t')]).toEqual([
      { line: 1, fields: ['a', 'b'] },
      { line: 2, fields: ['1', ''] },
    ]);
  });
});

describe('readManifest', () => {
  it('reads JSONL with key aliases, lists of texts, relative and absolute paths, and reports bad lines', async () => {
    const lines = [
      JSON.stringify({ image: 'img/a.png', text: 'axial CT of the  head' }), // 1
      JSON.stringify({ img_path: 'img/b.png', caption: 'coronal MR of the knee', id: 'B' }), // 2
      '{"image": "img/c.png", "text": ', // 3 malformed JSON
      JSON.stringify({ text: 'no image key here at all' }), // 4 malformed
      JSON.stringify({ File: 'img/c.png', Report: 'too short' }), // 5 too short (aliases, any case)
      JSON.stringify({ image: 'img/missing.png', text: 'this image does not exist' }), // 6 missing image
      JSON.stringify({ image: 'img/d.png', text: 'a duplicate id of line two', id: 'B' }), // 7 duplicate
      JSON.stringify({ path: join(work, 'abs.png'), texts: ['first caption of several', 'x', 'second caption of several'] }), // 8
      '', // 9 blank
      '[1, 2]', // 10 not an object
    ];
    const file = join(work, 'm.jsonl');
    writeFileSync(file, lines.join('\r\n'));
    const log = new SkipLog();
    const recs = await collect(readManifest(file, { skipLog: log }));
    expect(recs.map((r) => [r.id, r.imagePath, r.text, r.provenance.line])).toEqual([
      ['img/a.png#1', join(work, 'img', 'a.png'), 'axial CT of the head', 1],
      ['B', join(work, 'img', 'b.png'), 'coronal MR of the knee', 2],
      [`${join(work, 'abs.png')}#8#1`, join(work, 'abs.png'), 'first caption of several', 8],
      [`${join(work, 'abs.png')}#8#3`, join(work, 'abs.png'), 'second caption of several', 8],
    ]);
    expect(recs.every((r) => r.source === 'manifest' && r.provenance.file === file)).toBe(true);
    expect(log.counts()).toEqual({ 'malformed-line': 3, 'too-short-text': 2, 'missing-image': 1, 'duplicate-id': 1 });
    expect(log.entries.map((e) => [e.reason, e.line])).toEqual([
      ['malformed-line', 3],
      ['malformed-line', 4],
      ['too-short-text', 5],
      ['missing-image', 6],
      ['duplicate-id', 7],
      ['too-short-text', 8],
      ['malformed-line', 10],
    ]);
  });

  it('reads CSV with a header of aliases, quoted captions with commas and line breaks, and bad rows', async () => {
    const csv = [
      'ID,Image_Path,Caption,extra',
      '1,img/a.png,"CT, axial, of the ""left"" kidney",x',
      '2,img/b.png,"a caption that spans',
      'two lines of the file",y',
      '3,img/c.png,only two fields',
      '4,img/c.png,"unterminated quote here,z',
      '5,img/d.png,plain caption without quotes,w',
    ].join('\n');
    const file = join(work, 'm.csv');
    writeFileSync(file, csv);
    const log = new SkipLog();
    const recs = await collect(readManifest(file, { skipLog: log }));
    expect(recs.map((r) => [r.id, r.text, r.provenance.line])).toEqual([
      ['1', 'CT, axial, of the "left" kidney', 2],
      ['2', 'a caption that spans two lines of the file', 3],
      ['5', 'plain caption without quotes', 7],
    ]);
    expect(log.counts()).toEqual({ 'malformed-line': 2 });
    expect(log.entries.map((e) => e.line)).toEqual([5, 6]);
    expect(log.entries[0].detail).toContain('expected 4 fields');
  });

  it('refuses a CSV header without image or text column, naming the accepted names', async () => {
    const file = join(work, 'bad.csv');
    writeFileSync(file, 'foo,bar\n1,2\n');
    await expect(collect(readManifest(file, { skipLog: new SkipLog() }))).rejects.toThrow(DatasetError);
    await expect(collect(readManifest(file, { skipLog: new SkipLog() }))).rejects.toThrow(/image_path/);
  });

  it('detects JSONL without a known extension, and TSV by extension', async () => {
    const a = join(work, 'noext');
    writeFileSync(a, JSON.stringify({ image: 'img/a.png', text: 'one two three' }) + '\n');
    expect(await collect(readManifest(a, { skipLog: new SkipLog() }))).toHaveLength(1);
    const t = join(work, 'm.tsv');
    writeFileSync(t, 'image\ttext\nimg/a.png\tone, two, three\n');
    const recs = await collect(readManifest(t, { skipLog: new SkipLog() }));
    expect(recs.map((r) => r.text)).toEqual(['one, two, three']);
  });

  it('names a missing manifest', async () => {
    await expect(collect(readManifest(join(work, 'nope.jsonl'), { skipLog: new SkipLog() }))).rejects.toThrow(/not found.*nope\.jsonl/);
  });
});
