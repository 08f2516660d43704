import { normalizeRgb } from '../images/normalize.js';
import type { TextTokenizer } from '../tokenizer/load.js';
import type { ShardDataset } from './reader.js';

/** One fixed example of a dataset, ready for a model: CLIP-normalised image, tokenised text. */
export interface ValidationSample {
  /** [3,H,W] CLIP-normalised. */
  pixelValues: Float32Array;
  /** [L] token ids and mask (L = the requested text length). */
  inputIds: Int32Array;
  attentionMask: Int32Array;
}

export interface ValidationSamplesOptions {
  dataset: Pick<ShardDataset, 'size' | 'get'>;
  tokenizer: Pick<TextTokenizer, 'encode'>;
  /** The model's image side: every picture must be imageSize×imageSize. */
  imageSize: number;
  /** The model's text length. */
  maxTextLength: number;
  /** Examples spread evenly over the dataset. @defaultValue 4 */
  count?: number;
  /** These indices instead of `count` spread ones. */
  indices?: readonly number[];
}

/** Fixed examples of a shard dataset (e.g. for reconstruction grids): `count` indices spread evenly over it, or the given ones. */
export async function validationSamples(options: ValidationSamplesOptions): Promise<ValidationSample[]> {
  const { dataset, tokenizer, imageSize } = options;
  const count = Math.min(options.count ?? 4, dataset.size);
  const indices = options.indices ?? Array.from({ length: count }, (_, i) => Math.floor((i * dataset.size) / count));
  const out: ValidationSample[] = [];
  for (const index of indices) {
    if (!(Number.isInteger(index) && index >= 0 && index < dataset.size)) throw new RangeError(`validation index ${index}: expected an integer in [0, ${dataset.size})`);
    const s = await dataset.get(index);
    if (s.image.width !== imageSize || s.image.height !== imageSize) {
      throw new RangeError(`validation sample ${index}: image is ${s.image.width}×${s.image.height}; expected the model's ${imageSize}×${imageSize}`);
    }
    const enc = tokenizer.encode(s.text, options.maxTextLength);
    out.push({ pixelValues: normalizeRgb(s.image.data, imageSize, imageSize), inputIds: enc.inputIds, attentionMask: enc.attentionMask });
  }
  return out;
}
