import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import {
  buildPretrainBatch,
  EpochSampler,
  loadTokenizer,
  openShardDataset,
  prepareShards,
  sharedDataDir,
  trainTokenizer,
  type ShardImageFormat,
} from '@m3ae/data';
import { registerBenchArea } from './areas.js';
import { machineInfo, type BenchRow } from './report.js';

const workspaceRoot = resolve(import.meta.dirname, '../../..');

/** Samples per CPU-second (all threads of this process) and per wall second of `run`. */
async function measure(samples: number, run: () => Promise<void>): Promise<{ perCore: number; wall: number }> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await run();
  const cpu = process.cpuUsage(cpu0);
  const seconds = (performance.now() - t0) / 1000;
  return { perCore: samples / ((cpu.user + cpu.system) / 1e6), wall: samples / seconds };
}

registerBenchArea('data', {
  description: 'pre-training batches from shards (read, decode, normalise, tokenise, mask, ITM negatives) vs sharp decode',
  async run(options) {
    const data = sharedDataDir(workspaceRoot);
    if (!data) throw new Error('bench data needs the real MedPix images: set M3AE_SHARED_DATA or provide ../shared/data');
    const medpix = join(data, 'medpix2');
    const { numPatches, presetConfig, trainingTextLength } = await import('@m3ae/model'); // lazy: only this area needs the model's presets
    const presets = [...new Set(['base', options.extra['preset'] ?? 'small'])].map((name) => ({ name, config: presetConfig(name) }));
    const formats: ShardImageFormat[] = ['raw', 'jpeg'];
    const G = 32;
    const steps = options.quick ? 6 : 20;
    const rows: BenchRow[] = [];
    const figures: Record<string, number | boolean> = {};
    const work = await mkdtemp(join(tmpdir(), 'm3ae-bench-data-'));
    try {
      await trainTokenizer({ sources: [{ kind: 'medpix', path: medpix }], vocabSize: 8192, output: join(work, 'tokenizer.json'), agreementSamples: 50 });
      const tokenizer = await loadTokenizer(join(work, 'tokenizer.json'));
      // The same source images sharp decodes for the baseline.
      const files = (await readdir(join(medpix, 'images_288'))).filter((f) => f.endsWith('.jpg')).sort().slice(0, G * steps);
      for (const { name, config } of presets) {
        const size = config.imageSize;
        const decode = await measure(files.length, async () => {
          for (const f of files) await sharp(join(medpix, 'images_288', f)).raw().toBuffer();
        });
        rows.push({ path: 'sharp decode of the source JPEG (baseline)', preset: name, px: size, 'samples/s per core': decode.perCore, 'samples/s wall': decode.wall, 'x baseline': 1 });
        figures[`sharp_decode_${size}_per_core`] = decode.perCore;
        for (const format of formats) {
          const dir = join(work, `${name}-${format}`);
          // Without stored token ids, so that tokenisation is part of the measured path.
          const t0 = performance.now();
          const prepared = await prepareShards({ source: 'medpix', input: medpix, split: 'train', output: dir, imageSize: size, imageFormat: format });
          const prepareSeconds = (performance.now() - t0) / 1000;
          const ds = await openShardDataset(dir, { verify: 'eager' }); // checksums verified outside the timing
          const sampler = new EpochSampler({ size: ds.size, seed: 0, globalBatchSize: G });
          const common = { dataset: ds, tokenizer, globalBatchSize: G, seed: 0, imageSize: size, maxTextLength: trainingTextLength(config), numPatches: numPatches(config) };
          const first = sampler.batchAt(0);
          await buildPretrainBatch({ ...common, indices: first.indices, positions: first.positions, step: 0 }); // warm-up
          const full = await measure(G * steps, async () => {
            for (let step = 1; step <= steps; step++) {
              const b = sampler.batchAt(step);
              await buildPretrainBatch({ ...common, indices: b.indices, positions: b.positions, step });
            }
          });
          await ds.close();
          rows.push({
            path: `full batch path from ${format} shards`,
            preset: name,
            px: size,
            'samples/s per core': full.perCore,
            'samples/s wall': full.wall,
            'x baseline': full.perCore / decode.perCore,
          });
          figures[`full_${size}_${format}_per_core`] = full.perCore;
          figures[`full_${size}_${format}_over_sharp_decode`] = full.perCore / decode.perCore;
          figures[`prepare_${size}_${format}_images_per_s`] = prepared.written / prepareSeconds;
          figures[`shard_bytes_per_sample_${size}_${format}`] = ds.manifest.shards.reduce((n, s) => n + s.bytes, 0) / ds.size;
        }
      }
      const headline = figures['full_288_raw_per_core'];
      if (typeof headline === 'number') figures['target_300_per_core_at_288_met'] = headline >= 300;
      return {
        area: 'data',
        machine: machineInfo(),
        rows,
        figures,
        notes: [
          `MedPix 2.0 train split (real CT/MR JPEGs) prepared into shards in a temp folder; global batches of ${G}, ${steps} timed steps after a warm-up`,
          'full path = shard read + decode (raw: copy/expand grey, jpeg: sharp) + CLIP normalisation + tokenise (BPE, 8192) + MLM masking + MIM noise + ITM negatives (half the samples read a second image)',
          'per core = samples / CPU-seconds of this process (all threads, sharp\'s pool included); wall = samples / elapsed seconds',
        ],
      };
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  },
});
