import { readdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { acceptImage, acceptText, isDirectory, isRecord, readJsonLines, resolveMinWords, resolveSplit } from './common.js';
import { PythonRandom } from './python-random.js';
import { DatasetError, type PairRecord, type ReaderOptions } from './types.js';

export const MEDICAT_SPLITS = ['train', 'validation', 'test'] as const;
export type MedicatSplit = (typeof MEDICAT_SPLITS)[number];

export interface MedicatOptions extends ReaderOptions {
  /** `val` is accepted for `validation`. @defaultValue 'train' */
  split?: MedicatSplit | 'val';
  /** Figures folder. @defaultValue `figures/` beside the JSONL file */
  imageDir?: string;
  /** Figures held out for each of validation and test on a full release. @defaultValue 1000 */
  holdout?: number;
  /** Seed of the Python-compatible shuffle. @defaultValue 42 (the official preprocessing) */
  seed?: number;
}

export interface MedicatSplitSizes {
  radiologyFigures: number;
  /** Figures per held-out split: min(holdout, floor(radiologyFigures / 10)). */
  heldOut: number;
}

/** The exact hold-out rule (see `readMedicat`). */
export function medicatHoldout(radiologyFigures: number, holdout = 1000): number {
  return Math.min(holdout, Math.floor(radiologyFigures / 10));
}

/**
 * MedICaT's JSONL release (`input` is the .jsonl file, or a folder holding exactly one), images at
 * `{imageDir}/{pdf_hash}_{fig_uri}`. Follows the official M3AE preprocessing:
 * - keep figures with `radiology == true` (others are a selection, not skips);
 * - split: number the radiology figures 0..n-1 in file order, shuffle the numbers with CPython's
 *   `random.seed(seed); random.shuffle(...)` (bit-exact), then with h = min(holdout, floor(n / 10)) the last h
 *   numbers are test, the h before them validation, the rest train. For n >= 10 * holdout (every real release)
 *   this is exactly the official `indices[:-2000] / [-2000:-1000] / [-1000:]`; small samples get proportionally
 *   small held-out sets instead of Python's slicing putting everything into test;
 * - texts: `s2_caption`, then each of `s2orc_references`, whitespace collapsed, at least `minWords` words; each
 *   kept text is its own pair with id `{pdf_hash}_{fig_uri}#caption` or `#ref{k}` (k = 1-based reference number).
 * Malformed lines and repeated figures (same pdf_hash and fig_uri) are skipped before numbering, so every split's
 * read reports them; text and image skips are reported by the split the figure belongs to. Records of the
 * chosen split come out in file order.
 */
export async function* readMedicat(input: string, options: MedicatOptions): AsyncGenerator<PairRecord> {
  const minWords = resolveMinWords(options);
  const split = resolveSplit('medicat', options.split ?? 'train', MEDICAT_SPLITS, { val: 'validation' });
  const holdout = options.holdout ?? 1000;
  if (!Number.isInteger(holdout) || holdout < 0) {
    throw new DatasetError(`medicat: holdout must be an integer >= 0, got ${String(holdout)}`);
  }
  const file = await resolveJsonl(input);
  const imageDir = options.imageDir ? resolve(options.imageDir) : join(dirname(file), 'figures');
  const log = options.skipLog;

  interface Figure {
    line: number;
    figId: string;
    caption: unknown;
    references: unknown;
  }
  const figures: Figure[] = [];
  const seen = new Map<string, number>();
  for await (const { line, value: rec } of readJsonLines(file, log)) {
    if (!isRecord(rec)) {
      log.skip('malformed-line', file, line, 'expected a JSON object');
      continue;
    }
    const { pdf_hash: pdfHash, fig_uri: figUri, radiology } = rec;
    if (typeof pdfHash !== 'string' || pdfHash === '' || typeof figUri !== 'string' || figUri === '') {
      log.skip('malformed-line', file, line, `pdf_hash and fig_uri must be non-empty strings, got ${JSON.stringify(pdfHash)}, ${JSON.stringify(figUri)}`);
      continue;
    }
    if (typeof radiology !== 'boolean') {
      log.skip('malformed-line', file, line, `radiology must be true or false, got ${JSON.stringify(radiology)}`);
      continue;
    }
    if (!radiology) continue;
    const figId = `${pdfHash}_${figUri}`;
    const first = seen.get(figId);
    if (first !== undefined) {
      log.skip('duplicate-id', file, line, `${figId} (first at line ${first})`);
      continue;
    }
    seen.set(figId, line);
    figures.push({ line, figId, caption: rec['s2_caption'], references: rec['s2orc_references'] });
  }

  const n = figures.length;
  const h = medicatHoldout(n, holdout);
  const order = new PythonRandom(options.seed ?? 42).shuffle(Array.from({ length: n }, (_, i) => i));
  const [from, to] = split === 'train' ? [0, n - 2 * h] : split === 'validation' ? [n - 2 * h, n - h] : [n - h, n];
  const chosen = order.slice(from, to).sort((a, b) => a - b);

  for (const index of chosen) {
    const fig = figures[index];
    const texts: { id: string; text: string }[] = [];
    const caption = acceptText(fig.caption, minWords, log, file, fig.line, `${fig.figId} s2_caption`);
    if (caption !== undefined) texts.push({ id: `${fig.figId}#caption`, text: caption });
    if (Array.isArray(fig.references)) {
      fig.references.forEach((ref: unknown, k) => {
        const t = acceptText(ref, minWords, log, file, fig.line, `${fig.figId} s2orc_references[${k}]`);
        if (t !== undefined) texts.push({ id: `${fig.figId}#ref${k + 1}`, text: t });
      });
    } else if (fig.references !== null && fig.references !== undefined) {
      log.skip('malformed-line', file, fig.line, `${fig.figId}: s2orc_references must be a list or null`);
    }
    if (texts.length === 0) continue;
    const imagePath = join(imageDir, fig.figId);
    if (!(await acceptImage(imagePath, options, file, fig.line, fig.figId))) continue;
    for (const t of texts) {
      yield { id: t.id, imagePath, text: t.text, source: 'medicat', provenance: { file, line: fig.line } };
    }
  }
}

async function resolveJsonl(input: string): Promise<string> {
  const path = resolve(input);
  if (!(await isDirectory(path))) return path;
  const jsonl = (await readdir(path)).filter((f) => f.endsWith('.jsonl')).sort();
  if (jsonl.length !== 1) {
    throw new DatasetError(`medicat: expected exactly one .jsonl file in ${path}, found ${jsonl.length}${jsonl.length ? ': ' + jsonl.join(', ') : ''}`);
  }
  return join(path, jsonl[0]);
}
