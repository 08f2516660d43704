import type { Command } from 'commander';
import { reconstruct } from '@m3ae/qualitative';
import { BACKEND_HELP, collect, fraction, intInRange } from '../flags.js';

export function registerReconstruct(program: Command): void {
  program
    .command('reconstruct')
    .description('MIM reconstructions of images by a checkpoint: a PNG grid, one row per image (original · masked input · reconstruction)')
    .requiredOption('--checkpoint <path>', 'checkpoint file, or a directory (its latest ckpt-<step>.safetensors)')
    .requiredOption('--image <files...>', 'image files (JPEG, PNG, WebP, TIFF)')
    .requiredOption('--out <file>', 'where to write the PNG grid')
    .option('--mask-ratio <r>', "fraction of patches removed (default: the checkpoint's)", fraction('--mask-ratio'))
    .option('--seed <n>', 'seed of the masking noise', intInRange('--seed', 0, 2 ** 32 - 1), 0)
    .option('--text <caption>', 'caption read with the image (repeat once per image; default: an empty text)', collect)
    .option('--tokenizer <file>', "tokenizer.json (default: the one the checkpoint's run used)")
    .option('--scale <n>', 'integer upscaling of each cell (default: cells of at least 128 px)', intInRange('--scale', 1, 64))
    .option('--backend <name>', BACKEND_HELP)
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
