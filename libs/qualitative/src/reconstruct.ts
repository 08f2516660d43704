import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { loadImage, loadTokenizer, type TextTokenizer, type ValidationSample } from '@m3ae/data';
import { chooseBackend, modelFromCheckpoint } from '@m3ae/model';
import { checkpointTokenizerPath } from './checkpoint-tokenizer.js';
import { batchSamples, renderReconstructionGrid } from './reconstruction-grid.js';

export interface ReconstructOptions {
  checkpoint: string;
  images: readonly string[];
  out: string;
  /** @defaultValue the checkpoint's mimMaskRatio */
  maskRatio?: number | undefined;
  /** Seed of the masking noise. @defaultValue 0 */
  seed?: number | undefined;
  /** Captions: none (an empty text), one for every image, or one per image. */
  texts?: readonly string[] | undefined;
  tokenizer?: string | undefined;
  backend?: string | undefined;
  /** Upscaling of each cell. @defaultValue so that cells are at least 128 px */
  scale?: number | undefined;
}

export interface ReconstructSummary {
  out: string;
  checkpoint: string;
  step: number;
  maskRatio: number;
  seed: number;
  backend: string;
  width: number;
  height: number;
  /** Per image: its MIM loss on the removed patches (norm_pix space when the model uses it) and how many were removed. */
  rows: { image: string; maskedPatches: number; loss: number }[];
}

/** `m3ae reconstruct`: one grid row per image (original · masked input · reconstruction), written as PNG. */
export async function reconstruct(o: ReconstructOptions): Promise<ReconstructSummary> {
  if (o.images.length === 0) throw new Error('--image: expected at least one image file');
  const texts = o.texts ?? [];
  if (texts.length > 1 && texts.length !== o.images.length) throw new Error(`--text given ${texts.length} times for ${o.images.length} images; expected once (for every image) or once per image`);
  const backend = await chooseBackend({ backend: o.backend });
  const { model, info, path } = await modelFromCheckpoint(o.checkpoint, o.maskRatio === undefined ? {} : { mimMaskRatio: o.maskRatio });
  try {
    const c = model.config;
    const tokenizer: TextTokenizer = await loadTokenizer(checkpointTokenizerPath(info, o.tokenizer));
    const seed = o.seed ?? 0;
    const samples: ValidationSample[] = [];
    for (const [b, image] of o.images.entries()) {
      const enc = tokenizer.encode(texts.length === 0 ? '' : ((texts.length === 1 ? texts[0] : texts[b]) as string), c.maxTextLength);
      samples.push({ pixelValues: await loadImage(image, { size: c.imageSize }), inputIds: enc.inputIds, attentionMask: enc.attentionMask });
    }
    const input = batchSamples(c, samples, seed);
    const { png, rows, width, height } = await renderReconstructionGrid(model, input, o.scale === undefined ? {} : { scale: o.scale });
    await mkdir(dirname(o.out), { recursive: true });
    await writeFile(o.out, png);
    return {
      out: o.out,
      checkpoint: path,
      step: info.step,
      maskRatio: c.mimMaskRatio,
      seed,
      backend: backend.name,
      width,
      height,
      rows: rows.map((r, b) => ({ image: o.images[b] as string, maskedPatches: r.maskedPatches, loss: r.loss })),
    };
  } finally {
    model.dispose();
  }
}
