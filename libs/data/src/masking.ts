import { CounterRng } from './rng.js';
import type { TextTokenizer } from './tokenizer/load.js';

/** What masking needs to know about the vocabulary. */
export type MaskingVocabulary = Pick<TextTokenizer, 'specialIds' | 'vocabSize'> & { special: { mask: number } };

export interface MlmMaskOptions {
  /** One sample's ids [L]. */
  inputIds: Int32Array;
  /** [L]: 1 = real token, 0 = padding (never chosen). */
  attentionMask: Int32Array;
  vocab: MaskingVocabulary;
  /** @defaultValue 0.15 */
  probability?: number;
  seed: number;
  step: number;
  /** The dataset index of the sample (not its position in the batch). */
  sampleIndex: number;
  /** Where to write [L] each (e.g. subarrays of a batch); fresh arrays when absent. */
  out?: { mlmInputIds: Int32Array; mlmLabels: Int32Array };
}

export interface MlmMaskResult {
  mlmInputIds: Int32Array;
  mlmLabels: Int32Array;
  /** Masked positions (those with a label): MLM's share of the loss normaliser. May be 0. */
  count: number;
}

/** Label of a position that is not predicted (PyTorch's cross-entropy `ignore_index`). */
export const IGNORE_INDEX = -100;

const INV_2_32 = 1 / 4294967296;

/**
 * BERT masking exactly as the official code uses it (Hugging Face `DataCollatorForLanguageModeling`): every
 * real, non-special token is chosen independently with probability `probability`; a chosen token becomes the
 * mask token with probability 0.8, else a uniformly random vocabulary id (any id in [0, len(tokenizer)), as
 * `torch.randint(len(tokenizer))` draws) with probability 0.5, else stays; labels are the original id at chosen
 * positions and -100 elsewhere. A sample may get no masked token at all (the Bernoulli draws can all fail):
 * like the reference, nothing is forced; its count is 0 and the global normaliser simply excludes it.
 *
 * The draws for position i are the four words of Philox block i at (seed, step, sampleIndex, 'mlm'), so a
 * token's fate depends only on (seed, step, sampleIndex, position) — not on the batch, the worker or L.
 */
export function maskTokens(options: MlmMaskOptions): MlmMaskResult {
  const { inputIds, attentionMask, vocab } = options;
  const probability = options.probability ?? 0.15;
  if (!(probability >= 0 && probability <= 1)) throw new RangeError(`mlmProbability must be in [0, 1], got ${String(probability)}`);
  const L = inputIds.length;
  if (attentionMask.length !== L) throw new RangeError(`attentionMask has length ${attentionMask.length}, expected ${L} (as inputIds)`);
  const mlmInputIds = options.out?.mlmInputIds ?? new Int32Array(L);
  const mlmLabels = options.out?.mlmLabels ?? new Int32Array(L);
  if (mlmInputIds.length !== L || mlmLabels.length !== L) throw new RangeError(`out arrays must have length ${L}`);
  const rng = new CounterRng(options.seed, options.step, options.sampleIndex, 'mlm');
  const words = new Uint32Array(4);
  const maskId = vocab.special.mask;
  const V = vocab.vocabSize;
  let count = 0;
  for (let i = 0; i < L; i++) {
    const id = inputIds[i] as number;
    mlmInputIds[i] = id;
    mlmLabels[i] = IGNORE_INDEX;
    if (attentionMask[i] !== 1 || vocab.specialIds.has(id)) continue;
    rng.blockAt(i, words);
    if ((words[0] as number) * INV_2_32 >= probability) continue;
    count++;
    mlmLabels[i] = id;
    if ((words[1] as number) * INV_2_32 < 0.8) mlmInputIds[i] = maskId;
    else if ((words[2] as number) * INV_2_32 < 0.5) mlmInputIds[i] = Math.floor((words[3] as number) * V * INV_2_32); // exact: product < 2^53
  }
  return { mlmInputIds, mlmLabels, count };
}
