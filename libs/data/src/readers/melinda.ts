import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { acceptImage, acceptText, assertFile, exists, IdGuard, resolveMinWords } from './common.js';
import { parseCsv } from './csv.js';
import { DatasetError, type ClassificationRecord, type ReaderOptions } from './types.js';

/** Label columns kept besides every `*_label` column (the fine-grained method labels). */
export const MELINDA_EXTRA_LABEL_COLUMNS = ['i_meth', 'p_meth'] as const;

export interface MelindaOptions extends ReaderOptions {
  /**
   * Folder of the figure files.
   * @defaultValue the first that exists beside the CSV: `melinda_images/`, `figures/`, `images/`, else the CSV's folder
   */
  imageDir?: string;
}

/**
 * MELINDA: a CSV (RFC 4180) with a header holding `figure_file`, `caption` and label columns; every column whose
 * name ends in `_label`, plus `i_meth` and `p_meth` when present, goes into `labels` (M3AE fine-tunes on
 * `p_meth_label`, 7 classes). Image `{imageDir}/{figure_file}`; id `figure_file`. The caption passes the
 * `minWords` filter (default 3) like pre-training text; a row without any label value is malformed.
 */
export async function* readMelinda(file: string, options: MelindaOptions): AsyncGenerator<ClassificationRecord> {
  const path = resolve(file);
  await assertFile(path);
  const minWords = resolveMinWords(options);
  const imageDir = options.imageDir ? resolve(options.imageDir) : await defaultImageDir(dirname(path));
  const log = options.skipLog;
  const ids = new IdGuard(log);
  const rows = parseCsv(await readFile(path, 'utf8'));
  const header = rows.next();
  if (header.done) return;
  if ('error' in header.value) throw new DatasetError(`${path}: unreadable header row: ${header.value.error}`);
  const names = header.value.fields.map((n) => n.trim());
  const figureCol = names.indexOf('figure_file');
  const captionCol = names.indexOf('caption');
  const labelCols = names
    .map((n, i) => ({ n, i }))
    .filter(({ n }) => n.endsWith('_label') || (MELINDA_EXTRA_LABEL_COLUMNS as readonly string[]).includes(n));
  if (figureCol < 0 || captionCol < 0 || labelCols.length === 0) {
    throw new DatasetError(`${path}: header ${JSON.stringify(names)} needs figure_file, caption and at least one *_label column`);
  }
  for (const row of rows) {
    if ('error' in row) {
      log.skip('malformed-line', path, row.line, row.error);
      continue;
    }
    const { line, fields } = row;
    if (fields.length !== names.length) {
      log.skip('malformed-line', path, line, `expected ${names.length} fields as in the header, got ${fields.length}`);
      continue;
    }
    const figure = fields[figureCol].trim();
    if (figure === '') {
      log.skip('malformed-line', path, line, 'empty figure_file');
      continue;
    }
    const labels: Record<string, string> = {};
    for (const { n, i } of labelCols) {
      const v = fields[i].trim();
      if (v !== '') labels[n] = v;
    }
    if (Object.keys(labels).length === 0) {
      log.skip('malformed-line', path, line, `${figure}: no label value in ${labelCols.map((c) => c.n).join(', ')}`);
      continue;
    }
    const text = acceptText(fields[captionCol], minWords, log, path, line, figure);
    if (text === undefined) continue;
    if (!ids.accept(figure, path, line)) continue;
    const imagePath = join(imageDir, figure);
    if (!(await acceptImage(imagePath, options, path, line, figure))) continue;
    yield { id: figure, imagePath, text, labels, source: 'melinda', provenance: { file: path, line } };
  }
}

async function defaultImageDir(base: string): Promise<string> {
  for (const name of ['melinda_images', 'figures', 'images']) {
    if (await exists(join(base, name))) return join(base, name);
  }
  return base;
}
