import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { SkipLog } from '../skip-log.js';
import { DatasetError, type ReaderOptions } from './types.js';

/** Lines of a text file with their 1-based numbers (LF or CRLF; a UTF-8 BOM is dropped). */
export async function* readLines(file: string): AsyncGenerator<{ line: number; text: string }> {
  await assertFile(file);
  const rl = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  let line = 0;
  for await (const raw of rl) {
    line++;
    yield { line, text: line === 1 && raw.charCodeAt(0) === 0xfeff ? raw.slice(1) : raw };
  }
}

/** The parsed value of every non-blank line of a JSONL file; a line that is not JSON is skipped as `malformed-line`. */
export async function* readJsonLines(file: string, log: SkipLog): AsyncGenerator<{ line: number; value: unknown }> {
  for await (const { line, text } of readLines(file)) {
    if (text.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      log.skip('malformed-line', file, line, `not JSON: ${(e as Error).message}`);
      continue;
    }
    yield { line, value };
  }
}

export async function assertFile(file: string): Promise<void> {
  let isFile = false;
  try {
    isFile = (await stat(file)).isFile();
  } catch {
    throw new DatasetError(`annotation file not found: ${file}`);
  }
  if (!isFile) throw new DatasetError(`expected a file, found a directory: ${file}`);
}

export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Parses a whole JSON file that must hold an array (VQA-RAD, SLAKE). */
export async function readJsonArray(file: string): Promise<unknown[]> {
  await assertFile(file);
  const text = await readFile(file, 'utf8');
  let value: unknown;
  try {
    value = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (e) {
    throw new DatasetError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(value)) throw new DatasetError(`${file}: expected a JSON array of records, got ${typeof value}`);
  return value;
}

/** Trim and collapse every whitespace run to one space (the official `re.sub(r"\s+", " ", text.strip())`). */
export function collapseWhitespace(text: string): string {
  return text.trim().replace(/\s+/g, ' ');
}

export function wordCount(text: string): number {
  const t = text.trim();
  return t === '' ? 0 : t.split(/\s+/).length;
}

export function resolveMinWords(options: ReaderOptions): number {
  const minWords = options.minWords ?? 3;
  if (!Number.isInteger(minWords) || minWords < 0) {
    throw new DatasetError(`minWords must be an integer >= 0, got ${String(minWords)}`);
  }
  return minWords;
}

/**
 * Collapses whitespace and applies the word filter; logs `empty-text` / `too-short-text` and returns undefined
 * when the text is not kept.
 */
export function acceptText(
  raw: unknown,
  minWords: number,
  log: SkipLog,
  file: string,
  line: number,
  what: string,
): string | undefined {
  const text = typeof raw === 'string' ? collapseWhitespace(raw) : '';
  if (text === '') {
    log.skip('empty-text', file, line, `${what}: empty`);
    return undefined;
  }
  const words = wordCount(text);
  if (words < minWords) {
    log.skip('too-short-text', file, line, `${what}: ${words} word(s), need ${minWords}: ${JSON.stringify(text)}`);
    return undefined;
  }
  return text;
}

/**
 * True when the image may be used: present and non-empty (or `requireImages: false`). A missing file is
 * `missing-image`, a zero-byte file `unreadable-image`; decoding is checked later, where the image is decoded.
 */
export async function acceptImage(
  imagePath: string,
  options: ReaderOptions,
  file: string,
  line: number,
  id: string,
): Promise<boolean> {
  if (options.requireImages === false) return true;
  let size: number;
  try {
    const s = await stat(imagePath);
    if (!s.isFile()) {
      options.skipLog.skip('missing-image', file, line, `${id}: not a file: ${imagePath}`);
      return false;
    }
    size = s.size;
  } catch {
    options.skipLog.skip('missing-image', file, line, `${id}: ${imagePath}`);
    return false;
  }
  if (size === 0) {
    options.skipLog.skip('unreadable-image', file, line, `${id}: zero-byte file ${imagePath}`);
    return false;
  }
  return true;
}

/** Remembers ids and logs `duplicate-id` for a repeat (with the line of the first occurrence). */
export class IdGuard {
  private readonly seen = new Map<string, number>();
  constructor(private readonly log: SkipLog) {}

  /** True the first time `id` is seen. */
  accept(id: string, file: string, line: number): boolean {
    const first = this.seen.get(id);
    if (first !== undefined) {
      this.log.skip('duplicate-id', file, line, `${id} (first at line ${first})`);
      return false;
    }
    this.seen.set(id, line);
    return true;
  }
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A non-empty string field, or a number/boolean shown as a string; undefined otherwise. */
export function stringField(obj: Record<string, unknown>, key: string): string | undefined {
  const v = obj[key];
  if (typeof v === 'string') return v.trim() === '' ? undefined : v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return undefined;
}

/** Validates a `split` option against the allowed names (with aliases) and returns the canonical name. */
export function resolveSplit<S extends string>(
  reader: string,
  split: string,
  allowed: readonly S[],
  aliases: Record<string, S> = {},
): S {
  const canonical = aliases[split] ?? (allowed as readonly string[]).find((s) => s === split);
  if (canonical === undefined) {
    throw new DatasetError(`${reader}: split must be one of ${allowed.join(', ')}, got ${JSON.stringify(split)}`);
  }
  return canonical as S;
}
