import { mkdtemp, readFile, rm, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '@m3ae/protocol';
import {
  BPE,
  Tokenizer as RustTokenizer,
  WordPiece,
  bertNormalizer,
  bertPreTokenizer,
  byteLevelAlphabet,
  byteLevelPreTokenizer,
} from 'tokenizers';
import { loadTokenizer } from './load.js';
import { readTexts, type TextSource } from './corpus.js';

export type TokenizerType = 'bpe' | 'wordpiece';

/** RoBERTa's special tokens and ids (BPE) and BERT's (WordPiece); training puts them first, in this order. */
export const BPE_SPECIAL_TOKENS = ['<s>', '<pad>', '</s>', '<unk>', '<mask>'] as const;
export const WORDPIECE_SPECIAL_TOKENS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] as const;

export interface TrainTokenizerOptions {
  sources: readonly TextSource[];
  /** Total vocabulary size, special tokens included (BPE: at least 5 + 256 byte symbols). */
  vocabSize: number;
  output: string;
  /** @defaultValue 'bpe' (RoBERTa-style byte-level BPE, as M3AE's text encoder) */
  type?: TokenizerType;
  /** Texts checked for identical ids between the Rust trainer and the JavaScript loader. @defaultValue 500 */
  agreementSamples?: number;
}

export interface TrainTokenizerResult {
  output: string;
  type: TokenizerType;
  /** Distinct texts trained on (exact duplicates, e.g. MedPix captions shared by a case's images, count once). */
  texts: number;
  /** Texts read per source (before removing duplicates). */
  perSource: { kind: string; path: string; texts: number }[];
  vocabSize: number;
  /** The vocabulary was smaller than asked: the corpus ran out of pairs to merge. */
  exhausted: boolean;
  /** Texts encoded by both libraries, and how many gave different ids (0 expected). */
  agreement: { checked: number; mismatches: number };
}

interface SavedJson {
  normalizer: unknown;
  pre_tokenizer: unknown;
  model: { vocab: Record<string, number>; merges?: (string | [string, string])[] };
}

function splitMerge(m: string | [string, string]): [string, string] {
  if (Array.isArray(m)) return m;
  const i = m.indexOf(' ');
  return [m.slice(0, i), m.slice(i + 1)];
}

function addedToken(id: number, content: string, lstrip = false): Record<string, unknown> {
  return { id, content, single_word: false, lstrip, rstrip: false, normalized: false, special: true };
}

/** The learned tokens in the order the trainer created them (the alphabet first, then one token per merge). */
function learnedOrder(vocab: Record<string, number>): string[] {
  return Object.entries(vocab)
    .sort((a, b) => a[1] - b[1])
    .map(([t]) => t);
}

/**
 * The Node bindings train with the model's default trainer (no vocabulary size, no special tokens), so the
 * trained file is rebuilt here: special tokens first (RoBERTa's ids 0–4), then for BPE the full 256-symbol
 * byte alphabet (any input can be encoded, no unknown token needed), then the learned tokens in creation
 * order, cut at `vocabSize`. BPE training is greedy, so the first K merges are exactly what a trainer
 * stopped at K merges produces; merges whose token was cut are dropped with it.
 */
function rebuildBpe(saved: SavedJson, vocabSize: number): { json: object; size: number } {
  const vocab = new Map<string, number>();
  const add = (t: string): void => {
    if (!vocab.has(t) && vocab.size < vocabSize) vocab.set(t, vocab.size);
  };
  BPE_SPECIAL_TOKENS.forEach(add);
  [...byteLevelAlphabet()].sort().forEach(add);
  learnedOrder(saved.model.vocab).forEach(add);
  const merges: [string, string][] = [];
  for (const m of saved.model.merges ?? []) {
    const [a, b] = splitMerge(m);
    if (!vocab.has(a) || !vocab.has(b) || !vocab.has(a + b)) break;
    merges.push([a, b]);
  }
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: BPE_SPECIAL_TOKENS.map((t, i) => addedToken(i, t, t === '<mask>')),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'RobertaProcessing', sep: ['</s>', 2], cls: ['<s>', 0], trim_offsets: true, add_prefix_space: false },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges,
    },
  };
  return { json, size: vocab.size };
}

function rebuildWordPiece(saved: SavedJson, vocabSize: number): { json: object; size: number } {
  const vocab = new Map<string, number>();
  const add = (t: string): void => {
    if (!vocab.has(t) && vocab.size < vocabSize) vocab.set(t, vocab.size);
  };
  WORDPIECE_SPECIAL_TOKENS.forEach(add);
  learnedOrder(saved.model.vocab).forEach(add);
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: WORDPIECE_SPECIAL_TOKENS.map((t, i) => addedToken(i, t)),
    normalizer: saved.normalizer,
    pre_tokenizer: saved.pre_tokenizer,
    post_processor: { type: 'BertProcessing', sep: ['[SEP]', 3], cls: ['[CLS]', 2] },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab: Object.fromEntries(vocab) },
  };
  return { json, size: vocab.size };
}

/**
 * Trains a vocabulary with Hugging Face `tokenizers` (the Rust library through its Node bindings) on the texts
 * of `sources` and writes a `tokenizer.json` that `loadTokenizer` reads. Checks that the Rust library and the
 * JavaScript loader give identical ids for the written file on a sample of the training texts.
 */
export async function trainTokenizer(options: TrainTokenizerOptions): Promise<TrainTokenizerResult> {
  const type = options.type ?? 'bpe';
  if (type !== 'bpe' && type !== 'wordpiece') throw new RangeError(`type must be bpe or wordpiece, got ${JSON.stringify(type)}`);
  const minSize = type === 'bpe' ? BPE_SPECIAL_TOKENS.length + 256 : WORDPIECE_SPECIAL_TOKENS.length + 1;
  if (!Number.isInteger(options.vocabSize) || options.vocabSize < minSize) {
    throw new RangeError(`vocabSize must be an integer >= ${minSize} for ${type}, got ${String(options.vocabSize)}`);
  }
  if (options.sources.length === 0) throw new RangeError('sources must name at least one text source');

  const seen = new Set<string>();
  const texts: string[] = [];
  const perSource: TrainTokenizerResult['perSource'] = [];
  for (const source of options.sources) {
    let n = 0;
    for await (const t of readTexts(source)) {
      n++;
      if (!seen.has(t)) {
        seen.add(t);
        texts.push(t);
      }
    }
    perSource.push({ kind: source.kind, path: source.path, texts: n });
  }
  if (texts.length === 0) throw new RangeError(`the sources hold no text: ${options.sources.map((s) => `${s.kind}:${s.path}`).join(', ')}`);

  const work = await mkdtemp(join(tmpdir(), 'm3ae-tokenizer-'));
  try {
    const corpus = join(work, 'corpus.txt');
    await writeFile(corpus, texts.join('\n') + '\n');
    let rust: RustTokenizer;
    if (type === 'bpe') {
      rust = new RustTokenizer(BPE.empty());
      rust.setPreTokenizer(byteLevelPreTokenizer(false, true));
    } else {
      rust = new RustTokenizer(WordPiece.empty() as unknown as ConstructorParameters<typeof RustTokenizer>[0]);
      rust.setNormalizer(bertNormalizer({ lowercase: true, stripAccents: true, cleanText: true, handleChineseChars: true }));
      rust.setPreTokenizer(bertPreTokenizer());
    }
    rust.train([corpus]);
    const raw = join(work, 'trained.json');
    rust.save(raw);
    const saved = JSON.parse(await readFile(raw, 'utf8')) as SavedJson;
    const { json, size } = type === 'bpe' ? rebuildBpe(saved, options.vocabSize) : rebuildWordPiece(saved, options.vocabSize);

    await mkdir(dirname(options.output), { recursive: true });
    await writeFileAtomic(options.output, JSON.stringify(json));

    const agreement = await checkAgreement(options.output, texts, options.agreementSamples ?? 500);
    return { output: options.output, type, texts: texts.length, perSource, vocabSize: size, exhausted: size < options.vocabSize, agreement };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Encodes texts (evenly spread over the corpus) with the Rust library and the JavaScript loader, with special
 * tokens and truncation/padding to 64, and counts those whose ids differ.
 */
export async function checkAgreement(file: string, texts: readonly string[], samples: number): Promise<{ checked: number; mismatches: number }> {
  const js = await loadTokenizer(file);
  const rust = RustTokenizer.fromFile(file);
  const maxLength = 64;
  rust.setTruncation(maxLength);
  rust.setPadding({ maxLength, padId: js.special.pad, padToken: rust.idToToken(js.special.pad) ?? undefined });
  const n = Math.min(samples, texts.length);
  let mismatches = 0;
  for (let k = 0; k < n; k++) {
    const text = texts[Math.floor((k * texts.length) / n)] as string;
    const a = (await rust.encode(text)).getIds();
    const b = js.encode(text, maxLength).inputIds;
    if (a.length !== b.length || a.some((id, i) => id !== b[i])) mismatches++;
  }
  return { checked: n, mismatches };
}
