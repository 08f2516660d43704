import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { writePhantomCorpus, type PhantomImageFormat } from '@m3ae/data';
import { intInRange, oneOf } from '../flags.js';

interface SynthCliOptions {
  output: string;
  count: number;
  seed: number;
  size: number;
  format: string;
}

/**
 * `m3ae data synth`: the licence-free phantom corpus in the manifest format (`DIR/manifest.jsonl`,
 * `DIR/images/`). A progress bar on a terminal; one JSON line on stdout at the end.
 */
export function registerData(program: Command): void {
  const data = program.command('data').description('dataset utilities');
  data
    .command('synth')
    .description('write a procedurally generated medical-like image–caption corpus (manifest.jsonl + images/)')
    .requiredOption('--output <dir>', 'folder to write (created if needed)')
    .requiredOption('--count <n>', 'number of image–caption pairs', intInRange('--count', 0, 100_000_000))
    .requiredOption('--seed <s>', 'corpus seed: the same seed writes the same bytes', intInRange('--seed', 0, 0xffffffff))
    .option('--size <px>', 'image side in pixels', intInRange('--size', 16, 4096), 128)
    .option('--format <f>', 'image format: png (grey, lossless) or jpeg', oneOf('--format', ['png', 'jpeg'] as const), 'png')
    .action(async (opts: SynthCliOptions) => {
      const bar = process.stderr.isTTY && opts.count > 0
        ? new cliProgress.SingleBar({ format: 'synth [{bar}] {percentage}% | {value}/{total} images | ETA {eta_formatted}', stream: process.stderr }, cliProgress.Presets.shades_classic)
        : undefined;
      bar?.start(opts.count, 0);
      const started = performance.now();
      try {
        const result = await writePhantomCorpus({
          output: opts.output,
          count: opts.count,
          seed: opts.seed,
          size: opts.size,
          format: opts.format as PhantomImageFormat,
          onProgress: (n) => bar?.update(n),
        });
        bar?.stop();
        const seconds = (performance.now() - started) / 1000;
        process.stdout.write(JSON.stringify({ written: result.written, manifest: result.manifest, seconds: Number(seconds.toFixed(3)) }) + '\n');
      } catch (e) {
        bar?.stop();
        throw e;
      }
    });
}
