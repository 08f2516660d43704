import { join, resolve } from 'node:path';
import { acceptImage, acceptText, IdGuard, readLines, resolveMinWords, resolveSplit } from './common.js';
import type { PairRecord, ReaderOptions } from './types.js';

export const ROCO_SPLITS = ['train', 'validation', 'test'] as const;
export type RocoSplit = (typeof ROCO_SPLITS)[number];
export type RocoSubset = 'radiology' | 'non-radiology' | 'all';

export interface RocoOptions extends ReaderOptions {
  /** One split or several (in order). `val` is accepted for `validation`. @defaultValue 'train' */
  split?: RocoSplit | 'val' | readonly (RocoSplit | 'val')[];
  /** @defaultValue 'radiology' (as M3AE pre-trains) */
  subset?: RocoSubset;
}

/**
 * ROCO as its repository lays it out: `ROOT/{split}/{radiology,non-radiology}/captions.txt`, one
 * `ROCO_xxxxx<TAB> caption` per line (the caption starts with a space), images at
 * `ROOT/{split}/{subset}/images/ROCO_xxxxx.jpg`. Like the official preprocessing: a line must split into exactly
 * two TAB-separated fields, whitespace is collapsed and captions of fewer than `minWords` words are dropped.
 * A requested captions.txt that does not exist is an error (a wrong root), never a silent empty corpus.
 */
export async function* readRoco(root: string, options: RocoOptions): AsyncGenerator<PairRecord> {
  const minWords = resolveMinWords(options);
  const requested = options.split === undefined ? ['train'] : typeof options.split === 'string' ? [options.split] : options.split;
  const splits = requested.map((s) => resolveSplit('roco', s, ROCO_SPLITS, { val: 'validation' }));
  const subset = options.subset ?? 'radiology';
  const subsets = subset === 'all' ? (['radiology', 'non-radiology'] as const) : [resolveSplit('roco subset', subset, ['radiology', 'non-radiology'] as const)];
  const ids = new IdGuard(options.skipLog);
  for (const split of splits) {
    for (const sub of subsets) {
      const dir = resolve(root, split, sub);
      const file = join(dir, 'captions.txt');
      for await (const { line, text } of readLines(file)) {
        if (text.trim() === '') continue;
        // Split before trimming so that "ID<TAB>" is an empty caption rather than a malformed line.
        const fields = text.split('\t');
        if (fields.length !== 2 || !/^\S+$/.test(fields[0].trim())) {
          options.skipLog.skip('malformed-line', file, line, `expected "ROCO_ID<TAB>caption", got ${fields.length} field(s)`);
          continue;
        }
        const id = fields[0].trim();
        const rawCaption = fields[1];
        const caption = acceptText(rawCaption, minWords, options.skipLog, file, line, id);
        if (caption === undefined) continue;
        if (!ids.accept(id, file, line)) continue;
        const imagePath = join(dir, 'images', `${id}.jpg`);
        if (!(await acceptImage(imagePath, options, file, line, id))) continue;
        yield { id, imagePath, text: caption, source: 'roco', provenance: { file, line } };
      }
    }
  }
}
