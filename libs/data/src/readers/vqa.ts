import { readdir } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { SkipLog } from '../skip-log.js';
import { acceptImage, collapseWhitespace, exists, IdGuard, isDirectory, isRecord, readJsonArray, readLines, resolveSplit, stringField } from './common.js';
import { DatasetError, type ReaderOptions, type VqaRecord } from './types.js';

export type VqaReaderOptions = Omit<ReaderOptions, 'minWords'>;

export const VQA_RAD_SPLITS = ['train', 'test'] as const;
export type VqaRadSplit = (typeof VQA_RAD_SPLITS)[number];

/** Question and answer must be non-empty after whitespace collapsing; returns undefined after logging otherwise. */
function acceptQa(question: unknown, answer: unknown, log: SkipLog, file: string, line: number, id: string): { question: string; answer: string } | undefined {
  const q = typeof question === 'string' ? collapseWhitespace(question) : '';
  const a = typeof answer === 'string' ? collapseWhitespace(answer) : typeof answer === 'number' || typeof answer === 'boolean' ? String(answer) : '';
  if (q === '' || a === '') {
    log.skip('empty-text', file, line, `${id}: empty ${q === '' ? 'question' : 'answer'}`);
    return undefined;
  }
  return { question: q, answer: a };
}

/**
 * VQA-RAD in the MEVF layout M3AE reads: `ROOT/{trainset,testset}.json` (a list of
 * `{qid, image_name, answer, answer_type, question_type, question, ...}`), images in `ROOT/images/`.
 * `answer_type` is trimmed and upper-cased (the release has `"CLOSED "`); numeric answers become strings.
 * The id is `qid`; provenance.line is the 1-based element number.
 */
export async function* readVqaRad(root: string, options: VqaReaderOptions & { split?: VqaRadSplit }): AsyncGenerator<VqaRecord> {
  const split = resolveSplit('vqa-rad', options.split ?? 'train', VQA_RAD_SPLITS);
  const file = resolve(root, `${split}set.json`);
  const imageDir = resolve(root, 'images');
  yield* readJsonQa(file, imageDir, { source: 'vqa-rad', imageField: 'image_name', categoryField: 'question_type', expected: '{qid, image_name, question, answer, answer_type, ...}' }, options);
}

export const SLAKE_SPLITS = ['train', 'validate', 'test'] as const;
export type SlakeSplit = (typeof SLAKE_SPLITS)[number];

/**
 * SLAKE 1.0: `ROOT/{train,validate,test}.json` (a list of `{qid, img_name, question, answer, q_lang,
 * answer_type, content_type, ...}`), images at `ROOT/imgs/{img_name}`. English only by default (`q_lang == "en"`,
 * as M3AE); `language: 'all'` keeps both. Id: `qid`.
 */
export async function* readSlake(
  root: string,
  options: VqaReaderOptions & { split?: SlakeSplit | 'validation' | 'val'; language?: 'en' | 'zh' | 'all' },
): AsyncGenerator<VqaRecord> {
  const split = resolveSplit('slake', options.split ?? 'train', SLAKE_SPLITS, { validation: 'validate', val: 'validate' });
  const language = options.language ?? 'en';
  if (!['en', 'zh', 'all'].includes(language)) throw new DatasetError(`slake: language must be en, zh or all, got ${JSON.stringify(language)}`);
  const file = resolve(root, `${split}.json`);
  const imageDir = resolve(root, 'imgs');
  yield* readJsonQa(
    file,
    imageDir,
    {
      source: 'slake',
      imageField: 'img_name',
      categoryField: 'content_type',
      expected: '{qid, img_name, question, answer, q_lang, ...}',
      keep: (rec) => language === 'all' || rec['q_lang'] === language,
    },
    options,
  );
}

/** Where a JSON question list keeps its fields (VQA-RAD and SLAKE differ only in these). */
interface JsonQaLayout {
  source: 'vqa-rad' | 'slake';
  imageField: string;
  categoryField: string;
  /** The record shape named in a `malformed-line` skip. */
  expected: string;
  /** Records to read (the others are passed over silently: not malformed, just not wanted). */
  keep?: (rec: Record<string, unknown>) => boolean;
}

/** The questions of a JSON list of `{qid, <image>, question, answer, answer_type, <category>}` records. */
async function* readJsonQa(file: string, imageDir: string, layout: JsonQaLayout, options: VqaReaderOptions): AsyncGenerator<VqaRecord> {
  const log = options.skipLog;
  const ids = new IdGuard(log);
  const items = await readJsonArray(file);
  for (let k = 0; k < items.length; k++) {
    const line = k + 1;
    const rec = items[k];
    const qid = isRecord(rec) ? stringField(rec, 'qid') : undefined;
    const imageName = isRecord(rec) ? stringField(rec, layout.imageField) : undefined;
    if (!isRecord(rec) || qid === undefined || imageName === undefined) {
      log.skip('malformed-line', file, line, `expected ${layout.expected}`);
      continue;
    }
    if (layout.keep && !layout.keep(rec)) continue;
    const qa = acceptQa(rec['question'], rec['answer'], log, file, line, qid);
    if (!qa) continue;
    if (!ids.accept(qid, file, line)) continue;
    const imagePath = join(imageDir, imageName.trim());
    if (!(await acceptImage(imagePath, options, file, line, qid))) continue;
    yield {
      id: qid,
      imagePath,
      ...qa,
      answerType: stringField(rec, 'answer_type')?.trim().toUpperCase(),
      category: stringField(rec, layout.categoryField)?.trim(),
      source: layout.source,
      provenance: { file, line },
    };
  }
}

/** VQA-Med 2019 categories by the number in `QAPairsByCategory/C{n}_*.txt`. */
export const VQA_MED_2019_CATEGORIES = ['modality', 'plane', 'organ', 'abnormality'] as const;

export interface VqaMed2019Options extends VqaReaderOptions {
  /** Keep only these categories (files whose category is unknown are kept). @defaultValue all */
  categories?: readonly string[];
  /** @defaultValue the folder beside the QA files whose name ends in `images` (any case) */
  imageDir?: string;
}

/**
 * ImageCLEF VQA-Med 2019. `input` is a release folder or one QA file:
 * - a folder with `QAPairsByCategory/` reads every `*.txt` in it (category from the file name, e.g.
 *   `C1_Modality_train.txt` → `modality`); otherwise its `All_QA_Pairs_*.txt` files (no category); otherwise
 *   every `*.txt` directly in it;
 * - lines are `imageid|question|answer`, or `imageid|category|question|answer` (the test file with reference
 *   answers); answers may contain `|` only in the last field, which is kept whole;
 * - images are `{imageDir}/{imageid}.jpg`, imageDir being the `*images` folder of the release (e.g.
 *   `Train_images`, `Val_images`, `VQAMed2019_Test_Images`).
 * The id is `{imageid}|{question}` (each image has one question per category).
 */
export async function* readVqaMed2019(input: string, options: VqaMed2019Options): AsyncGenerator<VqaRecord> {
  const path = resolve(input);
  const { files, root } = await vqaMedFiles(path);
  const imageDir = options.imageDir ? resolve(options.imageDir) : await findImageDir(root);
  const wanted = options.categories?.map((c) => c.toLowerCase());
  const log = options.skipLog;
  const ids = new IdGuard(log);
  for (const file of files) {
    const fileCategory = categoryFromName(basename(file));
    for await (const { line, text } of readLines(file)) {
      if (text.trim() === '') continue;
      const fields = text.split('|');
      let imageId: string, question: string, answer: string;
      let category = fileCategory;
      if (fields.length === 3) {
        [imageId, question, answer] = fields as [string, string, string];
      } else if (fields.length >= 4 && (VQA_MED_2019_CATEGORIES as readonly string[]).includes(fields[1].trim().toLowerCase())) {
        imageId = fields[0];
        category = fields[1].trim().toLowerCase();
        question = fields[2];
        answer = fields.slice(3).join('|');
      } else if (fields.length > 3) {
        imageId = fields[0];
        question = fields[1];
        answer = fields.slice(2).join('|');
      } else {
        log.skip('malformed-line', file, line, `expected imageid|question|answer, got ${fields.length} field(s)`);
        continue;
      }
      imageId = imageId.trim();
      if (imageId === '') {
        log.skip('malformed-line', file, line, 'empty image id');
        continue;
      }
      if (wanted && category !== undefined && !wanted.includes(category)) continue;
      const qa = acceptQa(question, answer, log, file, line, imageId);
      if (!qa) continue;
      const id = `${imageId}|${qa.question}`;
      if (!ids.accept(id, file, line)) continue;
      const imagePath = join(imageDir, `${imageId}.jpg`);
      if (!(await acceptImage(imagePath, options, file, line, imageId))) continue;
      yield { id, imagePath, ...qa, category, source: 'vqa-med-2019', provenance: { file, line } };
    }
  }
}

function categoryFromName(name: string): string | undefined {
  const m = /^C([1-4])_/i.exec(name);
  return m ? VQA_MED_2019_CATEGORIES[Number(m[1]) - 1] : undefined;
}

async function vqaMedFiles(path: string): Promise<{ files: string[]; root: string }> {
  if (!(await isDirectory(path))) {
    if (!(await exists(path))) throw new DatasetError(`vqa-med-2019: not found: ${path}`);
    return { files: [path], root: dirname(path) };
  }
  const byCategory = join(path, 'QAPairsByCategory');
  if (await isDirectory(byCategory)) {
    const files = (await readdir(byCategory)).filter((f) => f.toLowerCase().endsWith('.txt')).sort();
    if (files.length > 0) return { files: files.map((f) => join(byCategory, f)), root: path };
  }
  const txt = (await readdir(path)).filter((f) => f.toLowerCase().endsWith('.txt')).sort();
  const all = txt.filter((f) => f.startsWith('All_QA_Pairs'));
  const files = all.length > 0 ? all : txt;
  if (files.length === 0) throw new DatasetError(`vqa-med-2019: no QA .txt files in ${path} (nor in ${byCategory})`);
  return { files: files.map((f) => join(path, f)), root: path };
}

async function findImageDir(root: string): Promise<string> {
  const entries = await readdir(root, { withFileTypes: true });
  const dirs = entries.filter((e) => e.isDirectory() && /images$/i.test(e.name)).map((e) => e.name).sort();
  if (dirs.length === 0) return join(root, 'images');
  return join(root, dirs[0]);
}
