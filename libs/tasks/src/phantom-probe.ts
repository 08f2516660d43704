import { join } from 'node:path';
import { hashUniforms, loadImage, type PhantomManifestLine, type TextTokenizer } from '@m3ae/data';
import { computeLosses, createModel, flattenParams, mimKeepCount, numPatches, setParamsFromFlat, type M3AEConfig, type M3AEModel, type PretrainBatch } from '@m3ae/model';
import { emptyPretrainBatch } from '@m3ae/protocol';

/*
 * A probe of what pre-training learnt, on the phantom corpus (procedural images whose captions state what the image
 * shows): masked words that describe the image are predicted with the true image and with another sample's image —
 * cross-modal learning shows as a gap — and the MIM loss on held-out images is set against predicting each masked
 * patch's mean. `m3ae bench learning` (a) reports it.
 */

/** The image-describing words of phantom captions, by attribute (surface forms as the caption generator writes them). */
export const IMAGE_WORDS: Readonly<Record<string, readonly string[]>> = {
  density: ['hyperdense', 'hypodense', 'hyperintense', 'hypointense', 'radiopaque', 'radiolucent'],
  size: ['medium-sized', 'small', 'large'],
  shape: ['irregular', 'round', 'oval'],
  location: ['left upper', 'right upper', 'left lower', 'right lower'],
  region: ['abdomen', 'pelvis', 'chest', 'head'],
  plane: ['sagittal', 'coronal', 'frontal', 'lateral', 'axial'],
  modality: ['radiograph', 'MRI', 'CT'],
};

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');
}

function startsWithIds(a: Int32Array, prefix: Int32Array): boolean {
  if (prefix.length > a.length) return false;
  for (let i = 0; i < prefix.length; i++) if (a[i] !== prefix[i]) return false;
  return true;
}

/** Token positions (within the assembled sequence) of one attribute's word in a caption, or undefined. */
export function wordTokenSpan(tok: TextTokenizer, caption: string, words: readonly string[], maxLength: number): [number, number] | undefined {
  for (const w of words) {
    const m = new RegExp(`(?<![\\w-])${escapeRegExp(w)}(?![\\w-])`, 'i').exec(caption);
    if (!m) continue;
    const all = tok.encodeContent(caption);
    const before = tok.encodeContent(caption.slice(0, m.index).trimEnd());
    const upto = tok.encodeContent(caption.slice(0, m.index + w.length));
    // Byte-level BPE attaches the space to the following word: the word's tokens are upto minus before.
    if (!startsWithIds(all, upto) || !startsWithIds(upto, before) || upto.length === before.length) return undefined;
    const start = tok.prefix.length + before.length;
    const end = tok.prefix.length + upto.length;
    return end <= maxLength - tok.suffix.length ? [start, end] : undefined;
  }
  return undefined;
}

/** MLM-only or MIM-only copy of a model (same parameters, other objectives off) for evaluation passes. */
async function evalCopy(model: M3AEModel, only: 'mlm' | 'mim'): Promise<M3AEModel> {
  const off = { enabled: false, weight: 1 };
  const on = { enabled: true, weight: 1 };
  const c: M3AEConfig = { ...model.config, objectives: { mlm: only === 'mlm' ? on : off, mim: only === 'mim' ? on : off, itm: off } };
  const copy = createModel(c, { zeroInit: true });
  if (copy.manifest.hash !== model.manifest.hash) throw new Error('evaluation copy has another parameter manifest');
  setParamsFromFlat(copy, await flattenParams(model));
  return copy;
}

export interface PhantomEval {
  byAttribute: Record<string, { trueCorrect: number; mismatchedCorrect: number; tokens: number }>;
  mimLoss: number;
  mimBaseline: number;
  maskedPatches: number;
}

/** Loss of predicting every masked patch's own mean: the mean square of the per-patch-normalised targets. */
export function patchMeanBaseline(pixels: Float32Array, B: number, size: number, patch: number, noise: Float32Array, keep: number): { loss: number; patches: number } {
  const g = size / patch;
  const N = g * g;
  const plane = size * size;
  const dim = 3 * patch * patch;
  let total = 0;
  let patches = 0;
  for (let b = 0; b < B; b++) {
    const order = Array.from({ length: N }, (_, i) => i).sort((x, y) => (noise[b * N + x] as number) - (noise[b * N + y] as number) || x - y);
    for (const p of order.slice(keep)) {
      const gy = Math.floor(p / g);
      const gx = p % g;
      const v: number[] = [];
      for (let c = 0; c < 3; c++) for (let y = 0; y < patch; y++) for (let x = 0; x < patch; x++) v.push(pixels[b * 3 * plane + c * plane + (gy * patch + y) * size + gx * patch + x] as number);
      const mean = v.reduce((s, a) => s + a, 0) / dim;
      const varU = v.reduce((s, a) => s + (a - mean) ** 2, 0) / (dim - 1);
      total += v.reduce((s, a) => s + (a - mean) ** 2, 0) / (varU + 1e-6) / dim;
      patches++;
    }
  }
  return { loss: total / patches, patches };
}

/** An evaluation batch to fill in: nothing masked, matching pairs, no dropout (the model is in eval mode). */
function blankBatch(B: number, H: number, L: number, N: number): PretrainBatch {
  const batch = emptyPretrainBatch(B, H, L, N);
  batch.mlmLabels.fill(-100);
  batch.itmLabels.fill(1);
  return batch;
}

export async function evaluatePhantom(model: M3AEModel, tok: TextTokenizer, lines: PhantomManifestLine[], dir: string, seed: number): Promise<PhantomEval> {
  const c = model.config;
  const L = c.maxTextLength;
  const H = c.imageSize;
  const N = numPatches(c);
  const plane = 3 * H * H;
  const images = await Promise.all(lines.map((l) => loadImage(join(dir, l.image), { size: H })));
  const mlm = await evalCopy(model, 'mlm');
  const mim = await evalCopy(model, 'mim');
  try {
    const byAttribute: PhantomEval['byAttribute'] = {};
    for (const [attr, words] of Object.entries(IMAGE_WORDS)) {
      const inst: { i: number; ids: Int32Array; mask: Int32Array; span: [number, number] }[] = [];
      lines.forEach((l, i) => {
        const span = wordTokenSpan(tok, l.text, words, L);
        if (!span) return;
        const enc = tok.encode(l.text, L);
        inst.push({ i, ids: enc.inputIds, mask: enc.attentionMask, span });
      });
      const res = { trueCorrect: 0, mismatchedCorrect: 0, tokens: 0 };
      for (const mismatched of [false, true]) {
        for (let s = 0; s < inst.length; s += 16) {
          const part = inst.slice(s, s + 16);
          const B = part.length;
          const batch = blankBatch(B, H, L, N);
          part.forEach((x, b) => {
            // The mismatched image is the next sample's (a derangement of the evaluation set).
            const img = images[mismatched ? (x.i + 1) % images.length : x.i] as Float32Array;
            batch.pixelValues.set(img, b * plane);
            batch.itmPixelValues.set(img, b * plane);
            batch.inputIds.set(x.ids, b * L);
            batch.attentionMask.set(x.mask, b * L);
            batch.mlmInputIds.set(x.ids, b * L);
            for (let t = x.span[0]; t < x.span[1]; t++) {
              batch.mlmInputIds[b * L + t] = tok.special.mask;
              batch.mlmLabels[b * L + t] = x.ids[t] as number;
            }
          });
          const r = await computeLosses(mlm, batch);
          if (mismatched) res.mismatchedCorrect += r.correct.mlm;
          else {
            res.trueCorrect += r.correct.mlm;
            res.tokens += r.counts.mlm;
          }
        }
      }
      byAttribute[attr] = res;
    }
    // MIM on the held-out images, text unmasked, the same noise for model and baseline.
    let mimSum = 0;
    let mimCount = 0;
    let baseSum = 0;
    for (let s = 0; s < lines.length; s += 16) {
      const idx = Array.from({ length: Math.min(16, lines.length - s) }, (_, k) => s + k);
      const B = idx.length;
      const batch = blankBatch(B, H, L, N);
      idx.forEach((i, b) => {
        batch.pixelValues.set(images[i] as Float32Array, b * plane);
        const enc = tok.encode((lines[i] as PhantomManifestLine).text, L);
        batch.inputIds.set(enc.inputIds, b * L);
        batch.attentionMask.set(enc.attentionMask, b * L);
        batch.mlmInputIds.set(enc.inputIds, b * L);
        batch.mimNoise.set(hashUniforms(seed, 0, 1_000_000 + i, 'mim', N), b * N);
      });
      const r = await computeLosses(mim, batch);
      mimSum += r.sums.mim;
      mimCount += r.counts.mim;
      const base = patchMeanBaseline(batch.pixelValues, B, H, c.patchSize, batch.mimNoise, mimKeepCount(c));
      baseSum += base.loss * base.patches;
    }
    return { byAttribute, mimLoss: mimSum / mimCount, mimBaseline: baseSum / mimCount, maskedPatches: mimCount };
  } finally {
    mlm.dispose();
    mim.dispose();
  }
}

