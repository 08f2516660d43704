import { readdir } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { readManifest } from '../readers/manifest.js';
import { readMedpix } from '../readers/medpix.js';
import { readMelinda } from '../readers/melinda.js';
import { readRoco } from '../readers/roco.js';
import { DatasetError, type PairRecord, type Provenance, type VqaRecord } from '../readers/types.js';
import { readSlake, readVqaMed2019, readVqaRad } from '../readers/vqa.js';
import type { SkipLog } from '../skip-log.js';
import { internKey } from '../intern.js';
import { normalizeAnswer } from './answers.js';
import { carveByGroup, normalizeQuestion, pairComponents, SplitError, validateCarveSpec, type CarveSpec } from './splits.js';

/**
 * The downstream datasets as M3AE fine-tunes on them, split honestly: a validation split that is not the test
 * split (the official VQA-RAD "validation" file is a copy of the test file), and — where a dataset ships no test
 * labels here — a held-out split carved from the training file, disjoint by image (or, on request, by question:
 * `CarveSpec.groupBy`).
 *
 * Split names: `train`, `val` (model selection), `test` (the dataset's test file, read once at the end) and
 * `holdout` (a second carve of the training file, for when the test file is not available).
 */
export const TASK_SPLITS = ['train', 'val', 'test', 'holdout'] as const;
export type TaskSplit = (typeof TASK_SPLITS)[number];

export const VQA_TASKS = ['vqa-rad', 'slake', 'vqa-med-2019'] as const;
export type VqaTaskName = (typeof VQA_TASKS)[number];

export type AnswerType = 'OPEN' | 'CLOSED';

export interface VqaExample {
  id: string;
  imagePath: string;
  question: string;
  /** The normalised answer (`normalizeAnswer`): what the vocabulary holds and predictions are compared with. */
  answer: string;
  /** As in the file. */
  rawAnswer: string;
  answerType: AnswerType;
  provenance: Provenance;
}

export interface TaskReadOptions {
  skipLog: SkipLog;
  /** @defaultValue true; false reads annotations without checking image files (format checks, text-only uses). */
  requireImages?: boolean;
}

export interface VqaReadOptions extends TaskReadOptions {
  /**
   * How `val` (and `holdout`) are carved from VQA-RAD's `trainset.json`: by image, or by question with
   * `groupBy: 'question'` (see {@link vqaRadCarveGroup}).
   * @defaultValue DEFAULT_VQA_RAD_CARVE
   */
  carve?: CarveSpec;
  /** VQA-Med 2019 categories. @defaultValue ['modality', 'plane', 'organ'] (C1–C3, as M3AE reports) */
  categories?: readonly string[];
}

/** VQA-RAD has no validation file of its own: 10% of the training questions, by image, seed 0. */
export const DEFAULT_VQA_RAD_CARVE: CarveSpec = { seed: 0, valFraction: 0.1, testFraction: 0 };

/**
 * The carve group of a VQA-RAD question: its image (`groupBy: 'image'`, the default: carved splits share no image), or
 * its image and normalised question (`'question'`: carved splits share images, as VQA-RAD's official test set shares
 * the training images, but an exact duplicate — the same question about the same image — is never on both sides).
 */
export function vqaRadCarveGroup(e: Pick<VqaExample, 'imagePath' | 'question'>, groupBy: NonNullable<CarveSpec['groupBy']>): string {
  const image = basename(e.imagePath);
  return groupBy === 'question' ? `${image}\u0000${normalizeQuestion(e.question)}` : image;
}

function splitError(task: string, split: string, allowed: readonly string[], why = ''): DatasetError {
  return new DatasetError(`${task}: split must be one of ${allowed.join(', ')}, got ${JSON.stringify(split)}${why ? ` (${why})` : ''}`);
}

async function collect<T>(gen: AsyncGenerator<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of gen) out.push(x);
  return out;
}

function toVqaExamples(records: readonly VqaRecord[], log: SkipLog, defaultType?: AnswerType): VqaExample[] {
  const out: VqaExample[] = [];
  for (const r of records) {
    const type = r.answerType ?? defaultType;
    if (type !== 'OPEN' && type !== 'CLOSED') {
      log.skip('malformed-line', r.provenance.file, r.provenance.line, `${r.id}: answer_type ${JSON.stringify(r.answerType)}; expected OPEN or CLOSED`);
      continue;
    }
    const answer = normalizeAnswer(r.answer);
    if (answer === '') {
      log.skip('empty-text', r.provenance.file, r.provenance.line, `${r.id}: answer ${JSON.stringify(r.answer)} is empty once normalised`);
      continue;
    }
    out.push({ id: r.id, imagePath: r.imagePath, question: r.question, answer, rawAnswer: r.answer, answerType: type, provenance: r.provenance });
  }
  return out;
}

/** The split folder of a VQA-Med 2019 release root (`…Training…`, `…Validation…`, `…Test…`), or the root itself. */
async function vqaMedSplitDir(root: string, split: 'train' | 'val' | 'test'): Promise<string> {
  const patterns = { train: /train/i, val: /val/i, test: /test/i };
  const entries = await readdir(root, { withFileTypes: true }).catch(() => {
    throw new DatasetError(`vqa-med-2019: not a folder: ${root}`);
  });
  const dirs = entries.filter((e) => e.isDirectory() && patterns[split].test(e.name) && !/images$/i.test(e.name)).map((e) => e.name).sort();
  if (dirs.length === 0) {
    throw new DatasetError(`vqa-med-2019: no ${split} folder in ${root}; expected a subfolder whose name matches ${String(patterns[split])} (e.g. ImageClef-2019-VQA-Med-Training)`);
  }
  return join(root, dirs[0] as string);
}

/** Reads one split of a VQA dataset (normalised answers, OPEN/CLOSED types). */
export async function readVqaTaskSplit(task: VqaTaskName, root: string, split: TaskSplit, options: VqaReadOptions): Promise<VqaExample[]> {
  const log = options.skipLog;
  const reader = { skipLog: log, requireImages: options.requireImages ?? true };
  switch (task) {
    case 'vqa-rad': {
      if (split === 'test') return toVqaExamples(await collect(readVqaRad(root, { ...reader, split: 'test' })), log);
      const carve = validateCarveSpec(options.carve ?? DEFAULT_VQA_RAD_CARVE, 'vqa-rad carve');
      if (split === 'holdout' && carve.testFraction === 0) throw splitError(task, split, ['train', 'val', 'test'], 'holdout needs a carve with testFraction > 0: fine-tune with --holdout-fraction F (task.carve.testFraction) to keep one');
      const all = toVqaExamples(await collect(readVqaRad(root, { ...reader, split: 'train' })), log);
      const carved = carveByGroup(all, (e) => vqaRadCarveGroup(e, carve.groupBy), carve);
      return split === 'holdout' ? carved.test : carved[split];
    }
    case 'slake': {
      if (split === 'holdout') throw splitError(task, split, ['train', 'val', 'test'], 'SLAKE has its own validation and test files');
      const file = split === 'val' ? 'validate' : split;
      return toVqaExamples(await collect(readSlake(root, { ...reader, split: file })), log);
    }
    case 'vqa-med-2019': {
      if (split === 'holdout') throw splitError(task, split, ['train', 'val', 'test'], 'VQA-Med 2019 has its own validation and test folders');
      const dir = await vqaMedSplitDir(resolve(root), split);
      const categories = options.categories ?? ['modality', 'plane', 'organ'];
      // The official preprocessing marks every VQA-Med 2019 question OPEN.
      return toVqaExamples(await collect(readVqaMed2019(dir, { ...reader, categories })), log, 'OPEN');
    }
  }
}

export interface ClassificationExample {
  id: string;
  imagePath: string;
  text: string;
  /** The value of the chosen label column. */
  label: string;
  provenance: Provenance;
}

export interface ClassificationReadOptions extends TaskReadOptions {
  /** @defaultValue 'p_meth_label' (M3AE's reported MELINDA setting, 7 classes) */
  labelColumn?: string;
}

/** MELINDA's official file names per split (`prepro_cls_melinda`). */
export const MELINDA_FILES: Readonly<Record<'train' | 'val' | 'test', string>> = { train: 'train.csv', val: 'dev.csv', test: 'test.csv' };

/** One split of MELINDA (`ROOT/{train,dev,test}.csv`) with the label of one column. */
export async function readClassificationSplit(root: string, split: TaskSplit, options: ClassificationReadOptions): Promise<ClassificationExample[]> {
  if (split === 'holdout') throw splitError('melinda', split, ['train', 'val', 'test'], 'MELINDA has its own dev and test files');
  const column = options.labelColumn ?? 'p_meth_label';
  const file = join(resolve(root), MELINDA_FILES[split]);
  const out: ClassificationExample[] = [];
  let missing = 0;
  for await (const r of readMelinda(file, { skipLog: options.skipLog, requireImages: options.requireImages ?? true })) {
    const label = r.labels[column];
    if (label === undefined) {
      options.skipLog.skip('malformed-line', r.provenance.file, r.provenance.line, `${r.id}: no value in label column ${column}`);
      missing++;
      continue;
    }
    out.push({ id: r.id, imagePath: r.imagePath, text: r.text, label, provenance: r.provenance });
  }
  // No row with the column at all: the option is wrong for this file (a typo), not a few bad rows.
  if (out.length === 0 && missing > 0) throw new DatasetError(`${file}: no row has a value in label column ${JSON.stringify(column)}`);
  return out;
}

export const RETRIEVAL_SOURCES = ['roco', 'medpix', 'manifest'] as const;
export type RetrievalSource = (typeof RETRIEVAL_SOURCES)[number];

export interface RetrievalReadOptions extends TaskReadOptions {
  /**
   * How splits the source does not have are carved (by connected image–caption group): MedPix `val` from its
   * train split (its dev split is the test split); a manifest's `val` and `test` from the one file.
   * @defaultValue { seed: 0, valFraction: 0.1, testFraction: 0.1 for a manifest, 0 for MedPix }
   */
  carve?: CarveSpec;
}

/** One image–caption pair of a retrieval set. */
export interface RetrievalPair {
  id: string;
  imagePath: string;
  text: string;
}

function carveRetrieval(pairs: readonly PairRecord[], carve: CarveSpec): { train: PairRecord[]; val: PairRecord[]; test: PairRecord[] } {
  if ((carve.groupBy ?? 'image') !== 'image') {
    throw new SplitError(`retrieval carve.groupBy: got ${JSON.stringify(carve.groupBy)}; expected image (retrieval pairs are carved by image–caption component)`);
  }
  const groups = pairComponents(pairs.map((p) => ({ imageKey: p.imagePath, text: p.text })));
  const keyOf = new Map<PairRecord, string>();
  pairs.forEach((p, i) => keyOf.set(p, groups[i] as string));
  return carveByGroup(pairs, (p) => keyOf.get(p) as string, carve);
}

/** Reads one split of a retrieval source: ROCO (its own splits), MedPix (val carved from train, test = dev), a manifest. */
export async function readRetrievalSplit(source: RetrievalSource, input: string, split: TaskSplit, options: RetrievalReadOptions): Promise<RetrievalPair[]> {
  const reader = { skipLog: options.skipLog, requireImages: options.requireImages ?? true };
  let pairs: PairRecord[];
  switch (source) {
    case 'roco': {
      if (split === 'holdout') throw splitError(source, split, ['train', 'val', 'test'], 'ROCO has its own validation and test folders');
      pairs = await collect(readRoco(input, { ...reader, split: split === 'val' ? 'validation' : split }));
      break;
    }
    case 'medpix': {
      if (split === 'holdout') throw splitError(source, split, ['train', 'val', 'test'], 'MedPix test = its dev split');
      if (split === 'test') {
        pairs = await collect(readMedpix(input, { ...reader, split: 'dev' }));
      } else {
        const carve = options.carve ?? { seed: 0, valFraction: 0.1, testFraction: 0 };
        pairs = carveRetrieval(await collect(readMedpix(input, { ...reader, split: 'train' })), carve)[split];
      }
      break;
    }
    case 'manifest': {
      if (split === 'holdout') throw splitError(source, split, ['train', 'val', 'test'], 'a manifest\'s test split is carved from it');
      const carve = options.carve ?? { seed: 0, valFraction: 0.1, testFraction: 0.1 };
      pairs = carveRetrieval(await collect(readManifest(input, reader)), carve)[split];
      break;
    }
  }
  return pairs.map((p) => ({ id: p.id, imagePath: p.imagePath, text: p.text }));
}

/**
 * Distinct images and distinct captions of a set of pairs, with the links between them. A caption that several
 * images share (MedPix: one caption per case) is one text linked to each of those images: retrieving any of them
 * for it counts as correct, and it for any of them.
 */
export interface RetrievalSet {
  pairs: readonly RetrievalPair[];
  /** Distinct image paths, in order of first appearance. */
  images: readonly string[];
  /** Distinct texts, in order of first appearance. */
  texts: readonly string[];
  /** Per pair: its image and text index. */
  pairImage: Int32Array;
  pairText: Int32Array;
  /** Per text: the images it describes (ascending). */
  textImages: readonly (readonly number[])[];
  /** Per image: its texts (ascending). */
  imageTexts: readonly (readonly number[])[];
}

export function buildRetrievalSet(pairs: readonly RetrievalPair[]): RetrievalSet {
  const imageIndex = new Map<string, number>();
  const textIndex = new Map<string, number>();
  const images: string[] = [];
  const texts: string[] = [];
  const pairImage = new Int32Array(pairs.length);
  const pairText = new Int32Array(pairs.length);
  const links = new Set<string>();
  const textImages: number[][] = [];
  const imageTexts: number[][] = [];
  pairs.forEach((p, k) => {
    const i = internKey(imageIndex, p.imagePath, () => {
      images.push(p.imagePath);
      imageTexts.push([]);
    });
    const t = internKey(textIndex, p.text, () => {
      texts.push(p.text);
      textImages.push([]);
    });
    pairImage[k] = i;
    pairText[k] = t;
    const link = `${i}:${t}`;
    if (!links.has(link)) {
      links.add(link);
      (textImages[t] as number[]).push(i);
      (imageTexts[i] as number[]).push(t);
    }
  });
  for (const l of textImages) l.sort((a, b) => a - b);
  for (const l of imageTexts) l.sort((a, b) => a - b);
  return { pairs, images, texts, pairImage, pairText, textImages, imageTexts };
}

/**
 * The first `limit` distinct images (in a seeded order) and every pair of theirs: how a retrieval evaluation is
 * made affordable (M3AE evaluates on 2,000 ROCO pairs).
 */
export function limitRetrievalPairs(pairs: readonly RetrievalPair[], limit: number, seed: number): RetrievalPair[] {
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit must be a positive integer, got ${String(limit)}`);
  const imgs = [...new Set(pairs.map((p) => p.imagePath))];
  if (imgs.length <= limit) return [...pairs];
  const keep = new Set(carveByGroup(imgs, (x) => x, { seed, valFraction: limit / imgs.length }).val);
  return pairs.filter((p) => keep.has(p.imagePath));
}
