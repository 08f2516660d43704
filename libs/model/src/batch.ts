import { mimKeepCount, numPatches, type M3AEConfig } from './config.js';

/**
 * One (micro-)batch of pre-training inputs. Every random choice (MLM masking, MIM noise, ITM negatives, dropout
 * seeds) was made by the data lib as a pure function of (seed, step, sample index); the model draws nothing.
 * Structurally identical to the shape `libs/data` returns (`PretrainBatch` of libs/data/src/batch.ts; no import between the two).
 */
export interface PretrainBatch {
  batchSize: number; // B
  imageSize: number; // H = W
  textLength: number; // L (= config.maxTextLength)
  pixelValues: Float32Array; // [B,3,H,W], CLIP mean/std normalised (NCHW, batch-first)
  inputIds: Int32Array; // [B,L] tokenised text, padded with padTokenId
  attentionMask: Int32Array; // [B,L] 1 = real token, 0 = padding
  mlmInputIds: Int32Array; // [B,L] after 15% / 80-10-10 masking
  mlmLabels: Int32Array; // [B,L] original id at masked positions, -100 elsewhere
  mimNoise: Float32Array; // [B,N] uniform [0,1); keep the floor(N*(1-mimMaskRatio)) smallest (MAE argsort)
  itmPixelValues: Float32Array; // [B,3,H,W] the image paired with the text for ITM (the true one or a negative)
  itmLabels: Int32Array; // [B] 1 = matching pair, 0 = mismatched
  dropoutSeeds: Int32Array; // [B] per-sample seeds; dropout masks derive only from these
}

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
