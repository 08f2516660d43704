import { mimKeepCount, numPatches, type M3AEConfig } from './config.js';
import type { PretrainBatch } from '@m3ae/protocol';

export type { PretrainBatch };


export class BatchError extends Error {
  override readonly name = 'BatchError';
}

/** Checks sizes and value ranges against the configuration; the error names the field, value and expectation. */
export function validateBatch(config: M3AEConfig, b: PretrainBatch): void {
  const fail = (field: string, got: string, expected: string): never => {
    throw new BatchError(`batch.${field}: got ${got}; expected ${expected}`);
  };
  if (!Number.isInteger(b.batchSize) || b.batchSize < 1) fail('batchSize', String(b.batchSize), 'a positive integer');
  if (b.imageSize !== config.imageSize) fail('imageSize', String(b.imageSize), `config.imageSize = ${config.imageSize}`);
  if (!Number.isInteger(b.textLength) || b.textLength < 1 || b.textLength > config.maxTextLength) {
    fail('textLength', String(b.textLength), `an integer in [1, maxTextLength = ${config.maxTextLength}]`);
  }
  const B = b.batchSize;
  const L = b.textLength;
  const img = B * 3 * b.imageSize * b.imageSize;
  const n = numPatches(config);
  const sizes: [keyof PretrainBatch, number][] = [
    ['pixelValues', img], ['itmPixelValues', img], ['inputIds', B * L], ['attentionMask', B * L], ['mlmInputIds', B * L],
    ['mlmLabels', B * L], ['mimNoise', B * n], ['itmLabels', B], ['dropoutSeeds', B],
  ];
  for (const [field, size] of sizes) {
    const arr = b[field] as ArrayLike<number> | undefined;
    if (!arr || arr.length !== size) fail(field, `${arr ? arr.length : 'nothing'} values`, `${size}`);
  }
  const V = config.vocabSize;
  for (const field of ['inputIds', 'mlmInputIds'] as const) {
    const a = b[field];
    for (let i = 0; i < a.length; i++) {
      const v = a[i] ?? 0;
      if (v < 0 || v >= V) fail(`${field}[${i}]`, String(v), `a token id in [0, ${V})`);
    }
  }
  for (let i = 0; i < b.mlmLabels.length; i++) {
    const v = b.mlmLabels[i] ?? 0;
    if (v !== -100 && (v < 0 || v >= V)) fail(`mlmLabels[${i}]`, String(v), `-100 or a token id in [0, ${V})`);
  }
  for (let i = 0; i < b.attentionMask.length; i++) {
    const v = b.attentionMask[i];
    if (v !== 0 && v !== 1) fail(`attentionMask[${i}]`, String(v), '0 or 1');
  }
  for (let i = 0; i < B; i++) {
    const v = b.itmLabels[i];
    if (v !== 0 && v !== 1) fail(`itmLabels[${i}]`, String(v), '0 or 1');
    if (b.attentionMask[i * L] !== 1) fail(`attentionMask[${i * L}]`, String(b.attentionMask[i * L]), '1 (every text starts with a real token)');
  }
  if (mimKeepCount(config) < 1) fail('mimNoise', 'a mask ratio keeping no patch', 'at least one kept patch');
}

/**
 * The batch with its text cut to the longest text in it: the columns after the last real token (attention mask 1)
 * or MLM label of every sample, which hold only padding, are dropped. The model's result is the same: padding keys
 * get no attention weight, padding queries feed no loss, and dropout masks are indexed independently of the length
 * (`Dropout.mask`'s canonical shape). Returns the batch itself when nothing can be cut.
 */
export function trimTextPadding(b: PretrainBatch): PretrainBatch {
  const B = b.batchSize;
  const L = b.textLength;
  let longest = 1;
  for (let s = 0; s < B; s++) {
    for (let t = L - 1; t >= longest; t--) {
      const i = s * L + t;
      if (b.attentionMask[i] === 1 || b.mlmLabels[i] !== -100) {
        longest = t + 1;
        break;
      }
    }
  }
  if (longest === L) return b;
  const cut = (a: Int32Array): Int32Array => {
    const out = new Int32Array(B * longest);
    for (let s = 0; s < B; s++) out.set(a.subarray(s * L, s * L + longest), s * longest);
    return out;
  };
  return { ...b, textLength: longest, inputIds: cut(b.inputIds), attentionMask: cut(b.attentionMask), mlmInputIds: cut(b.mlmInputIds), mlmLabels: cut(b.mlmLabels) };
}
