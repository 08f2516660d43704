import { readFile } from 'node:fs/promises';
import sharp, { type Metadata, type Sharp } from 'sharp';
import { ImageDecodeError } from './errors.js';
import { normalizeRgb } from './normalize.js';
import { randomResizedCropBox, type RandomResizedCropOptions } from './random-resized-crop.js';

/** A file path, or the encoded bytes of an image. */
export type ImageInput = string | Uint8Array;

/** 8-bit RGB pixels, interleaved, row-major (HWC). */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

export const SUPPORTED_IMAGE_FORMATS = ['jpeg', 'png', 'webp', 'tiff'] as const;

/** 64 million pixels (8000×8000): above every real radiograph, far below a decompression bomb. */
export const DEFAULT_MAX_PIXELS = 64_000_000;

export interface DecodeOptions {
  /** Refuse images with more pixels (checked from the header, before any pixel is decoded). @defaultValue 64e6 */
  maxPixels?: number;
  /** Name used in errors when the input is bytes. @defaultValue '<buffer>' */
  name?: string;
}

export type ResizeMode = 'center' | 'random-resized-crop';

export interface LoadImageOptions extends DecodeOptions, RandomResizedCropOptions {
  /** Output side length (square). */
  size: number;
  /** @defaultValue 'center' */
  mode?: ResizeMode;
  /** Required for `random-resized-crop`: a per-sample uint32 (e.g. `sampleSeed(seed, step, i, 'augment')`). */
  seed?: number;
}

interface Opened {
  pipeline: Sharp;
  /** Size after EXIF orientation. */
  width: number;
  height: number;
  name: string;
}

function classify(name: string, e: unknown): ImageDecodeError {
  const message = e instanceof Error ? e.message : String(e);
  if (/unsupported image format/i.test(message)) return new ImageDecodeError(name, 'unsupported-format', message);
  if (/pixel limit/i.test(message)) return new ImageDecodeError(name, 'too-large', message);
  return new ImageDecodeError(name, 'corrupt', message);
}

/**
 * Reads the header, refuses what we do not decode, and returns a pipeline that applies EXIF orientation.
 * `failOn: 'truncated'` rejects cut-off files but tolerates the benign warnings common in PMC figures.
 */
async function open(input: ImageInput, options: DecodeOptions): Promise<Opened> {
  const name = typeof input === 'string' ? input : (options.name ?? '<buffer>');
  const maxPixels = options.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (!(Number.isInteger(maxPixels) && maxPixels > 0)) throw new RangeError(`maxPixels must be a positive integer, got ${String(maxPixels)}`);
  let bytes: Uint8Array;
  if (typeof input === 'string') {
    try {
      bytes = await readFile(input);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new ImageDecodeError(name, 'not-found', code === 'ENOENT' ? 'no such file' : (e as Error).message);
    }
  } else {
    bytes = input;
  }
  if (bytes.length === 0) throw new ImageDecodeError(name, 'empty', 'zero bytes');
  const sharpOptions = { limitInputPixels: maxPixels, failOn: 'truncated' as const };
  let meta: Metadata;
  try {
    // The header alone is safe to read without the limit; the size check below then names the dimensions.
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw classify(name, e);
  }
  if (!(SUPPORTED_IMAGE_FORMATS as readonly string[]).includes(meta.format)) {
    throw new ImageDecodeError(name, 'unsupported-format', `${meta.format}; expected one of ${SUPPORTED_IMAGE_FORMATS.join(', ')}`);
  }
  const width = meta.autoOrient.width;
  const height = meta.autoOrient.height;
  if (!(width > 0 && height > 0)) throw new ImageDecodeError(name, 'corrupt', `header gives ${width}x${height}`);
  if (width * height > maxPixels) {
    throw new ImageDecodeError(name, 'too-large', `${width}x${height} = ${width * height} pixels exceeds the limit of ${maxPixels}`);
  }
  // Alpha is composited on black: medical images are dark-background, and the result no longer depends on
  // whatever colour the fully transparent pixels happen to store. Grey and 16-bit inputs become 8-bit sRGB.
  const pipeline = sharp(bytes, sharpOptions).rotate().flatten({ background: { r: 0, g: 0, b: 0 } });
  return { pipeline, width, height, name };
}

async function toRgb(pipeline: Sharp, name: string): Promise<RgbImage> {
  try {
    const { data, info } = await pipeline.toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoder returned ${info.channels} channels`);
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
  } catch (e) {
    throw e instanceof ImageDecodeError ? e : classify(name, e);
  }
}

function checkSize(size: number): void {
  if (!(Number.isInteger(size) && size > 0 && size <= 8192)) throw new RangeError(`size must be an integer in 1..8192, got ${String(size)}`);
}

/** Decodes to 8-bit RGB at the image's own (EXIF-oriented) size. */
export async function decodeRgb(input: ImageInput, options: DecodeOptions = {}): Promise<RgbImage> {
  const { pipeline, name } = await open(input, options);
  return toRgb(pipeline, name);
}

/**
 * M3AE's evaluation transform up to the tensor: resize the short side to `size` (bicubic), centre-crop
 * `size`×`size`. The resized RGB is what shards store.
 */
export async function resizeToRgb(input: ImageInput, size: number, options: DecodeOptions = {}): Promise<RgbImage> {
  checkSize(size);
  const { pipeline, name } = await open(input, options);
  return toRgb(pipeline.resize(size, size, { fit: 'cover', position: 'centre', kernel: 'cubic' }), name);
}

/**
 * The fine-tuning transform (`RandomResizedCrop(size, scale=(0.9, 1.0))`, bicubic): a seeded box from
 * `randomResizedCropBox`, resized to `size`×`size` (aspect not kept, as torchvision).
 */
export async function randomResizedCropToRgb(
  input: ImageInput,
  size: number,
  seed: number,
  options: DecodeOptions & RandomResizedCropOptions = {},
): Promise<RgbImage> {
  checkSize(size);
  const { pipeline, width, height, name } = await open(input, options);
  const box = randomResizedCropBox(width, height, seed, options);
  return toRgb(pipeline.extract(box).resize(size, size, { fit: 'fill', kernel: 'cubic' }), name);
}

/** Image → CLIP-normalised Float32Array [3, size, size] (`normalizeRgb`). */
export async function loadImage(input: ImageInput, options: LoadImageOptions): Promise<Float32Array> {
  const mode = options.mode ?? 'center';
  let rgb: RgbImage;
  if (mode === 'center') {
    rgb = await resizeToRgb(input, options.size, options);
  } else if (mode === 'random-resized-crop') {
    if (options.seed === undefined) throw new RangeError('loadImage: mode random-resized-crop needs a seed');
    rgb = await randomResizedCropToRgb(input, options.size, options.seed, options);
  } else {
    throw new RangeError(`loadImage: mode must be center or random-resized-crop, got ${JSON.stringify(mode)}`);
  }
  return normalizeRgb(rgb.data, rgb.width, rgb.height);
}

export type EncodeFormat = 'png' | 'jpeg' | 'webp';

export interface EncodeOptions {
  /** @defaultValue 'png' (lossless) */
  format?: EncodeFormat;
  /** JPEG/WebP quality 1–100. @defaultValue 95 */
  quality?: number;
}

/** Encodes RGB pixels (e.g. from `resizeToRgb`) for storage in a shard or a file. */
export async function encodeRgb(image: RgbImage, options: EncodeOptions = {}): Promise<Uint8Array> {
  const { data, width, height } = image;
  if (data.length !== width * height * 3) {
    throw new RangeError(`encodeRgb: expected ${width * height * 3} bytes for ${width}x${height} RGB, got ${data.length}`);
  }
  const format = options.format ?? 'png';
  const quality = options.quality ?? 95;
  const img = sharp(data, { raw: { width, height, channels: 3 } });
  let out: Buffer;
  if (format === 'png') out = await img.png({ compressionLevel: 6 }).toBuffer();
  else if (format === 'jpeg') out = await img.jpeg({ quality, chromaSubsampling: '4:4:4' }).toBuffer();
  else if (format === 'webp') out = await img.webp({ quality }).toBuffer();
  else throw new RangeError(`encodeRgb: format must be png, jpeg or webp, got ${JSON.stringify(format)}`);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}
