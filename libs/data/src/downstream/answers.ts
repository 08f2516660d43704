/**
 * Answer normalisation and label vocabularies of the downstream tasks.
 *
 * `normalizeAnswer` follows `normalize_word` of the VQA evaluation code that M3AE's preprocessing imports
 * (`prepro/make_arrow.py` → `glossary.normalize_word`, inherited from ViLT): punctuation becomes a space (or is
 * dropped when it touches a space, or when the text holds a digit-comma-digit), periods not followed by a digit are
 * removed, number words zero–ten become digits ("none" → "0"), the articles a/an/the are dropped, common
 * apostrophe-less contractions get their apostrophe back, and commas are removed. The input is lower-cased first,
 * as `make_arrow` does (`str(answer).lower()`).
 */

const PUNCTUATION = [';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',', '?', '!'] as const;

/** A digit, a comma, a digit ("1,000"): then punctuation is dropped rather than turned into spaces. */
const COMMA_BETWEEN_DIGITS = /\d,\d/;

const NUMBER_WORDS: Readonly<Record<string, string>> = {
  none: '0',
  zero: '0',
  one: '1',
  two: '2',
  three: '3',
  four: '4',
  five: '5',
  six: '6',
  seven: '7',
  eight: '8',
  nine: '9',
  ten: '10',
};

const ARTICLES = new Set(['a', 'an', 'the']);

/**
 * The entries of the VQA evaluation's contraction table whose apostrophe-less spelling is a plausible answer word
 * (the full table also lists rare forms such as "y'all'd've"; none occurs in the medical VQA sets).
 */
const CONTRACTIONS: Readonly<Record<string, string>> = {
  aint: "ain't",
  arent: "aren't",
  cant: "can't",
  couldnt: "couldn't",
  didnt: "didn't",
  doesnt: "doesn't",
  dont: "don't",
  hadnt: "hadn't",
  hasnt: "hasn't",
  havent: "haven't",
  isnt: "isn't",
  itll: "it'll",
  lets: "let's",
  mightnt: "mightn't",
  mustnt: "mustn't",
  neednt: "needn't",
  shouldnt: "shouldn't",
  thats: "that's",
  theres: "there's",
  theyre: "they're",
  wasnt: "wasn't",
  werent: "weren't",
  whats: "what's",
  wheres: "where's",
  whos: "who's",
  wont: "won't",
  wouldnt: "wouldn't",
  youre: "you're",
};

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}

const PUNCT_RE = PUNCTUATION.map((p) => new RegExp(escapeRegExp(p), 'g'));

/**
 * The normalised form of an answer: what the answer vocabulary is built from and what predictions are compared
 * with. Pure and idempotent on its own output.
 */
export function normalizeAnswer(answer: string): string {
  const token = String(answer).toLowerCase();
  let out = token;
  const commaNumber = COMMA_BETWEEN_DIGITS.test(token);
  PUNCTUATION.forEach((p, i) => {
    const re = PUNCT_RE[i] as RegExp;
    // As the original: the test looks at the input text, the replacement applies to the running result.
    out = token.includes(p + ' ') || token.includes(' ' + p) || commaNumber ? out.replace(re, '') : out.replace(re, ' ');
  });
  // Periods not followed by a digit ("2.5" keeps its point, "yes." loses it).
  out = out.replace(/\.(?!\d)/g, '');
  const words: string[] = [];
  for (const raw of out.split(/\s+/)) {
    if (raw === '') continue;
    const w = NUMBER_WORDS[raw] ?? raw;
    if (!ARTICLES.has(w)) words.push(CONTRACTIONS[w] ?? w);
  }
  return words.join(' ').replace(/,/g, '');
}

/** Thrown for a vocabulary file or field that is not what it should be. */
export class VocabularyError extends Error {
  override readonly name = 'VocabularyError';
}

/**
 * A closed set of labels (answers or classes) with their indices. Label −1 means "not in the vocabulary": such an
 * example is always counted wrong (a closed-set classifier cannot produce it).
 */
export class LabelVocabulary {
  readonly labels: readonly string[];
  private readonly index: ReadonlyMap<string, number>;

  private constructor(labels: readonly string[]) {
    this.labels = labels;
    const index = new Map<string, number>();
    labels.forEach((l, i) => index.set(l, i));
    this.index = index;
  }

  /** Labels in order of first appearance (M3AE's answer vocabulary: `Counter` keys in insertion order). */
  static inOrderOfAppearance(values: Iterable<string>): LabelVocabulary {
    const seen = new Set<string>();
    const labels: string[] = [];
    for (const v of values) {
      if (!seen.has(v)) {
        seen.add(v);
        labels.push(v);
      }
    }
    return new LabelVocabulary(labels);
  }

  /** Labels sorted (M3AE's MELINDA classes: `sorted(set(...))`, i.e. by code point). */
  static sorted(values: Iterable<string>): LabelVocabulary {
    return new LabelVocabulary([...new Set(values)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
  }

  /** From a stored list (checkpoint metadata); `field` names it in errors. */
  static fromJSON(value: unknown, field: string): LabelVocabulary {
    if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
      throw new VocabularyError(`${field}: expected a JSON array of strings, got ${JSON.stringify(value)?.slice(0, 80)}`);
    }
    const labels = value as string[];
    if (new Set(labels).size !== labels.length) throw new VocabularyError(`${field}: labels must be distinct`);
    if (labels.length === 0) throw new VocabularyError(`${field}: expected at least one label`);
    return new LabelVocabulary(labels);
  }

  get size(): number {
    return this.labels.length;
  }

  /** The index of a label, or −1 when it is not in the vocabulary. */
  labelOf(value: string): number {
    return this.index.get(value) ?? -1;
  }

  labelAt(i: number): string {
    const l = this.labels[i];
    if (l === undefined) throw new RangeError(`label index ${i} outside [0, ${this.labels.length})`);
    return l;
  }

  toJSON(): string[] {
    return [...this.labels];
  }
}
