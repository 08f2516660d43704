import type { Command } from 'commander';
import { fill, formatFill } from '@m3ae/qualitative';
import { BACKEND_HELP, intInRange } from '../flags.js';

export function registerFill(program: Command): void {
  program
    .command('fill')
    .description('the MLM head\u2019s top-k words for each <mask> of a text, read with the image, a blank image and optionally a mismatched one')
    .requiredOption('--checkpoint <path>', 'checkpoint file, or a directory (its latest ckpt-<step>.safetensors)')
    .requiredOption('--image <file>', 'the image the text describes')
    .requiredOption('--text <text>', 'text with <mask> placeholders, e.g. "axial CT showing a <mask> lesion"')
    .option('--mismatched-image <file>', 'another image to read the text with')
    .option('--top-k <k>', 'tokens shown per mask', intInRange('--top-k', 1, 100), 5)
    .option('--tokenizer <file>', "tokenizer.json (default: the one the checkpoint's run used)")
    .option('--backend <name>', BACKEND_HELP)
    .option('--json', 'print one JSON object instead of the table', false)
    .action(async (opts: { checkpoint: string; image: string; text: string; mismatchedImage?: string; topK: number; tokenizer?: string; backend?: string; json: boolean }) => {
      const s = await fill({ checkpoint: opts.checkpoint, image: opts.image, text: opts.text, mismatchedImage: opts.mismatchedImage, topK: opts.topK, tokenizer: opts.tokenizer, backend: opts.backend });
      process.stdout.write((opts.json ? JSON.stringify(s) : formatFill(s)) + '\n');
    });
}
