import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { writeFileAtomic } from '@m3ae/protocol';
import { phantomAttributes, phantomCaption, type PhantomAttributes } from './attributes.js';
import { renderPhantom } from './render.js';
import type { PairManifestLine } from '../readers/manifest.js';

export type PhantomImageFormat = 'png' | 'jpeg';

export interface PhantomCorpusOptions {
  output: string;
  count: number;
  seed: number;
  /** Image side in pixels. @defaultValue 128 */
  size?: number;
  /** @defaultValue 'png' (grey, lossless) */
  format?: PhantomImageFormat;
  /** Images encoded at once. @defaultValue 4 */
  concurrency?: number;
  /** Called after each image with the number written so far. */
  onProgress?: (written: number) => void;
}

/** One manifest line: what `readManifest` reads, plus the attributes the caption was made from. */
export interface PhantomManifestLine extends PairManifestLine {
  attributes: PhantomAttributes;
}

export interface PhantomCorpusResult {
  written: number;
  manifest: string;
  output: string;
}

/** One phantom sample: its manifest line and encoded image. Same (seed, index, size, format) → same bytes. */
export async function phantomSample(
  seed: number,
  index: number,
  size = 128,
  format: PhantomImageFormat = 'png',
): Promise<{ line: PhantomManifestLine; bytes: Uint8Array }> {
  const attributes = phantomAttributes(seed, index);
  const { pixels } = renderPhantom(attributes, { size, seed, index });
  const img = sharp(pixels, { raw: { width: size, height: size, channels: 1 } });
  const bytes = format === 'png' ? await img.png({ compressionLevel: 6 }).toBuffer() : await img.jpeg({ quality: 92 }).toBuffer();
  const name = String(index).padStart(6, '0');
  return {
    line: { id: `phantom-${name}`, image: `images/${name}.${format === 'png' ? 'png' : 'jpg'}`, text: phantomCaption(attributes, seed, index), attributes },
    bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length),
  };
}

/**
 * Writes `count` phantoms to `output/images/` and `output/manifest.jsonl` (the generic manifest format), plus
 * `output/phantom.json` describing the generator settings. The manifest is written to a temporary name and
 * renamed at the end, so a manifest on disk always lists only images that exist.
 */
export async function writePhantomCorpus(options: PhantomCorpusOptions): Promise<PhantomCorpusResult> {
  const { count, seed } = options;
  const size = options.size ?? 128;
  const format = options.format ?? 'png';
  const concurrency = options.concurrency ?? 4;
  if (!(Number.isInteger(count) && count >= 0)) throw new RangeError(`count must be an integer >= 0, got ${String(count)}`);
  if (!(Number.isInteger(seed) && seed >= 0 && seed <= 0xffffffff)) throw new RangeError(`seed must be an integer in 0..4294967295, got ${String(seed)}`);
  if (!(Number.isInteger(size) && size >= 16 && size <= 4096)) throw new RangeError(`size must be an integer in 16..4096, got ${String(size)}`);
  if (format !== 'png' && format !== 'jpeg') throw new RangeError(`format must be png or jpeg, got ${JSON.stringify(format)}`);
  if (!(Number.isInteger(concurrency) && concurrency >= 1)) throw new RangeError(`concurrency must be an integer >= 1, got ${String(concurrency)}`);
  const output = resolve(options.output);
  await mkdir(join(output, 'images'), { recursive: true });
  const lines: string[] = new Array<string>(count);
  let next = 0;
  let written = 0;
  const worker = async () => {
    for (let index = next++; index < count; index = next++) {
      const { line, bytes } = await phantomSample(seed, index, size, format);
      await writeFile(join(output, line.image), bytes);
      lines[index] = JSON.stringify(line);
      written++;
      options.onProgress?.(written);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(count, 1)) }, worker));
  const manifest = join(output, 'manifest.jsonl');
  // The manifest is written last and atomically: a corpus without it is unfinished.
  await writeFileAtomic(manifest, lines.map((l) => l + '\n').join(''));
  await writeFile(join(output, 'phantom.json'), JSON.stringify({ generator: 'm3ae phantom', version: 1, seed, count, size, format }, null, 2) + '\n');
  return { written, manifest, output };
}
