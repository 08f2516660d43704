import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sharedDataForTests } from '../shared-data.js';
import { SkipLog } from '../skip-log.js';
import { readMelinda } from './melinda.js';
import { readSlake, readVqaMed2019, readVqaRad } from './vqa.js';

const data = sharedDataForTests(resolve(import.meta.dirname, '../../../..'), 'VQA-RAD / SLAKE tests on the real files');
const work = mkdtempSync(join(tmpdir(), 'm3ae-vqa-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe.skipIf(!data)('readVqaRad on the real training questions', () => {
  it('reads every question with its image, trims answer_type and stringifies numeric answers', async () => {
    const root = join(data ?? '', 'vqa_rad');
    const raw = JSON.parse(readFileSync(join(root, 'trainset.json'), 'utf8')) as { qid: number; answer: unknown; answer_type: string }[];
    const log = new SkipLog();
    const recs = await collect(readVqaRad(root, { split: 'train', skipLog: log }));
    expect(recs.length + log.total).toBe(raw.length);
    expect(log.counts()['missing-image'] ?? 0).toBe(0);
    expect(new Set(recs.map((r) => r.answerType))).toEqual(new Set(['OPEN', 'CLOSED']));
    expect(recs.every((r) => typeof r.answer === 'string' && r.answer !== '' && r.question !== '')).toBe(true);
    const numeric = raw.find((r) => typeof r.answer === 'number');
    if (!numeric) throw new Error('VQA-RAD has numeric answers');
    expect(recs.find((r) => r.id === String(numeric.qid))?.answer).toBe(String(numeric.answer));
    const spaced = raw.find((r) => r.answer_type !== r.answer_type.trim());
    if (!spaced) throw new Error('VQA-RAD has an answer_type with a trailing space');
    expect(recs.find((r) => r.id === String(spaced.qid))?.answerType).toBe(spaced.answer_type.trim());
    expect(existsSync(recs[0].imagePath)).toBe(true);
    expect(recs[0].provenance.line).toBe(1);
  });
});

describe.skipIf(!data)('readSlake on the real question files (images absent here)', () => {
  const root = join(data ?? '', 'slake');
  it('keeps English questions by default, both languages on request', async () => {
    const raw = JSON.parse(readFileSync(join(root, 'train.json'), 'utf8')) as { q_lang: string; answer: unknown }[];
    const log = new SkipLog();
    const en = await collect(readSlake(root, { requireImages: false, skipLog: log }));
    // The release has English questions with an empty answer: skipped as empty-text, with their element number.
    const emptyAnswers = raw.flatMap((r, k) => (r.q_lang === 'en' && String(r.answer).trim() === '' ? [k + 1] : []));
    expect(emptyAnswers.length).toBeGreaterThan(0);
    expect(log.entries.map((e) => [e.reason, e.line])).toEqual(emptyAnswers.map((line) => ['empty-text', line]));
    expect(en.length).toBe(raw.filter((r) => r.q_lang === 'en').length - emptyAnswers.length);
    expect(en.every((r) => /^[\x20-\x7e]+$/.test(r.question))).toBe(true);
    const all = await collect(readSlake(root, { requireImages: false, language: 'all', skipLog: new SkipLog() }));
    expect(all.length).toBe(raw.filter((r) => String(r.answer).trim() !== '').length);
    expect(en[0].imagePath).toBe(join(root, 'imgs', 'xmlab1', 'source.jpg'));
    expect(en[0].category).toBe('Modality');
  });

  it('reads the validation file through its alias and counts the absent images', async () => {
    const log = new SkipLog();
    const recs = await collect(readSlake(root, { split: 'validation', skipLog: log }));
    expect(recs).toHaveLength(0);
    const textOnly = await collect(readSlake(root, { split: 'validate', requireImages: false, skipLog: new SkipLog() }));
    expect(log.counts()['missing-image']).toBe(textOnly.length);
  });
});

describe('readVqaMed2019 on a hand-made release layout', () => {
  const root = join(work, 'ImageClef-2019-VQA-Med-Training');
  mkdirSync(join(root, 'QAPairsByCategory'), { recursive: true });
  mkdirSync(join(root, 'Train_images'));
  for (const id of ['synpic1', 'synpic2', 'synpic3']) writeFileSync(join(root, 'Train_images', `${id}.jpg`), 'x');
  writeFileSync(join(root, 'QAPairsByCategory', 'C1_Modality_train.txt'), 'synpic1|what modality is shown?|ct w/contrast (iv)\nsynpic2|which imaging modality was used?|mr - flair\nbroken line without pipes\n');
  writeFileSync(join(root, 'QAPairsByCategory', 'C2_Plane_train.txt'), 'synpic1|in what plane is this image taken?|axial\nsynpic9|what plane is this?|sagittal\nsynpic1|in what plane is this image taken?|axial\n');
  writeFileSync(join(root, 'QAPairsByCategory', 'C4_Abnormality_train.txt'), 'synpic3|what is abnormal in the ct scan?|meningioma\nsynpic3|is this normal?|\n');
  writeFileSync(join(root, 'All_QA_Pairs_train.txt'), 'synpic1|what modality is shown?|ct w/contrast (iv)\nsynpic3|what is abnormal in the ct scan?|a|b answer\n');

  it('reads the category files with categories, images from *_images, and skips bad lines', async () => {
    const log = new SkipLog();
    const recs = await collect(readVqaMed2019(root, { skipLog: log }));
    expect(recs.map((r) => [r.category, r.imagePath.endsWith(join('Train_images', `${r.id.split('|')[0]}.jpg`)), r.answer])).toEqual([
      ['modality', true, 'ct w/contrast (iv)'],
      ['modality', true, 'mr - flair'],
      ['plane', true, 'axial'],
      ['abnormality', true, 'meningioma'],
    ]);
    expect(log.counts()).toEqual({ 'malformed-line': 1, 'missing-image': 1, 'duplicate-id': 1, 'empty-text': 1 });
    expect(log.entries.find((e) => e.reason === 'malformed-line')).toMatchObject({ file: join(root, 'QAPairsByCategory', 'C1_Modality_train.txt'), line: 3 });
  });

  it('filters categories (C1–C3 as M3AE) and reads one QA file with pipes in the answer', async () => {
    const c13 = await collect(readVqaMed2019(root, { categories: ['modality', 'plane', 'organ'], skipLog: new SkipLog() }));
    expect(c13.map((r) => r.category)).toEqual(['modality', 'modality', 'plane']);
    const all = await collect(readVqaMed2019(join(root, 'All_QA_Pairs_train.txt'), { skipLog: new SkipLog() }));
    expect(all.map((r) => [r.category, r.answer])).toEqual([
      [undefined, 'ct w/contrast (iv)'],
      [undefined, 'a|b answer'],
    ]);
  });

  it('reads the test file format imageid|category|question|answer', async () => {
    const test = join(work, 'VQAMed2019Test');
    mkdirSync(join(test, 'VQAMed2019_Test_Images'), { recursive: true });
    writeFileSync(join(test, 'VQAMed2019_Test_Images', 'synpic7.jpg'), 'x');
    writeFileSync(join(test, 'VQAMed2019_Test_Questions_w_Ref_Answers.txt'), 'synpic7|organ|what organ system is shown?|skull and contents\n');
    const recs = await collect(readVqaMed2019(test, { skipLog: new SkipLog() }));
    expect(recs).toEqual([
      {
        id: 'synpic7|what organ system is shown?',
        imagePath: join(test, 'VQAMed2019_Test_Images', 'synpic7.jpg'),
        question: 'what organ system is shown?',
        answer: 'skull and contents',
        category: 'organ',
        source: 'vqa-med-2019',
        provenance: { file: join(test, 'VQAMed2019_Test_Questions_w_Ref_Answers.txt'), line: 1 },
      },
    ]);
  });
});

describe('readMelinda on a hand-made CSV', () => {
  it('reads figure, caption and every label column; reports bad rows', async () => {
    const dir = join(work, 'melinda');
    mkdirSync(join(dir, 'melinda_images'), { recursive: true });
    for (const f of ['f1.jpg', 'f2.jpg', 'f4.jpg']) writeFileSync(join(dir, 'melinda_images', f), 'x');
    const csv = [
      'figure_file,caption,i_meth,p_meth,i_meth_label,p_meth_label,pmcid',
      'f1.jpg,"Western blot of lysates, 24 h",western blot,protein,Protein methods,Western blot,PMC1',
      'f2.jpg,Confocal microscopy of HeLa cells,confocal,microscopy,Microscopy,Light microscopy,PMC2',
      'f3.jpg,Gel electrophoresis of PCR products,gel,nucleic,Nucleic acid methods,Gel,PMC3',
      'f2.jpg,Another row with the same figure,x,y,z,w,PMC4',
      'f4.jpg,Short one,a,b,c,d,PMC5',
      'f5.jpg,No labels in this row at all,,,,,PMC6',
    ].join('\n');
    writeFileSync(join(dir, 'train.csv'), csv);
    const log = new SkipLog();
    const recs = await collect(readMelinda(join(dir, 'train.csv'), { skipLog: log }));
    expect(recs.map((r) => [r.id, r.text])).toEqual([
      ['f1.jpg', 'Western blot of lysates, 24 h'],
      ['f2.jpg', 'Confocal microscopy of HeLa cells'],
    ]);
    expect(recs[0].labels).toEqual({ i_meth: 'western blot', p_meth: 'protein', i_meth_label: 'Protein methods', p_meth_label: 'Western blot' });
    expect(recs[0].imagePath).toBe(join(dir, 'melinda_images', 'f1.jpg'));
    expect(log.counts()).toEqual({ 'missing-image': 1, 'duplicate-id': 1, 'too-short-text': 1, 'malformed-line': 1 });
  });
});
