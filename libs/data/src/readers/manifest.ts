import { readFile } from 'node:fs/promises';
import { dirname, extname, isAbsolute, resolve } from 'node:path';
import { acceptImage, acceptText, assertFile, IdGuard, isRecord, readJsonLines, readLines, resolveMinWords } from './common.js';
import { parseCsv } from './csv.js';
import { DatasetError, type PairRecord, type ReaderOptions } from './types.js';

/** Accepted column / key names, matched case-insensitively, first match wins. */
export const MANIFEST_IMAGE_KEYS = ['image', 'image_path', 'imagepath', 'img_path', 'img', 'path', 'file', 'filename', 'file_name'] as const;
export const MANIFEST_TEXT_KEYS = ['text', 'caption', 'texts', 'captions', 'report', 'description'] as const;
export const MANIFEST_ID_KEYS = ['id', 'uid'] as const;

export type ManifestFormat = 'jsonl' | 'csv' | 'tsv';

/** One line of a JSONL manifest in its plainest form: an id, an image path and one text. */
export interface PairManifestLine {
  id: string;
  image: string;
  text: string;
}

export interface ManifestOptions extends ReaderOptions {
  /** @defaultValue from the extension (.jsonl/.ndjson/.json → jsonl, .csv, .tsv), else jsonl if the file starts with `{` */
  format?: ManifestFormat;
}

/**
 * A user's own corpus: JSONL (`{"image": "img/1.png", "text": "..."}` per line; `text` may also be a list of
 * texts, each becoming a pair) or CSV/TSV with a header row (RFC 4180 quoting). Key names are matched
 * case-insensitively against `MANIFEST_IMAGE_KEYS` / `MANIFEST_TEXT_KEYS` / `MANIFEST_ID_KEYS`. Relative image
 * paths are relative to the manifest's folder. The id is the `id` column when present, else `{image}#{line}`;
 * a list of texts gives `{id}#{k}` (k from 1). CSV files are read whole (to recover after a bad quote).
 */
export async function* readManifest(file: string, options: ManifestOptions): AsyncGenerator<PairRecord> {
  const path = resolve(file);
  await assertFile(path);
  const format = options.format ?? (await detectFormat(path));
  const rows = format === 'jsonl' ? jsonlRows(path, options) : csvRows(path, format === 'tsv' ? '\t' : ',', options);
  const minWords = resolveMinWords(options);
  const ids = new IdGuard(options.skipLog);
  const base = dirname(path);
  for await (const { line, image, texts, id } of rows) {
    const where = id ?? `${image}#${line}`;
    const kept: { id: string; text: string }[] = [];
    texts.forEach((raw, k) => {
      const text = acceptText(raw, minWords, options.skipLog, path, line, texts.length > 1 ? `${where} text ${k + 1}` : where);
      if (text !== undefined) kept.push({ id: texts.length > 1 ? `${where}#${k + 1}` : where, text });
    });
    if (kept.length === 0) continue;
    const imagePath = isAbsolute(image) ? image : resolve(base, image);
    const fresh = kept.filter((k) => ids.accept(k.id, path, line));
    if (fresh.length === 0) continue;
    if (!(await acceptImage(imagePath, options, path, line, where))) continue;
    for (const k of fresh) yield { id: k.id, imagePath, text: k.text, source: 'manifest', provenance: { file: path, line } };
  }
}

interface ManifestRow {
  line: number;
  image: string;
  texts: unknown[];
  id: string | undefined;
}

async function detectFormat(path: string): Promise<ManifestFormat> {
  const ext = extname(path).toLowerCase();
  if (ext === '.jsonl' || ext === '.ndjson' || ext === '.json') return 'jsonl';
  if (ext === '.csv') return 'csv';
  if (ext === '.tsv') return 'tsv';
  for await (const { text } of readLines(path)) {
    if (text.trim() !== '') return text.trimStart().startsWith('{') ? 'jsonl' : 'csv';
  }
  return 'jsonl';
}

function pick<K extends string>(keys: readonly K[], names: readonly string[]): number {
  const lower = names.map((n) => n.trim().toLowerCase());
  for (const k of keys) {
    const i = lower.indexOf(k);
    if (i >= 0) return i;
  }
  return -1;
}

async function* jsonlRows(path: string, options: ReaderOptions): AsyncGenerator<ManifestRow> {
  const log = options.skipLog;
  for await (const { line, value: rec } of readJsonLines(path, log)) {
    if (!isRecord(rec)) {
      log.skip('malformed-line', path, line, 'expected a JSON object');
      continue;
    }
    const keys = Object.keys(rec);
    const imageKey = keys[pick(MANIFEST_IMAGE_KEYS, keys)];
    const textKey = keys[pick(MANIFEST_TEXT_KEYS, keys)];
    const idKey = keys[pick(MANIFEST_ID_KEYS, keys)];
    const image = imageKey === undefined ? undefined : rec[imageKey];
    if (typeof image !== 'string' || image.trim() === '') {
      log.skip('malformed-line', path, line, `no image path: expected a non-empty string under one of ${MANIFEST_IMAGE_KEYS.join(', ')}`);
      continue;
    }
    const textValue = textKey === undefined ? undefined : rec[textKey];
    const texts = Array.isArray(textValue) ? textValue : [textValue];
    const idValue = idKey === undefined ? undefined : rec[idKey];
    const id = typeof idValue === 'string' && idValue.trim() !== '' ? idValue.trim() : typeof idValue === 'number' ? String(idValue) : undefined;
    yield { line, image: image.trim(), texts, id };
  }
}

async function* csvRows(path: string, delimiter: string, options: ReaderOptions): AsyncGenerator<ManifestRow> {
  const log = options.skipLog;
  const rows = parseCsv(await readFile(path, 'utf8'), delimiter);
  const header = rows.next();
  if (header.done) return;
  if ('error' in header.value) throw new DatasetError(`${path}: unreadable header row: ${header.value.error}`);
  const names = header.value.fields;
  const imageCol = pick(MANIFEST_IMAGE_KEYS, names);
  const textCol = pick(MANIFEST_TEXT_KEYS, names);
  const idCol = pick(MANIFEST_ID_KEYS, names);
  if (imageCol < 0 || textCol < 0) {
    throw new DatasetError(
      `${path}: header ${JSON.stringify(names)} needs an image column (${MANIFEST_IMAGE_KEYS.join(', ')}) and a text column (${MANIFEST_TEXT_KEYS.join(', ')})`,
    );
  }
  for (const row of rows) {
    if ('error' in row) {
      log.skip('malformed-line', path, row.line, row.error);
      continue;
    }
    if (row.fields.length !== names.length) {
      log.skip('malformed-line', path, row.line, `expected ${names.length} fields as in the header, got ${row.fields.length}`);
      continue;
    }
    const image = row.fields[imageCol].trim();
    if (image === '') {
      log.skip('malformed-line', path, row.line, `empty ${names[imageCol]} column`);
      continue;
    }
    const id = idCol >= 0 && row.fields[idCol].trim() !== '' ? row.fields[idCol].trim() : undefined;
    yield { line: row.line, image, texts: [row.fields[textCol]], id };
  }
}
