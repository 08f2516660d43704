import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Tokenizer as RustTokenizer } from 'tokenizers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sharedDataForTests } from '../shared-data.js';
import { parseTextSource, readTexts } from './corpus.js';
import { loadTokenizer, type TextTokenizer } from './load.js';
import { trainTokenizer, type TrainTokenizerResult } from './train.js';

const data = sharedDataForTests(resolve(import.meta.dirname, '../../../..'), 'tokenizer tests on real corpora');
const work = mkdtempSync(join(tmpdir(), 'm3ae-tok-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function texts(spec: string, max: number): Promise<string[]> {
  const out: string[] = [];
  for await (const t of readTexts(await parseTextSource(spec))) {
    out.push(t);
    if (out.length >= max) break;
  }
  return out;
}

/** Encodes with the Rust library (special tokens, truncation and padding done by the library itself). */
async function rustIds(file: string, pad: number, maxLength: number, text: string): Promise<number[]> {
  const rust = RustTokenizer.fromFile(file);
  rust.setTruncation(maxLength);
  rust.setPadding({ maxLength, padId: pad, padToken: rust.idToToken(pad) ?? undefined });
  return (await rust.encode(text)).getIds();
}

describe.skipIf(!data)('text sources on the real corpora', () => {
  it('recognises each layout and reads its texts', async () => {
    const d = data as string;
    expect(await parseTextSource(join(d, 'roco'))).toEqual({ kind: 'roco', path: join(d, 'roco') });
    expect((await parseTextSource(join(d, 'medpix2'))).kind).toBe('medpix');
    expect((await parseTextSource(join(d, 'iu_xray_reports'))).kind).toBe('iu-xray');
    expect((await parseTextSource(join(d, 'medicat', 'sample.jsonl'))).kind).toBe('medicat');
    expect((await parseTextSource(join(d, 'README.md'))).kind).toBe('text');
    const roco = await texts(join(d, 'roco'), 5);
    expect(roco).toHaveLength(5);
    for (const t of roco) expect(t).toBe(t.trim()); // the leading space after the TAB is gone
    const medicat = await texts(join(d, 'medicat', 'sample.jsonl'), 1000);
    expect(medicat.length).toBeGreaterThan(10); // captions and inline references of 10 records
    await expect(parseTextSource(join(d, 'nope'))).rejects.toThrow(/no such file or folder/);
  });
});

describe.skipIf(!data)('trained tokenizers', () => {
  const results: Partial<Record<'bpe' | 'wordpiece', TrainTokenizerResult>> = {};
  const loaded: Partial<Record<'bpe' | 'wordpiece', TextTokenizer>> = {};
  let sample: string[] = [];

  beforeAll(async () => {
    const d = data as string;
    const sources = await Promise.all([join(d, 'roco'), join(d, 'medpix2'), join(d, 'iu_xray_reports')].map(parseTextSource));
    for (const type of ['bpe', 'wordpiece'] as const) {
      results[type] = await trainTokenizer({ sources, vocabSize: 1000, output: join(work, `${type}.json`), type, agreementSamples: 200 });
      loaded[type] = await loadTokenizer(join(work, `${type}.json`));
    }
    sample = [...(await texts(join(d, 'iu_xray_reports'), 40)), ...(await texts(join(d, 'medpix2'), 40))];
  });

  it('writes RoBERTa-style specials and the requested size for BPE', () => {
    const r = results.bpe as TrainTokenizerResult;
    const t = loaded.bpe as TextTokenizer;
    expect(r.vocabSize).toBe(1000);
    expect(r.exhausted).toBe(false);
    expect(r.texts).toBeGreaterThan(10_000);
    expect(t.modelType).toBe('BPE');
    expect(t.vocabSize).toBe(1000);
    expect(t.special).toEqual({ cls: 0, pad: 1, sep: 2, unk: 3, mask: 4 });
    expect(t.prefix).toEqual([0]);
    expect(t.suffix).toEqual([2]);
    expect([...t.specialIds].sort()).toEqual([0, 1, 2, 3, 4]);
    const json = JSON.parse(readFileSync(join(work, 'bpe.json'), 'utf8')) as { model: { vocab: Record<string, number> } };
    expect(Object.keys(json.model.vocab)).toHaveLength(1000);
  });

  it('writes BERT-style specials for WordPiece', () => {
    const t = loaded.wordpiece as TextTokenizer;
    expect(t.modelType).toBe('WordPiece');
    expect(t.special).toEqual({ pad: 0, unk: 1, cls: 2, sep: 3, mask: 4 });
    expect(t.vocabSize).toBe(1000);
  });

  it('gives identical ids in the Rust library and the JavaScript loader, truncating and padding alike', async () => {
    for (const type of ['bpe', 'wordpiece'] as const) {
      expect(results[type]?.agreement).toEqual({ checked: 200, mismatches: 0 });
      const t = loaded[type] as TextTokenizer;
      let truncated = 0;
      for (const text of sample) {
        for (const maxLength of [16, 40]) {
          const js = t.encode(text, maxLength);
          expect(Array.from(js.inputIds)).toEqual(await rustIds(join(work, `${type}.json`), t.special.pad, maxLength, text));
          if (js.attentionMask[maxLength - 1] === 1) truncated++;
        }
      }
      expect(truncated).toBeGreaterThan(10); // the long IU X-ray reports exercise truncation
    }
  });

  it('truncates the content, keeps cls/sep, pads with pad and masks the padding', () => {
    const t = loaded.bpe as TextTokenizer;
    const long = sample[0] as string;
    const content = t.encodeContent(long);
    expect(content.length).toBeGreaterThan(10);
    const e = t.encode(long, 8);
    expect(Array.from(e.inputIds)).toEqual([0, ...Array.from(content.subarray(0, 6)), 2]);
    expect(Array.from(e.attentionMask)).toEqual([1, 1, 1, 1, 1, 1, 1, 1]);
    const short = t.encode('no acute disease', 12);
    const n = short.attentionMask.reduce((a, b) => a + b, 0);
    expect(short.inputIds[n - 1]).toBe(2);
    expect(Array.from(short.inputIds.subarray(n))).toEqual(new Array(12 - n).fill(1));
    expect(t.decode(t.encodeContent('Hyperdense lesion, 3×4 cm — é.'))).toBe('Hyperdense lesion, 3×4 cm — é.'); // byte-level: lossless
    expect(() => t.encode('x', 1)).toThrow(/maxLength must be an integer >= 2/);
  });

  it('trains from a plain text file too, and reports a corpus exhausted before the requested size', async () => {
    const file = join(work, 'tiny.txt');
    writeFileSync(file, 'axial ct of the chest\n\n  sagittal mri   of the knee \n');
    const r = await trainTokenizer({ sources: [await parseTextSource(file)], vocabSize: 5000, output: join(work, 'tiny.json') });
    expect(r.texts).toBe(2);
    expect(r.exhausted).toBe(true);
    expect(r.vocabSize).toBeLessThan(5000);
    expect(r.agreement.mismatches).toBe(0);
  });
});

describe('loadTokenizer errors', () => {
  it('names the file and what was expected', async () => {
    await expect(loadTokenizer(join(work, 'missing.json'))).rejects.toThrow(/tokenizer file not readable: .*missing\.json/);
    const bad = join(work, 'bad.json');
    writeFileSync(bad, '{"model": {}}');
    await expect(loadTokenizer(bad)).rejects.toThrow(/model\.type is missing; expected a Hugging Face tokenizer\.json/);
    writeFileSync(bad, 'not json');
    await expect(loadTokenizer(bad)).rejects.toThrow(/not valid JSON/);
  });

  it('rejects bad training options', async () => {
    await expect(trainTokenizer({ sources: [], vocabSize: 100, output: join(work, 'x.json') })).rejects.toThrow(/vocabSize must be an integer >= 261 for bpe, got 100/);
    await expect(trainTokenizer({ sources: [], vocabSize: 1000, output: join(work, 'x.json') })).rejects.toThrow(/at least one text source/);
  });
});
