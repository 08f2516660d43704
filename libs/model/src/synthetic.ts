import { emptyPretrainBatch, type DownstreamBatch, type PretrainBatch } from '@m3ae/protocol';
import { numPatches, trainingTextLength, type M3AEConfig } from './config.js';
import { HashStream, hashWords } from './random.js';

/**
 * A synthetic pre-training batch (random pixels and tokens, masks as the data lib makes them) for tests and
 * benchmarks of the model alone. Sample i of the batch is a pure function of (seed, firstIndex + i), so a
 * batch of 8 and two batches of 4 with firstIndex 0 and 4 hold the same samples.
 */
export function syntheticBatch(config: M3AEConfig, batchSize: number, seed = 0, firstIndex = 0): PretrainBatch {
  const S = config.imageSize;
  const L = trainingTextLength(config);
  const N = numPatches(config);
  const V = config.vocabSize;
  const pad = config.padTokenId;
  const img = 3 * S * S;
  const b = emptyPretrainBatch(batchSize, S, L, N);
  b.inputIds.fill(pad);
  b.mlmInputIds.fill(pad);
  b.mlmLabels.fill(-100);
  // Special ids kept away from random tokens: 0..3 (<s>, <pad>, </s>, <unk>) and the last id as <mask>.
  const bos = 0;
  const eos = 2;
  const maskId = V - 1;
  for (let s = 0; s < batchSize; s++) {
    const r = new HashStream(hashWords(seed, firstIndex + s, 0x73796e));
    // Smooth-ish images: a per-sample colour gradient plus noise, roughly CLIP-normalised scale.
    const a = r.normal();
    const bgrad = r.normal();
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < S; y++) {
        for (let x = 0; x < S; x++) {
          const v = 0.5 * a * Math.sin((x + c) / 5) + 0.5 * bgrad * Math.cos(y / 7) + 0.5 * r.normal();
          b.pixelValues[s * img + c * S * S + y * S + x] = v;
          b.itmPixelValues[s * img + c * S * S + y * S + x] = 0.5 * r.normal();
        }
      }
    }
    const len = Math.max(3, Math.min(L, 3 + Math.floor(r.uniform() * (L - 2))));
    let masked = 0;
    for (let i = 0; i < len; i++) {
      const k = s * L + i;
      const id = i === 0 ? bos : i === len - 1 ? eos : 4 + Math.floor(r.uniform() * (V - 5));
      b.inputIds[k] = id;
      b.attentionMask[k] = 1;
      b.mlmInputIds[k] = id;
      const special = i === 0 || i === len - 1;
      // At least one masked token per sample so every sample contributes to MLM.
      if (!special && (r.uniform() < config.mlmMaskRatio || (masked === 0 && i === len - 2))) {
        masked++;
        b.mlmLabels[k] = id;
        const u = r.uniform();
        b.mlmInputIds[k] = u < 0.8 ? maskId : u < 0.9 ? 4 + Math.floor(r.uniform() * (V - 5)) : id;
      }
    }
    for (let n = 0; n < N; n++) b.mimNoise[s * N + n] = r.uniform();
    b.itmLabels[s] = r.uniform() < 0.5 ? 1 : 0;
    if (b.itmLabels[s] === 1) b.itmPixelValues.set(b.pixelValues.subarray(s * img, (s + 1) * img), s * img);
    b.dropoutSeeds[s] = hashWords(seed, firstIndex + s, 0x64726f70) | 0;
  }
  return b;
}

/** Samples [start, end) of a batch as a batch (copies). */
export function sliceBatch(b: PretrainBatch, start: number, end: number): PretrainBatch {
  const B = b.batchSize;
  if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start < end && end <= B)) {
    throw new Error(`sliceBatch: got [${start}, ${end}); expected 0 <= start < end <= ${B}`);
  }
  const per = (a: { length: number }): number => a.length / B;
  const cut = <T extends Float32Array | Int32Array>(a: T): T => a.slice(start * per(a), end * per(a)) as T;
  return {
    batchSize: end - start,
    imageSize: b.imageSize,
    textLength: b.textLength,
    pixelValues: cut(b.pixelValues),
    inputIds: cut(b.inputIds),
    attentionMask: cut(b.attentionMask),
    mlmInputIds: cut(b.mlmInputIds),
    mlmLabels: cut(b.mlmLabels),
    mimNoise: cut(b.mimNoise),
    itmPixelValues: cut(b.itmPixelValues),
    itmLabels: cut(b.itmLabels),
    dropoutSeeds: cut(b.dropoutSeeds),
  };
}

/**
 * A synthetic fine-tuning batch for tests: random images and texts (ids in [5, vocab), RoBERTa-like: <s>=0 first,
 * padding 1 at the end), `textsPerExample` texts an example, labels in [0, classes), per-text dropout seeds.
 */
export function syntheticTaskBatch(c: M3AEConfig, B: number, K: number, classes: number, seed: number, L = 8): DownstreamBatch {
  const s = new HashStream(seed);
  const H = c.imageSize;
  const rows = B * K;
  const b: DownstreamBatch = {
    batchSize: B,
    textsPerExample: K,
    imageSize: H,
    textLength: L,
    pixelValues: Float32Array.from({ length: B * 3 * H * H }, () => s.normal()),
    inputIds: new Int32Array(rows * L),
    attentionMask: new Int32Array(rows * L),
    labels: Int32Array.from({ length: B }, () => Math.floor(s.uniform() * classes)),
    dropoutSeeds: Int32Array.from({ length: rows }, () => Math.floor(s.uniform() * 2 ** 31)),
  };
  for (let r = 0; r < rows; r++) {
    const len = 3 + Math.floor(s.uniform() * (L - 3));
    for (let j = 0; j < L; j++) {
      b.inputIds[r * L + j] = j === 0 ? 0 : j < len ? 5 + Math.floor(s.uniform() * (c.vocabSize - 5)) : 1;
      b.attentionMask[r * L + j] = j < len ? 1 : 0;
    }
  }
  return b;
}
