import { join, resolve } from 'node:path';
import { acceptImage, acceptText, IdGuard, isRecord, readJsonLines, resolveMinWords, resolveSplit } from './common.js';
import type { PairRecord, ReaderOptions } from './types.js';

export const MEDPIX_SPLITS = ['train', 'dev', 'test'] as const;
export type MedpixSplit = (typeof MEDPIX_SPLITS)[number];

export interface MedpixOptions extends ReaderOptions {
  /** `validation` and `val` are accepted for `dev`. @defaultValue 'train' */
  split?: MedpixSplit | 'validation' | 'val';
}

/**
 * MedPix 2.0: `ROOT/descriptions_{split}.jsonl`, one image per line
 * `{Type, U_id, image, Description: {Caption, Modality, Plane, ...}, Location, ...}`, image at
 * `ROOT/images_288/{image}.jpg`. The text is `Description.Caption` alone, whitespace collapsed: it is the
 * per-image free-text caption written by the radiologist, the counterpart of a ROCO caption. Modality, Plane
 * and Location are structured fields that the caption usually already states; prefixing them would teach the
 * model a template. Captions under `minWords` words (e.g. just "pelvis") are skipped as `too-short-text`.
 * The id is the `image` field (`MPX1024_synpic40275`); several images of a case share a caption.
 */
export async function* readMedpix(root: string, options: MedpixOptions): AsyncGenerator<PairRecord> {
  const minWords = resolveMinWords(options);
  const split = resolveSplit('medpix', options.split ?? 'train', MEDPIX_SPLITS, { validation: 'dev', val: 'dev' });
  const file = resolve(root, `descriptions_${split}.jsonl`);
  const imageDir = resolve(root, 'images_288');
  const log = options.skipLog;
  const ids = new IdGuard(log);
  for await (const { line, value: rec } of readJsonLines(file, log)) {
    if (!isRecord(rec) || typeof rec['image'] !== 'string' || rec['image'].trim() === '' || !isRecord(rec['Description'])) {
      log.skip('malformed-line', file, line, 'expected {"image": string, "Description": {"Caption": ...}, ...}');
      continue;
    }
    const id = rec['image'].trim();
    const caption = acceptText(rec['Description']['Caption'], minWords, log, file, line, `${id} Description.Caption`);
    if (caption === undefined) continue;
    if (!ids.accept(id, file, line)) continue;
    const imagePath = join(imageDir, `${id}.jpg`);
    if (!(await acceptImage(imagePath, options, file, line, id))) continue;
    yield { id, imagePath, text: caption, source: 'medpix', provenance: { file, line } };
  }
}
