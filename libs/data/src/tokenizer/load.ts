import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';

/** Ids of the tokens the pipeline needs, found in the tokenizer file (RoBERTa: `<s> </s> <pad> <mask> <unk>`). */
export interface SpecialTokenIds {
  /** `<s>` / `[CLS]`: the first token of every sequence (RoBERTa's bos). */
  cls: number;
  /** `</s>` / `[SEP]`: the last token of every sequence (RoBERTa's eos). */
  sep: number;
  pad: number;
  mask: number;
  /** Absent in byte-level vocabularies that cannot produce an unknown token. */
  unk: number | undefined;
}

/** Input ids and attention mask of one text at a fixed length (the official `padding="max_length", truncation=True`). */
export interface TextEncoding {
  inputIds: Int32Array;
  attentionMask: Int32Array;
}

/**
 * A Hugging Face `tokenizer.json` loaded with `@huggingface/tokenizers` (pure JavaScript: the same code in the
 * coordinator, in workers and in the browser).
 */
export interface TextTokenizer {
  /** The file it came from. */
  readonly path: string;
  /** SHA-256 of the file's bytes: shards record it so stored token ids are only reused with the same vocabulary. */
  readonly hash: string;
  /** `BPE`, `WordPiece`, `Unigram`, … (the file's `model.type`). */
  readonly modelType: string;
  /** `len(tokenizer)`: one more than the largest id, added tokens included (the range of MLM's random tokens). */
  readonly vocabSize: number;
  readonly special: SpecialTokenIds;
  /** Every special id (the five above and every added token marked special): never chosen for masking. */
  readonly specialIds: ReadonlySet<number>;
  /** Tokens the post-processor puts before and after a single sequence (RoBERTa: [<s>], [</s>]). */
  readonly prefix: readonly number[];
  readonly suffix: readonly number[];
  /** The ids of `text` without special tokens and without truncation. */
  encodeContent(text: string): Int32Array;
  /** prefix + content (truncated to fit) + suffix, padded with `pad` to `maxLength`. Writes into `out` when given. */
  assemble(content: ArrayLike<number>, maxLength: number, out?: TextEncoding): TextEncoding;
  /** `assemble(encodeContent(text), maxLength)`. */
  encode(text: string, maxLength: number): TextEncoding;
  decode(ids: ArrayLike<number>, skipSpecialTokens?: boolean): string;
  tokenToId(token: string): number | undefined;
}

interface TokenizerJson {
  model?: { type?: string; unk_token?: string | null; vocab?: unknown };
  added_tokens?: { id: number; content: string; special?: boolean }[];
  padding?: { pad_id?: number; pad_token?: string } | null;
}

export class TokenizerFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenizerFileError';
  }
}

function firstKnown(tok: Tokenizer, candidates: readonly string[]): number | undefined {
  for (const c of candidates) {
    const id = tok.token_to_id(c);
    if (id !== undefined) return id;
  }
  return undefined;
}

function sameAt(haystack: readonly number[], offset: number, needle: readonly number[]): boolean {
  for (let i = 0; i < needle.length; i++) if (haystack[offset + i] !== needle[i]) return false;
  return true;
}

/**
 * The post-processor's single-sequence template, found by encoding a probe with and without special tokens:
 * with = prefix + content + suffix. Works for RobertaProcessing, BertProcessing, TemplateProcessing and none.
 */
function findTemplate(tok: Tokenizer, path: string): { prefix: number[]; suffix: number[] } {
  const probe = 'the chest radiograph';
  const content = tok.encode(probe, { add_special_tokens: false }).ids;
  const full = tok.encode(probe, { add_special_tokens: true }).ids;
  const added = full.length - content.length;
  if (added < 0) throw new TokenizerFileError(`${path}: encoding with special tokens is shorter than without`);
  for (let p = 0; p <= added; p++) {
    if (sameAt(full, p, content)) return { prefix: full.slice(0, p), suffix: full.slice(p + content.length) };
  }
  throw new TokenizerFileError(`${path}: could not find the text inside its encoding with special tokens`);
}

class HfTokenizer implements TextTokenizer {
  readonly specialIds: ReadonlySet<number>;

  constructor(
    private readonly tok: Tokenizer,
    readonly path: string,
    readonly hash: string,
    readonly modelType: string,
    readonly vocabSize: number,
    readonly special: SpecialTokenIds,
    extraSpecial: readonly number[],
    readonly prefix: readonly number[],
    readonly suffix: readonly number[],
  ) {
    const ids = new Set<number>(extraSpecial);
    for (const id of [special.cls, special.sep, special.pad, special.mask, special.unk]) if (id !== undefined) ids.add(id);
    this.specialIds = ids;
  }

  encodeContent(text: string): Int32Array {
    return Int32Array.from(this.tok.encode(text, { add_special_tokens: false }).ids);
  }

  assemble(content: ArrayLike<number>, maxLength: number, out?: TextEncoding): TextEncoding {
    const room = maxLength - this.prefix.length - this.suffix.length;
    if (!Number.isInteger(maxLength) || room < 0) {
      throw new RangeError(`maxLength must be an integer >= ${this.prefix.length + this.suffix.length} (the special tokens), got ${String(maxLength)}`);
    }
    const inputIds = out?.inputIds ?? new Int32Array(maxLength);
    const attentionMask = out?.attentionMask ?? new Int32Array(maxLength);
    if (inputIds.length !== maxLength || attentionMask.length !== maxLength) {
      throw new RangeError(`assemble: out arrays must have length ${maxLength}, got ${inputIds.length} and ${attentionMask.length}`);
    }
    const n = Math.min(content.length, room); // HF truncation of a single sequence: drop the end of the content
    let k = 0;
    for (const id of this.prefix) inputIds[k++] = id;
    for (let i = 0; i < n; i++) inputIds[k++] = content[i] as number;
    for (const id of this.suffix) inputIds[k++] = id;
    attentionMask.fill(1, 0, k);
    attentionMask.fill(0, k);
    inputIds.fill(this.special.pad, k);
    return { inputIds, attentionMask };
  }

  encode(text: string, maxLength: number): TextEncoding {
    return this.assemble(this.encodeContent(text), maxLength);
  }

  decode(ids: ArrayLike<number>, skipSpecialTokens = true): string {
    return this.tok.decode(Array.from(ids), { skip_special_tokens: skipSpecialTokens });
  }

  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }
}

/**
 * Loads a Hugging Face `tokenizer.json` (RoBERTa byte-level BPE, BERT WordPiece, or any other the library
 * supports) from a local path; a `tokenizer_config.json` beside it is used when present. The special tokens
 * are discovered from the file: the post-processor's template gives cls/sep, the usual spellings give pad,
 * mask and unk (`padding.pad_id` and `model.unk_token` first when the file sets them).
 */
export async function loadTokenizer(path: string): Promise<TextTokenizer> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new TokenizerFileError(`tokenizer file not readable: ${path} (${(e as Error).message})`);
  }
  let json: TokenizerJson;
  try {
    json = JSON.parse(bytes.toString('utf8')) as TokenizerJson;
  } catch (e) {
    throw new TokenizerFileError(`${path}: not valid JSON (${(e as Error).message}); expected a Hugging Face tokenizer.json`);
  }
  if (typeof json !== 'object' || json === null || typeof json.model?.type !== 'string') {
    throw new TokenizerFileError(`${path}: model.type is missing; expected a Hugging Face tokenizer.json`);
  }
  const configPath = join(dirname(path), 'tokenizer_config.json');
  const config: object = existsSync(configPath) ? (JSON.parse(await readFile(configPath, 'utf8')) as object) : {};
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json, config);
  } catch (e) {
    throw new TokenizerFileError(`${path}: ${(e as Error).message}`);
  }

  const { prefix, suffix } = findTemplate(tok, path);
  const vocab = tok.get_vocab(true);
  let maxId = -1;
  for (const id of vocab.values()) if (id > maxId) maxId = id;

  const cls = prefix[0] ?? firstKnown(tok, ['<s>', '[CLS]', '<|startoftext|>']);
  const sep = suffix[suffix.length - 1] ?? firstKnown(tok, ['</s>', '[SEP]', '<|endoftext|>']);
  const padFromFile = json.padding?.pad_id ?? (json.padding?.pad_token ? tok.token_to_id(json.padding.pad_token) : undefined);
  const pad = padFromFile ?? firstKnown(tok, ['<pad>', '[PAD]', '<|pad|>']);
  const mask = firstKnown(tok, ['<mask>', '[MASK]', '<|mask|>']);
  const unkToken = json.model.unk_token;
  const unk = (unkToken ? tok.token_to_id(unkToken) : undefined) ?? firstKnown(tok, ['<unk>', '[UNK]']);
  const missing = (name: string, spellings: string): never => {
    throw new TokenizerFileError(`${path}: no ${name} token; expected one of ${spellings} in the vocabulary`);
  };
  const special: SpecialTokenIds = {
    cls: cls ?? missing('cls/bos', '<s>, [CLS]'),
    sep: sep ?? missing('sep/eos', '</s>, [SEP]'),
    pad: pad ?? missing('padding', '<pad>, [PAD] (or padding.pad_id)'),
    mask: mask ?? missing('mask', '<mask>, [MASK]'),
    unk,
  };
  const extra = (json.added_tokens ?? []).filter((t) => t.special === true).map((t) => t.id);
  const hash = createHash('sha256').update(bytes).digest('hex');
  return new HfTokenizer(tok, path, hash, json.model.type, maxId + 1, special, extra, prefix, suffix);
}
