import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIP_MEAN, CLIP_STD } from '../images/normalize.js';
import { sharedDataForTests } from '../shared-data.js';
import { SkipLog } from '../skip-log.js';
import { loadTokenizer, type TextTokenizer } from '../tokenizer/load.js';
import { trainTokenizer } from '../tokenizer/train.js';
import { LabelVocabulary, normalizeAnswer, VocabularyError } from './answers.js';
import { QuestionPriorBaseline } from './baselines.js';
import { buildLabeledBatch, buildRetrievalBatch, retrievalNegatives } from './batches.js';
import { ImageStore } from './images.js';
import { carveByGroup, normalizeQuestion, pairComponents, SplitError } from './splits.js';
import { buildRetrievalSet, limitRetrievalPairs, readClassificationSplit, readRetrievalSplit, readVqaTaskSplit, vqaRadCarveGroup, type VqaExample } from './tasks.js';

const data = sharedDataForTests(resolve(import.meta.dirname, '../../../..'), 'downstream tests on the real VQA-RAD / MedPix files');
const work = mkdtempSync(join(tmpdir(), 'm3ae-ds-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('question carve groups', () => {
  it('normalises a question for duplicate detection: case, punctuation and spacing only', () => {
    expect(normalizeQuestion('Is/are the  lungs normal?')).toBe('is are the lungs normal');
    expect(normalizeQuestion("Is there a patient's   T2-weighted image?")).toBe('is there a patient s t2 weighted image');
    expect(normalizeQuestion('Where is the lesion')).not.toBe(normalizeQuestion('Where is a lesion'));
    const e = (imagePath: string, question: string) => ({ imagePath, question });
    expect(vqaRadCarveGroup(e('/x/synpic1.jpg', 'Is it normal?'), 'question')).toBe(vqaRadCarveGroup(e('/y/synpic1.jpg', 'is it  normal'), 'question'));
    expect(vqaRadCarveGroup(e('/x/synpic1.jpg', 'Is it normal?'), 'question')).not.toBe(vqaRadCarveGroup(e('/x/synpic2.jpg', 'Is it normal?'), 'question'));
    expect(vqaRadCarveGroup(e('/x/synpic1.jpg', 'Is it normal?'), 'image')).toBe('synpic1.jpg');
  });
});

describe('answer normalisation (the VQA normalize_word M3AE imports)', () => {
  it('lower-cases, strips punctuation and articles, maps number words, keeps decimals', () => {
    const cases: [string, string][] = [
      ['Yes', 'yes'],
      ['yes.', 'yes'],
      ['The left lung', 'left lung'],
      ['one', '1'],
      ['None', '0'],
      ['x-ray', 'x ray'],
      ['2.5 cm', '2.5 cm'],
      ['1,000', '1000'],
      ['left, right', 'left right'],
      ['PA (posteroanterior)', 'pa posteroanterior'],
      ['  an   MRI ', 'mri'],
      ['dont know', "don't know"],
      ['T2/FLAIR', 't2 flair'],
    ];
    for (const [raw, want] of cases) expect(normalizeAnswer(raw), raw).toBe(want);
  });

  it.skipIf(!data)('is idempotent on every real VQA-RAD answer', () => {
    const raw = JSON.parse(readFileSync(join(data ?? '', 'vqa_rad', 'trainset.json'), 'utf8')) as { answer: unknown }[];
    for (const r of raw) {
      const once = normalizeAnswer(String(r.answer));
      expect(normalizeAnswer(once)).toBe(once);
    }
  });
});

describe('label vocabularies', () => {
  it('keeps the order of first appearance (answers) or sorts (classes); unknown labels are −1', () => {
    const v = LabelVocabulary.inOrderOfAppearance(['no', 'yes', 'no', 'left', 'yes']);
    expect(v.labels).toEqual(['no', 'yes', 'left']);
    expect(v.labelOf('left')).toBe(2);
    expect(v.labelOf('right')).toBe(-1);
    expect(v.labelAt(1)).toBe('yes');
    expect(LabelVocabulary.sorted(['b', 'a', 'c', 'a']).labels).toEqual(['a', 'b', 'c']);
    const back = LabelVocabulary.fromJSON(JSON.parse(JSON.stringify(v)), 'task.answers');
    expect(back.labels).toEqual(v.labels);
    expect(() => LabelVocabulary.fromJSON(['a', 'a'], 'task.answers')).toThrow(VocabularyError);
    expect(() => LabelVocabulary.fromJSON({ a: 1 }, 'task.answers')).toThrow(/task\.answers: expected a JSON array of strings/);
  });
});

describe('carving splits by group', () => {
  const items = Array.from({ length: 200 }, (_, i) => ({ i, group: `img${i % 37}` }));

  it('is deterministic, disjoint by group, complete, and near the requested sizes', () => {
    const a = carveByGroup(items, (x) => x.group, { seed: 3, valFraction: 0.2, testFraction: 0.1 });
    const b = carveByGroup([...items].reverse(), (x) => x.group, { seed: 3, valFraction: 0.2, testFraction: 0.1 });
    const groups = (xs: { group: string }[]): Set<string> => new Set(xs.map((x) => x.group));
    // The file's order does not matter: the same groups land in the same splits.
    expect(groups(b.val)).toEqual(groups(a.val));
    expect(groups(b.test)).toEqual(groups(a.test));
    expect(a.train.length + a.val.length + a.test.length).toBe(200);
    for (const g of groups(a.val)) expect(groups(a.train).has(g) || groups(a.test).has(g)).toBe(false);
    for (const g of groups(a.test)) expect(groups(a.train).has(g)).toBe(false);
    // A group holds 5–6 items: the split overshoots its target by less than one group.
    expect(a.val.length).toBeGreaterThanOrEqual(40);
    expect(a.val.length).toBeLessThan(40 + 6);
    expect(a.test.length).toBeGreaterThanOrEqual(20);
    expect(a.test.length).toBeLessThan(20 + 6);
    const c = carveByGroup(items, (x) => x.group, { seed: 4, valFraction: 0.2, testFraction: 0.1 });
    expect(groups(c.val)).not.toEqual(groups(a.val));
    // Input order is kept within a split.
    expect(a.train.map((x) => x.i)).toEqual([...a.train.map((x) => x.i)].sort((p, q) => p - q));
  });

  it('rejects bad specifications with the field and value', () => {
    expect(() => carveByGroup(items, (x) => x.group, { seed: 0, valFraction: 1.2 })).toThrow(/carve\.valFraction: got 1\.2; expected a number in \[0, 1\)/);
    expect(() => carveByGroup(items, (x) => x.group, { seed: 0, valFraction: 0.6, testFraction: 0.5 })).toThrow(SplitError);
    expect(() => carveByGroup(items, (x) => x.group, { seed: -1, valFraction: 0.1 })).toThrow(/carve\.seed/);
  });

  it('groups image–caption pairs into connected components (shared captions, several captions per image)', () => {
    const g = pairComponents([
      { imageKey: 'a', text: 'x' },
      { imageKey: 'b', text: 'x' },
      { imageKey: 'b', text: 'y' },
      { imageKey: 'c', text: 'z' },
      { imageKey: 'd', text: 'y' },
    ]);
    expect(g).toEqual(['a', 'a', 'a', 'c', 'a']);
  });
});

describe.skipIf(!data)('VQA-RAD splits on the real training questions', () => {
  const root = join(data ?? '', 'vqa_rad');
  let all: VqaExample[] = [];
  let train: VqaExample[] = [];
  let val: VqaExample[] = [];

  beforeAll(async () => {
    const log = new SkipLog();
    all = await readVqaTaskSplit('vqa-rad', root, 'train', { skipLog: log, carve: { seed: 0, valFraction: 0 } });
    train = await readVqaTaskSplit('vqa-rad', root, 'train', { skipLog: log });
    val = await readVqaTaskSplit('vqa-rad', root, 'val', { skipLog: log });
  });

  it('carves validation questions by image: no image in both, every question in exactly one split, deterministic', async () => {
    expect(all.length).toBe(3064);
    expect(train.length + val.length).toBe(all.length);
    expect(val.length).toBeGreaterThanOrEqual(Math.round(0.1 * all.length));
    expect(val.length).toBeLessThan(Math.round(0.1 * all.length) + 60); // one image holds at most a few dozen questions
    const trainImages = new Set(train.map((e) => basename(e.imagePath)));
    for (const e of val) expect(trainImages.has(basename(e.imagePath))).toBe(false);
    expect(new Set([...train, ...val].map((e) => e.id)).size).toBe(all.length);
    const again = await readVqaTaskSplit('vqa-rad', root, 'val', { skipLog: new SkipLog() });
    expect(again.map((e) => e.id)).toEqual(val.map((e) => e.id));
    // Normalised answers and clean answer types.
    expect(new Set(all.map((e) => e.answerType))).toEqual(new Set(['OPEN', 'CLOSED']));
    expect(all.find((e) => e.rawAnswer === 'Yes')?.answer).toBe('yes');
  });

  it('carves a held-out split disjoint from both when asked, and refuses holdout otherwise', async () => {
    const carve = { seed: 0, valFraction: 0.1, testFraction: 0.15 };
    const log = new SkipLog();
    const [t, v, h] = await Promise.all((['train', 'val', 'holdout'] as const).map((s) => readVqaTaskSplit('vqa-rad', root, s, { skipLog: log, carve })));
    const imgs = (xs: VqaExample[] | undefined): Set<string> => new Set((xs ?? []).map((e) => basename(e.imagePath)));
    for (const i of imgs(h)) expect(imgs(t).has(i) || imgs(v).has(i)).toBe(false);
    expect((t?.length ?? 0) + (v?.length ?? 0) + (h?.length ?? 0)).toBe(3064);
    // The validation split does not move when a held-out split is added (it is carved first).
    expect(v?.map((e) => e.id)).toEqual(val.map((e) => e.id));
    await expect(readVqaTaskSplit('vqa-rad', root, 'holdout', { skipLog: log })).rejects.toThrow(/holdout needs a carve with testFraction > 0/);
    await expect(readVqaTaskSplit('vqa-rad', root, 'test', { skipLog: log })).rejects.toThrow(/testset\.json/);
  });

  it('keeps the image carve of the bench as it was: 2,297 / 307 / 460 questions, the same with groupBy image spelt out', async () => {
    const log = new SkipLog();
    const read = (groupBy?: 'image') =>
      Promise.all((['train', 'val', 'holdout'] as const).map((s) => readVqaTaskSplit('vqa-rad', root, s, { skipLog: log, carve: { seed: 0, valFraction: 0.1, testFraction: 0.15, ...(groupBy ? { groupBy } : {}) } })));
    const [t, v, h] = await read();
    expect([t.length, v.length, h.length]).toEqual([2297, 307, 460]);
    expect([new Set(t.map((e) => basename(e.imagePath))).size, new Set(v.map((e) => basename(e.imagePath))).size, new Set(h.map((e) => basename(e.imagePath))).size]).toEqual([236, 30, 48]);
    const [t2, v2, h2] = await read('image');
    expect([t2, v2, h2].map((xs) => xs.map((e) => e.id))).toEqual([t, v, h].map((xs) => xs.map((e) => e.id)));
  });

  it('carves by question on request: exact duplicates together, held-out images shared with training, deterministic', async () => {
    const carve = { seed: 0, valFraction: 0.1, testFraction: 0.15, groupBy: 'question' as const };
    const read = () => Promise.all((['train', 'val', 'holdout'] as const).map((s) => readVqaTaskSplit('vqa-rad', root, s, { skipLog: new SkipLog(), carve })));
    const [t, v, h] = await read();
    expect(t.length + v.length + h.length).toBe(3064);
    expect(new Set([...t, ...v, ...h].map((e) => e.id)).size).toBe(3064);
    // Question groups are small, so the splits get (nearly) their fractions of the items.
    expect(v.length).toBeGreaterThanOrEqual(306);
    expect(v.length).toBeLessThan(306 + 10);
    expect(h.length).toBeGreaterThanOrEqual(460);
    expect(h.length).toBeLessThan(460 + 10);
    // The training file holds exact duplicates (the same normalised question about the same image); each stays in one split.
    const splitOf = new Map<string, Set<string>>();
    const sizes = new Map<string, number>();
    for (const [name, xs] of [['train', t], ['val', v], ['holdout', h]] as const) {
      for (const e of xs) {
        // An exact duplicate, spelt out here rather than with the carve's own key: same image, same words.
        const k = `${basename(e.imagePath)}|${e.question.toLowerCase().replace(/[^a-z0-9]+/g, ' ').trim()}`;
        splitOf.set(k, (splitOf.get(k) ?? new Set()).add(name));
        sizes.set(k, (sizes.get(k) ?? 0) + 1);
      }
    }
    expect([...sizes.values()].filter((n) => n > 1).length).toBeGreaterThan(400);
    for (const [k, names] of splitOf) expect(names.size, k).toBe(1);
    // Unlike the image carve, held-out (and validation) questions are about images that training also has.
    const trainImages = new Set(t.map((e) => basename(e.imagePath)));
    const shared = (xs: VqaExample[]): number => xs.filter((e) => trainImages.has(basename(e.imagePath))).length;
    expect(shared(h)).toBeGreaterThan(0.9 * h.length);
    expect(shared(v)).toBeGreaterThan(0.9 * v.length);
    const [imageTrain, , imageHoldout] = await Promise.all((['train', 'val', 'holdout'] as const).map((s) => readVqaTaskSplit('vqa-rad', root, s, { skipLog: new SkipLog(), carve: { ...carve, groupBy: 'image' } })));
    const imageTrainImages = new Set(imageTrain.map((e) => basename(e.imagePath)));
    expect(imageHoldout.filter((e) => imageTrainImages.has(basename(e.imagePath))).length).toBe(0);
    expect(h.map((e) => e.id)).not.toEqual(imageHoldout.map((e) => e.id));
    // Deterministic: the same carve again gives the same splits; another seed another one.
    const [t2, v2, h2] = await read();
    expect([t2, v2, h2].map((xs) => xs.map((e) => e.id))).toEqual([t, v, h].map((xs) => xs.map((e) => e.id)));
    const other = await readVqaTaskSplit('vqa-rad', root, 'holdout', { skipLog: new SkipLog(), carve: { ...carve, seed: 1 } });
    expect(other.map((e) => e.id)).not.toEqual(h.map((e) => e.id));
    await expect(readVqaTaskSplit('vqa-rad', root, 'val', { skipLog: new SkipLog(), carve: { ...carve, groupBy: 'caption' as 'image' } })).rejects.toThrow(
      'vqa-rad carve.groupBy: got "caption"; expected one of image, question',
    );
  });

  it('answers a question-only prior from the training questions (exact question, then its first words)', () => {
    const prior = new QuestionPriorBaseline(train);
    expect(prior.majorityAnswer).toBe('no');
    const q = train.find((e) => e.question.toLowerCase().startsWith('is there'));
    expect(q).toBeDefined();
    expect(['yes', 'no']).toContain(prior.predict('Is there a zebra in this picture?'));
    const known = train[0] as VqaExample;
    const same = train.filter((e) => QuestionPriorBaseline.words(e.question).join(' ') === QuestionPriorBaseline.words(known.question).join(' '));
    expect(same.map((e) => e.answer)).toContain(prior.predict(known.question));
    let correct = 0;
    for (const e of val) if (prior.predict(e.question) === e.answer) correct++;
    // The language prior answers a good share of VQA-RAD (mostly yes/no questions), far from all of it.
    expect(correct / val.length).toBeGreaterThan(0.2);
    expect(correct / val.length).toBeLessThan(0.9);
  });
});

describe.skipIf(!data)('downstream batches from real images', () => {
  let tok: TextTokenizer;
  beforeAll(async () => {
    const d = data as string;
    await trainTokenizer({ sources: [{ kind: 'medpix', path: join(d, 'medpix2') }], vocabSize: 400, output: join(work, 'tok.json'), agreementSamples: 5 });
    tok = await loadTokenizer(join(work, 'tok.json'));
  }, 60_000);

  it('builds VQA batches: CLIP-normalised pixels, tokenised questions, labels (−1 unseen), deterministic crops', async () => {
    const log = new SkipLog();
    const examples = (await readVqaTaskSplit('vqa-rad', join(data ?? '', 'vqa_rad'), 'val', { skipLog: log })).slice(0, 6);
    const vocab = LabelVocabulary.inOrderOfAppearance(examples.slice(0, 3).map((e) => e.answer));
    const labeled = examples.map((e) => ({ imagePath: e.imagePath, text: e.question, label: vocab.labelOf(e.answer) }));
    const images = new ImageStore(32);
    const o = { examples: labeled, indices: [0, 4, 5], images, tokenizer: tok, textLength: 12, seed: 7, step: 3 };
    const b = await buildLabeledBatch(o);
    expect(b.batchSize).toBe(3);
    expect(b.textsPerExample).toBe(1);
    expect(b.pixelValues.length).toBe(3 * 3 * 32 * 32);
    expect(b.inputIds.length).toBe(36);
    expect(b.inputIds[0]).toBe(tok.special.cls);
    expect(Array.from(b.labels)).toEqual([0, vocab.labelOf(examples[4]?.answer ?? ''), vocab.labelOf(examples[5]?.answer ?? '')]);
    // Values lie within CLIP's normalised range of [0, 255] pixels.
    const lo = Math.min(...CLIP_MEAN.map((m, c) => -m / (CLIP_STD[c] as number)));
    const hi = Math.max(...CLIP_MEAN.map((m, c) => (1 - m) / (CLIP_STD[c] as number)));
    expect(b.pixelValues.every((v) => v >= lo - 1e-5 && v <= hi + 1e-5)).toBe(true);
    const crop1 = await buildLabeledBatch({ ...o, augment: { scale: [0.5, 0.6] } });
    const crop2 = await buildLabeledBatch({ ...o, augment: { scale: [0.5, 0.6] } });
    const crop3 = await buildLabeledBatch({ ...o, step: 4, augment: { scale: [0.5, 0.6] } });
    expect(Array.from(crop2.pixelValues)).toEqual(Array.from(crop1.pixelValues));
    expect(Array.from(crop3.pixelValues)).not.toEqual(Array.from(crop1.pixelValues));
    expect(Array.from(crop1.pixelValues)).not.toEqual(Array.from(b.pixelValues));
    expect(Array.from(crop3.dropoutSeeds)).not.toEqual(Array.from(crop1.dropoutSeeds));
    await expect(buildLabeledBatch({ ...o, indices: [6] })).rejects.toThrow(/indices\[0\]: got 6/);
  });

  it('skips (and counts) images that do not decode', async () => {
    const bad = join(work, 'corrupt.jpg');
    writeFileSync(bad, Buffer.from([0xff, 0xd8, 0xff, 0x00, 0x01, 0x02]));
    const good = (await readVqaTaskSplit('vqa-rad', join(data ?? '', 'vqa_rad'), 'val', { skipLog: new SkipLog() }))[0] as VqaExample;
    const log = new SkipLog();
    const kept = await new ImageStore(32).keepReadable([good, { ...good, id: 'broken', imagePath: bad }], log);
    expect(kept.map((e) => e.id)).toEqual([good.id]);
    expect(log.counts()['unreadable-image']).toBe(1);
  });

  it('reads MedPix retrieval splits (val carved from train, test = dev), links shared captions, and draws negatives', async () => {
    const root = join(data ?? '', 'medpix2');
    const log = new SkipLog();
    const [train, val, test] = await Promise.all((['train', 'val', 'test'] as const).map((s) => readRetrievalSplit('medpix', root, s, { skipLog: log })));
    await expect(readRetrievalSplit('medpix', root, 'val', { skipLog: log, carve: { seed: 0, valFraction: 0.1, groupBy: 'question' } })).rejects.toThrow(
      'retrieval carve.groupBy: got "question"; expected image',
    );
    const trainTexts = new Set(train?.map((p) => p.text));
    const trainImages = new Set(train?.map((p) => p.imagePath));
    for (const p of val ?? []) {
      expect(trainTexts.has(p.text)).toBe(false);
      expect(trainImages.has(p.imagePath)).toBe(false);
    }
    expect(test?.length).toBeGreaterThan(100);
    const set = buildRetrievalSet(train ?? []);
    expect(set.images.length).toBe(train?.length); // MedPix: one caption per image
    const shared = set.textImages.filter((imgs) => imgs.length > 1);
    expect(shared.length).toBeGreaterThan(0); // several images of a case share a caption
    for (const [t, imgs] of set.textImages.entries()) for (const i of imgs) expect(set.imageTexts[i]).toContain(t);
    const pair = set.pairs.findIndex((_, k) => (set.textImages[set.pairText[k] as number]?.length ?? 0) > 1);
    const neg = retrievalNegatives(set, pair, 15, 1, 2);
    const own = new Set(set.imageTexts[set.pairImage[pair] as number]);
    for (const t of neg) expect(own.has(t)).toBe(false);
    expect(Array.from(retrievalNegatives(set, pair, 15, 1, 2))).toEqual(Array.from(neg));
    const small = buildRetrievalSet(limitRetrievalPairs(test ?? [], 8, 0));
    expect(small.images.length).toBe(8);
    const b = await buildRetrievalBatch({ set: small, indices: [0, 1], negatives: 3, images: new ImageStore(32), tokenizer: tok, textLength: 16, seed: 1, step: 0 });
    expect(b.textsPerExample).toBe(4);
    expect(b.inputIds.length).toBe(2 * 4 * 16);
    expect(Array.from(b.labels)).toEqual([0, 0]);
    // The first text of example 0 is its own caption.
    expect(Array.from(b.inputIds.subarray(0, 16))).toEqual(Array.from(tok.encode(small.texts[small.pairText[0] as number] as string, 16).inputIds));
  });

  it('reads MELINDA-format CSVs by label column and names a wrong column', async () => {
    const dir = join(work, 'melinda');
    const { mkdirSync, copyFileSync } = await import('node:fs');
    mkdirSync(join(dir, 'melinda_images'), { recursive: true });
    const img = (await readVqaTaskSplit('vqa-rad', join(data ?? '', 'vqa_rad'), 'val', { skipLog: new SkipLog() }))[0]?.imagePath ?? '';
    copyFileSync(img, join(dir, 'melinda_images', 'f1.jpg'));
    copyFileSync(img, join(dir, 'melinda_images', 'f2.jpg'));
    const header = 'figure_file,caption,i_meth,p_meth,i_meth_label,p_meth_label\n';
    writeFileSync(join(dir, 'train.csv'), header + 'f1.jpg,"A western blot of the lysate, three lanes",wb,pcr,Western blot,Molecular\nf2.jpg,Confocal image of stained cells shown,conf,fish,Microscopy,\n');
    const log = new SkipLog();
    const ex = await readClassificationSplit(dir, 'train', { skipLog: log, labelColumn: 'p_meth_label' });
    expect(ex.map((e) => [e.id, e.label])).toEqual([['f1.jpg', 'Molecular']]);
    expect(log.counts()['malformed-line']).toBe(1);
    const im = await readClassificationSplit(dir, 'train', { skipLog: new SkipLog(), labelColumn: 'i_meth_label' });
    expect(im.map((e) => e.label)).toEqual(['Western blot', 'Microscopy']);
    await expect(readClassificationSplit(dir, 'train', { skipLog: new SkipLog(), labelColumn: 'nope_label' })).rejects.toThrow(/no row has a value in label column "nope_label"/);
  });
});
