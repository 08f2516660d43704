import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';

/**
 * Text for vocabulary training. Images are irrelevant here, so these are small text-only extractors of the real
 * corpora (no image checks, every split that exists), not the pair readers.
 */
export const TEXT_SOURCE_KINDS = ['text', 'roco', 'medpix', 'iu-xray', 'medicat'] as const;
export type TextSourceKind = (typeof TEXT_SOURCE_KINDS)[number];

export interface TextSource {
  kind: TextSourceKind;
  path: string;
}

export class TextSourceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TextSourceError';
  }
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/**
 * `kind:PATH`, or a bare PATH whose kind is recognised from its layout: a ROCO root (`*\/radiology/captions.txt`
 * below it), a MedPix 2.0 folder (`descriptions_*.jsonl`), an IU X-ray `annotation.json`, a MedICaT `.jsonl`
 * with `s2_caption`, anything else a plain text file (one text per line).
 */
export async function parseTextSource(spec: string): Promise<TextSource> {
  const m = /^([a-z-]+):(.+)$/.exec(spec);
  if (m && (TEXT_SOURCE_KINDS as readonly string[]).includes(m[1] as string)) {
    return { kind: m[1] as TextSourceKind, path: m[2] as string };
  }
  if (await isDir(spec)) {
    const names = await readdir(spec);
    if (names.some((n) => /^descriptions_.*\.jsonl$/.test(n))) return { kind: 'medpix', path: spec };
    if ((await findFiles(spec, 'captions.txt', 3)).length > 0) return { kind: 'roco', path: spec };
    if (names.includes('annotation.json')) return { kind: 'iu-xray', path: join(spec, 'annotation.json') };
    throw new TextSourceError(`text source ${spec}: a folder that is neither ROCO, MedPix 2.0 nor IU X-ray; expected kind:PATH with kind one of ${TEXT_SOURCE_KINDS.join(', ')}`);
  }
  if (!(await isFile(spec))) throw new TextSourceError(`text source ${spec}: no such file or folder`);
  if (basename(spec) === 'annotation.json') return { kind: 'iu-xray', path: spec };
  if (spec.endsWith('.jsonl')) {
    const head = (await readFile(spec, 'utf8')).slice(0, 4096);
    if (head.includes('"s2_caption"')) return { kind: 'medicat', path: spec };
  }
  return { kind: 'text', path: spec };
}

async function findFiles(dir: string, name: string, depth: number): Promise<string[]> {
  const out: string[] = [];
  for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = join(dir, entry.name);
    if (entry.isFile() && entry.name === name) out.push(p);
    else if (entry.isDirectory() && depth > 0 && entry.name !== 'images') out.push(...(await findFiles(p, name, depth - 1)));
  }
  return out;
}

function clean(text: unknown): string | undefined {
  if (typeof text !== 'string') return undefined;
  const t = text.trim().replace(/\s+/g, ' ');
  return t === '' ? undefined : t;
}

function* jsonLines(text: string, file: string): Generator<Record<string, unknown>> {
  let line = 0;
  for (const raw of text.split('\n')) {
    line++;
    if (raw.trim() === '') continue;
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch {
      throw new TextSourceError(`${file}:${line}: not valid JSON`);
    }
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) yield v as Record<string, unknown>;
  }
}

/** The texts of one source, whitespace-collapsed, empty ones dropped, in file order. */
export async function* readTexts(source: TextSource): AsyncGenerator<string> {
  switch (source.kind) {
    case 'text': {
      for (const line of (await readFile(source.path, 'utf8')).split('\n')) {
        const t = clean(line);
        if (t) yield t;
      }
      return;
    }
    case 'roco': {
      const files = await findFiles(source.path, 'captions.txt', 3);
      if (files.length === 0) throw new TextSourceError(`roco ${source.path}: no captions.txt below it (expected {split}/{radiology,non-radiology}/captions.txt)`);
      for (const f of files) {
        for (const line of (await readFile(f, 'utf8')).split('\n')) {
          const tab = line.indexOf('\t');
          const t = tab >= 0 ? clean(line.slice(tab + 1)) : undefined;
          if (t) yield t;
        }
      }
      return;
    }
    case 'medpix': {
      const files = (await readdir(source.path)).filter((n) => /^descriptions_.*\.jsonl$/.test(n)).sort();
      if (files.length === 0) throw new TextSourceError(`medpix ${source.path}: no descriptions_*.jsonl in it`);
      for (const f of files) {
        const p = join(source.path, f);
        for (const rec of jsonLines(await readFile(p, 'utf8'), p)) {
          const d = rec['Description'];
          const t = typeof d === 'object' && d !== null ? clean((d as Record<string, unknown>)['Caption']) : undefined;
          if (t) yield t;
        }
      }
      return;
    }
    case 'iu-xray': {
      let json: unknown;
      try {
        json = JSON.parse(await readFile(source.path, 'utf8'));
      } catch (e) {
        throw new TextSourceError(`iu-xray ${source.path}: not readable JSON (${(e as Error).message})`);
      }
      if (typeof json !== 'object' || json === null) throw new TextSourceError(`iu-xray ${source.path}: expected an object of splits`);
      // Keys in file order: train, val and the test split whose key is four spaces.
      for (const split of Object.values(json as Record<string, unknown>)) {
        if (!Array.isArray(split)) continue;
        for (const rec of split) {
          const t = typeof rec === 'object' && rec !== null ? clean((rec as Record<string, unknown>)['report']) : undefined;
          if (t) yield t;
        }
      }
      return;
    }
    case 'medicat': {
      for (const rec of jsonLines(await readFile(source.path, 'utf8'), source.path)) {
        const caption = clean(rec['s2_caption']);
        if (caption) yield caption;
        const refs = rec['s2orc_references'];
        if (Array.isArray(refs)) {
          for (const r of refs) {
            const t = clean(r);
            if (t) yield t;
          }
        }
      }
      return;
    }
  }
}
