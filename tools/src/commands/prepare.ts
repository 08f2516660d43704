import { availableParallelism } from 'node:os';
import type { Command } from 'commander';
import { oneOf, positiveInt } from '../flags.js';
import { StopOnSignals } from '../signals.js';
import cliProgress from 'cli-progress';
import { IMAGE_FORMATS, loadTokenizer, PAIR_SOURCES, prepareShards, type PairSource, type ShardImageFormat } from '@m3ae/data';

interface PrepareCliOptions {
  source: string;
  input: string;
  output: string;
  split?: string;
  imageSize: number;
  tokenizer?: string;
  imageFormat: string;
  samplesPerShard: number;
  concurrency: number;
}

/**
 * `m3ae prepare`: a source → checksummed shards + dataset.json. A progress bar on a terminal, nothing else on
 * stderr otherwise; ends with one JSON line on stdout. Ctrl-C stops after the images in flight; finished
 * shards stay and the same command resumes.
 */
export function registerPrepare(program: Command): void {
  program
    .command('prepare')
    .description('convert a dataset source into checksummed shards with a dataset.json manifest (resumable)')
    .requiredOption('--source <name>', `dataset format: ${PAIR_SOURCES.join(', ')}`, oneOf('--source', PAIR_SOURCES))
    .requiredOption('--input <path>', 'the source root folder, JSONL file or manifest')
    .requiredOption('--output <dir>', 'folder for shards, index.json, skips.json and dataset.json')
    .option('--split <name>', 'split to read (roco/medicat: train|validation|test, medpix: train|dev|test)')
    .option('--image-size <n>', 'side of the stored square images', positiveInt('--image-size'), 288)
    .option('--tokenizer <file>', 'tokenizer.json: also store each text\'s token ids (a copy is kept with the shards, for m3ae train --data)')
    .option('--image-format <f>', `stored images: ${IMAGE_FORMATS.join(', ')} (raw: lossless, fastest to read; jpeg: q95, ~12x smaller)`, oneOf('--image-format', IMAGE_FORMATS), 'raw')
    .option('--samples-per-shard <n>', 'source records per shard', positiveInt('--samples-per-shard'), 1000)
    .option('--concurrency <n>', 'images decoded at once', positiveInt('--concurrency'), Math.max(2, 2 * availableParallelism()))
    .action(async (opts: PrepareCliOptions) => {
      const tokenizer = opts.tokenizer ? await loadTokenizer(opts.tokenizer) : undefined;
      // The first signal stops the run (its exit code follows the signal: 130 for SIGINT, 143 for SIGTERM).
      const stop = new StopOnSignals();
      const bar = process.stderr.isTTY
        ? new cliProgress.SingleBar(
            { format: 'prepare [{bar}] {percentage}% | {value}/{total} images | shards {shardsDone}/{shardsTotal} | ETA {eta_formatted}', stream: process.stderr },
            cliProgress.Presets.shades_classic,
          )
        : undefined;
      let started = false;
      try {
        const result = await prepareShards({
          source: opts.source as PairSource,
          input: opts.input,
          output: opts.output,
          split: opts.split,
          imageSize: opts.imageSize,
          imageFormat: opts.imageFormat as ShardImageFormat,
          samplesPerShard: opts.samplesPerShard,
          concurrency: opts.concurrency,
          tokenizer,
          signal: stop.signal,
          onProgress: (p) => {
            if (!bar) return;
            if (!started) {
              bar.start(p.total, p.done, { shardsDone: p.shardsDone, shardsTotal: p.shardsTotal });
              started = true;
            } else bar.update(p.done, { shardsDone: p.shardsDone, shardsTotal: p.shardsTotal });
          },
        });
        bar?.stop();
        process.stdout.write(JSON.stringify({ written: result.written, skipped: result.skipped, shards: result.shards }) + '\n');
      } catch (e) {
        bar?.stop();
        if (stop.signal.aborted) process.exitCode = stop.exitCode;
        throw e;
      } finally {
        stop.dispose();
      }
    });
}
