import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { loadImage, loadTokenizer, type TextTokenizer } from '@m3ae/data';
import { chooseBackend, modelFromCheckpoint, numPatches, renderReconstructionGrid, visualisationNoise, type CheckpointInfo, type MimInput } from '@m3ae/model';

/**
 * The tokenizer of a checkpoint: `--tokenizer`, else the run configuration the trainer stored in the
 * checkpoint (`data.tokenizer`, else `tokenizer.json` next to the shards of `data.dir`).
 */
export function checkpointTokenizerPath(info: CheckpointInfo, flag: string | undefined): string {
  if (flag) {
    if (!existsSync(flag)) throw new Error(`--tokenizer ${JSON.stringify(flag)}: no such file; expected a tokenizer.json`);
    return flag;
  }
  const raw = info.metadata['run_config'];
  let data: { tokenizer?: unknown; dir?: unknown } | undefined;
  if (raw !== undefined) {
    try {
      data = (JSON.parse(raw) as { data?: { tokenizer?: unknown; dir?: unknown } }).data;
    } catch {
      data = undefined;
    }
  }
  const candidates = [typeof data?.tokenizer === 'string' ? data.tokenizer : undefined, typeof data?.dir === 'string' ? join(data.dir, 'tokenizer.json') : undefined].filter((p): p is string => p !== undefined);
  const found = candidates.find((p) => existsSync(p));
  if (found) return found;
  throw new Error(
    `${info.path}: ${candidates.length ? `the tokenizer its run used (${candidates.join(', ')}) is not here` : 'the checkpoint names no tokenizer'}; pass --tokenizer FILE (the tokenizer.json the dataset was prepared with)`,
  );
}

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
    const B = o.images.length;
    const L = c.maxTextLength;
    const plane = 3 * c.imageSize * c.imageSize;
    const seed = o.seed ?? 0;
    const input: MimInput = {
      batchSize: B,
      pixelValues: new Float32Array(B * plane),
      inputIds: new Int32Array(B * L),
      attentionMask: new Int32Array(B * L),
      mimNoise: visualisationNoise(B, numPatches(c), seed),
    };
    for (let b = 0; b < B; b++) {
      input.pixelValues.set(await loadImage(o.images[b] as string, { size: c.imageSize }), b * plane);
      const enc = tokenizer.encode(texts.length === 0 ? '' : ((texts.length === 1 ? texts[0] : texts[b]) as string), L);
      input.inputIds.set(enc.inputIds, b * L);
      input.attentionMask.set(enc.attentionMask, b * L);
    }
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

export function ratioOption(flag: string): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!(v.trim() !== '' && Number.isFinite(n) && n >= 0 && n < 1)) throw new InvalidArgumentError(`${flag} must be a number in [0, 1), got ${JSON.stringify(v)}`);
    return n;
  };
}

export function intOption(flag: string, min: number, max = Number.MAX_SAFE_INTEGER): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!(/^\d+$/.test(v) && n >= min && n <= max)) throw new InvalidArgumentError(`${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
    return n;
  };
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function registerReconstruct(program: Command): void {
  program
    .command('reconstruct')
    .description('MIM reconstructions of images by a checkpoint: a PNG grid, one row per image (original · masked input · reconstruction)')
    .requiredOption('--checkpoint <path>', 'checkpoint file, or a directory (its latest ckpt-<step>.safetensors)')
    .requiredOption('--image <files...>', 'image files (JPEG, PNG, WebP, TIFF)')
    .requiredOption('--out <file>', 'where to write the PNG grid')
    .option('--mask-ratio <r>', "fraction of patches removed (default: the checkpoint's)", ratioOption('--mask-ratio'))
    .option('--seed <n>', 'seed of the masking noise', intOption('--seed', 0, 2 ** 32 - 1), 0)
    .option('--text <caption>', 'caption read with the image (repeat once per image; default: an empty text)', collect)
    .option('--tokenizer <file>', "tokenizer.json (default: the one the checkpoint's run used)")
    .option('--scale <n>', 'integer upscaling of each cell (default: cells of at least 128 px)', intOption('--scale', 1, 64))
    .option('--backend <name>', 'TensorFlow.js backend (auto, node-gpu, node, wasm, cpu)')
    .action(async (opts: { checkpoint: string; image: string[]; out: string; maskRatio?: number; seed: number; text?: string[]; tokenizer?: string; scale?: number; backend?: string }) => {
      const summary = await reconstruct({
        checkpoint: opts.checkpoint,
        images: opts.image,
        out: opts.out,
        maskRatio: opts.maskRatio,
        seed: opts.seed,
        texts: opts.text,
        tokenizer: opts.tokenizer,
        scale: opts.scale,
        backend: opts.backend,
      });
      process.stdout.write(JSON.stringify(summary) + '\n');
    });
}
