import { loadImage, loadTokenizer } from '@m3ae/data';
import { blankImage, chooseBackend, encodeMaskedText, fillMasked, modelFromCheckpoint, totalVariation } from '@m3ae/model';
import { checkpointTokenizerPath } from './checkpoint-tokenizer.js';

export interface FillOptions {
  checkpoint: string;
  image: string;
  /** With `<mask>` (or `[MASK]`) placeholders. */
  text: string;
  /** A different image to read the text with (besides the blank one). */
  mismatchedImage?: string | undefined;
  topK?: number | undefined;
  tokenizer?: string | undefined;
  backend?: string | undefined;
}

export interface FillToken {
  token: string;
  id: number;
  probability: number;
}

export interface FillSummary {
  checkpoint: string;
  step: number;
  backend: string;
  text: string;
  /** The images the text was read with, in order: `image` (the true one), `blank`, and `mismatched` if given. */
  variants: { name: 'image' | 'blank' | 'mismatched'; source: string }[];
  positions: {
    /** Token index in the encoded text. */
    index: number;
    /** [variant] → the top-k tokens. */
    top: FillToken[][];
    /** [variant] → total variation distance between this variant's distribution and the true image's (0 for itself). */
    shift: number[];
  }[];
}

/**
 * `m3ae fill`: the MLM head's top-k tokens at each `<mask>` of a text, read with the true image, with a blank
 * image and optionally with a mismatched one: how much the image changes the predicted words.
 */
export async function fill(o: FillOptions): Promise<FillSummary> {
  const backend = await chooseBackend({ backend: o.backend });
  const { model, info, path } = await modelFromCheckpoint(o.checkpoint);
  try {
    const c = model.config;
    const tokenizer = await loadTokenizer(checkpointTokenizerPath(info, o.tokenizer));
    if (tokenizer.vocabSize > c.vocabSize) throw new Error(`tokenizer ${tokenizer.path} has ${tokenizer.vocabSize} tokens but the model's vocabulary is ${c.vocabSize}; pass the --tokenizer the run was trained with`);
    let text;
    try {
      text = encodeMaskedText(tokenizer, o.text, c.maxTextLength);
    } catch (e) {
      throw new Error(`--text: ${(e as Error).message}`);
    }
    const variants: FillSummary['variants'] = [
      { name: 'image', source: o.image },
      { name: 'blank', source: 'uniform image at the CLIP mean colour' },
    ];
    const images = [await loadImage(o.image, { size: c.imageSize }), blankImage(c)];
    if (o.mismatchedImage) {
      variants.push({ name: 'mismatched', source: o.mismatchedImage });
      images.push(await loadImage(o.mismatchedImage, { size: c.imageSize }));
    }
    const r = await fillMasked(model, text, images, { topK: o.topK ?? 5 });
    const V = c.vocabSize;
    return {
      checkpoint: path,
      step: info.step,
      backend: backend.name,
      text: o.text,
      variants,
      positions: r.positions.map((index, m) => {
        const dist = (v: number): Float32Array => (r.probabilities[v] as Float32Array).subarray(m * V, (m + 1) * V);
        return {
          index,
          top: r.top.map((perImage) => (perImage[m] ?? []).map((t) => ({ token: tokenizer.decode([t.id], false), id: t.id, probability: t.probability }))),
          shift: variants.map((_, v) => totalVariation(dist(0), dist(v))),
        };
      }),
    };
  } finally {
    model.dispose();
  }
}

/** Three decimals, or two significant digits when smaller (an untrained model's image effect is tiny, not zero). */
function shiftText(x: number): string {
  return x === 0 || x >= 1e-3 ? x.toFixed(3) : x.toExponential(1);
}

/** The summary as a table: one block per mask, one column per image variant. */
export function formatFill(s: FillSummary): string {
  const lines = [`${s.text}`, `checkpoint ${s.checkpoint} (step ${s.step}), backend ${s.backend}`];
  for (const v of s.variants) if (v.name !== 'blank') lines.push(`  ${v.name}: ${v.source}`);
  const width = 24;
  const cellOf = (t: FillToken | undefined): string => (t ? `${JSON.stringify(t.token)} ${(100 * t.probability).toFixed(1)}%` : '').padEnd(width);
  s.positions.forEach((p, i) => {
    lines.push('', `<mask> ${i + 1} (token ${p.index})`);
    lines.push('  ' + s.variants.map((v, k) => `${v.name}${k > 0 ? ` (shift ${shiftText(p.shift[k] ?? 0)})` : ''}`.padEnd(width)).join(' '));
    const k = Math.max(...p.top.map((t) => t.length));
    for (let r = 0; r < k; r++) lines.push('  ' + p.top.map((t) => cellOf(t[r])).join(' '));
  });
  return lines.join('\n');
}
