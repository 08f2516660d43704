import { createHash } from 'node:crypto';

/**
 * Carving validation (and held-out test) splits out of a training file, by group: every item of a group (e.g. every
 * question about one image) lands in the same split, so no image is seen in training and evaluated on. The order of
 * groups is a hash of (seed, group key): deterministic, independent of the file's order, and a group's split does
 * not depend on which other groups exist except through the running counts.
 */
export interface CarveSpec {
  /** Seed of the group order. */
  seed: number;
  /** Fraction of the items (not groups) to move into `val`. */
  valFraction: number;
  /** Fraction of the items to move into a held-out `test` split. @defaultValue 0 */
  testFraction?: number;
  /**
   * What a group is, where a dataset offers a choice (VQA-RAD): `image` (every question about one image; no image
   * is both trained on and evaluated on) or `question` (each question its own group, exact duplicates — same image,
   * same normalised question — kept together: the images of held-out questions also occur in training, as in
   * VQA-RAD's official test set, whose 451 questions are about the training file's images). Retrieval carves by
   * image–caption component and accepts only `image`.
   * @defaultValue 'image'
   */
  groupBy?: CarveGroupBy;
}

/** What {@link CarveSpec.groupBy} may be. */
export const CARVE_GROUP_BY = ['image', 'question'] as const;
export type CarveGroupBy = (typeof CARVE_GROUP_BY)[number];

export interface Carved<T> {
  train: T[];
  val: T[];
  test: T[];
}

export class SplitError extends Error {
  override readonly name = 'SplitError';
}

/** Checks a carve specification; the error names the field, its value and what was expected. */
export function validateCarveSpec(spec: CarveSpec, where = 'carve'): Required<CarveSpec> {
  const testFraction = spec.testFraction ?? 0;
  const groupBy = spec.groupBy ?? 'image';
  if (!Number.isSafeInteger(spec.seed) || spec.seed < 0) throw new SplitError(`${where}.seed: got ${String(spec.seed)}; expected a non-negative integer`);
  for (const [field, v] of [['valFraction', spec.valFraction], ['testFraction', testFraction]] as const) {
    if (!(typeof v === 'number' && v >= 0 && v < 1)) throw new SplitError(`${where}.${field}: got ${String(v)}; expected a number in [0, 1)`);
  }
  if (spec.valFraction + testFraction >= 1) {
    throw new SplitError(`${where}: valFraction + testFraction = ${spec.valFraction + testFraction}; expected less than 1 (training needs items)`);
  }
  if (!(CARVE_GROUP_BY as readonly string[]).includes(groupBy)) {
    throw new SplitError(`${where}.groupBy: got ${JSON.stringify(groupBy)}; expected one of ${CARVE_GROUP_BY.join(', ')}`);
  }
  return { seed: spec.seed, valFraction: spec.valFraction, testFraction, groupBy };
}

/**
 * A question as duplicates are recognised by a question carve: lower-cased, every run of characters other than
 * letters and digits one space, trimmed ("Is/are the lungs normal?" and "is are the lungs normal" are one question).
 */
export function normalizeQuestion(q: string): string {
  return q
    .toLowerCase()
    .replace(/[^\p{L}\p{N}]+/gu, ' ')
    .trim();
}

function groupRank(seed: number, key: string): string {
  return createHash('sha256').update(`${seed}\u0000${key}`).digest('hex');
}

/**
 * Splits `items` into train / val / test by group. Groups are visited in hash order; a group goes to `val` while
 * val holds fewer than round(valFraction · n) items, then to `test` while test holds fewer than
 * round(testFraction · n), then to `train`. Items keep their input order within each split.
 */
export function carveByGroup<T>(items: readonly T[], groupOf: (item: T) => string, spec: CarveSpec): Carved<T> {
  const { seed, valFraction, testFraction } = validateCarveSpec(spec);
  const sizes = new Map<string, number>();
  const keys = items.map((item) => {
    const k = groupOf(item);
    sizes.set(k, (sizes.get(k) ?? 0) + 1);
    return k;
  });
  const order = [...sizes.keys()].map((k) => ({ k, r: groupRank(seed, k) })).sort((a, b) => (a.r < b.r ? -1 : a.r > b.r ? 1 : a.k < b.k ? -1 : 1));
  const wantVal = Math.round(valFraction * items.length);
  const wantTest = Math.round(testFraction * items.length);
  const splitOf = new Map<string, 'train' | 'val' | 'test'>();
  let nVal = 0;
  let nTest = 0;
  for (const { k } of order) {
    const size = sizes.get(k) ?? 0;
    if (nVal < wantVal) {
      splitOf.set(k, 'val');
      nVal += size;
    } else if (nTest < wantTest) {
      splitOf.set(k, 'test');
      nTest += size;
    } else splitOf.set(k, 'train');
  }
  const out: Carved<T> = { train: [], val: [], test: [] };
  items.forEach((item, i) => out[splitOf.get(keys[i] as string) ?? 'train'].push(item));
  return out;
}

/**
 * Group keys for image–text pairs such that pairs sharing an image or a text share a group (connected components
 * of the image–text graph): carving by them keeps a caption shared by several images, and an image with several
 * captions, on one side. The key of a component is its smallest image key.
 */
export function pairComponents(pairs: readonly { imageKey: string; text: string }[]): string[] {
  const parent = new Map<string, string>();
  const find = (x: string): string => {
    let r = x;
    while (parent.get(r) !== r) r = parent.get(r) as string;
    let y = x;
    while (y !== r) {
      const next = parent.get(y) as string;
      parent.set(y, r);
      y = next;
    }
    return r;
  };
  const add = (x: string): void => {
    if (!parent.has(x)) parent.set(x, x);
  };
  for (const p of pairs) {
    const a = `i\u0000${p.imageKey}`;
    const b = `t\u0000${p.text}`;
    add(a);
    add(b);
    const ra = find(a);
    const rb = find(b);
    if (ra !== rb) parent.set(ra < rb ? rb : ra, ra < rb ? ra : rb);
  }
  const smallestImage = new Map<string, string>();
  for (const p of pairs) {
    const r = find(`i\u0000${p.imageKey}`);
    const cur = smallestImage.get(r);
    if (cur === undefined || p.imageKey < cur) smallestImage.set(r, p.imageKey);
  }
  return pairs.map((p) => smallestImage.get(find(`i\u0000${p.imageKey}`)) as string);
}
