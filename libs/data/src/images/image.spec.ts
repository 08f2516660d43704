import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { sharedDataForTests } from '../shared-data.js';
import { ImageDecodeError } from './errors.js';
import { decodeRgb, encodeRgb, loadImage, randomResizedCropToRgb, resizeToRgb, type RgbImage } from './image.js';
import { CLIP_MEAN, CLIP_STD, normalizeRgb } from './normalize.js';
import { randomResizedCropBox } from './random-resized-crop.js';

const data = sharedDataForTests(resolve(import.meta.dirname, '../../../..'), 'image tests on real MedPix / VQA-RAD files');
const work = mkdtempSync(join(tmpdir(), 'm3ae-img-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function meanOf(img: RgbImage, channel: number): number {
  let s = 0;
  for (let i = channel; i < img.data.length; i += 3) s += img.data[i];
  return s / (img.width * img.height);
}

/** A PNG whose IHDR claims the given size (valid chunk CRC), with a token IDAT: a decompression bomb's header. */
function pngHeader(width: number, height: number): Buffer {
  const chunk = (type: string, body: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    const tb = Buffer.concat([Buffer.from(type, 'latin1'), body]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(tb));
    return Buffer.concat([len, tb, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', Buffer.from([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])), chunk('IEND', Buffer.alloc(0))]);
}

async function rejection(p: Promise<unknown>): Promise<ImageDecodeError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(ImageDecodeError);
    return e as ImageDecodeError;
  }
  throw new Error('expected the image to be refused');
}

describe('normalizeRgb', () => {
  it('maps HWC bytes to CLIP-normalised CHW floats', () => {
    const rgb = new Uint8Array([0, 128, 255, 10, 20, 30]); // 2×1 image
    const out = normalizeRgb(rgb, 2, 1);
    const expected = [0, 10, 128, 20, 255, 30].map((v, k) => {
      const c = Math.floor(k / 2);
      return (v / 255 - CLIP_MEAN[c]) / CLIP_STD[c];
    });
    expect(out).toHaveLength(6);
    out.forEach((v, k) => expect(v).toBeCloseTo(expected[k], 5));
  });

  it('writes into a batch buffer at an offset and leaves the rest alone', () => {
    const out = new Float32Array(2 * 3 * 4).fill(7);
    normalizeRgb(new Uint8Array(12).fill(255), 2, 2, out, 12);
    expect(Array.from(out.subarray(0, 12))).toEqual(new Array(12).fill(7));
    expect(out[12]).toBeCloseTo((1 - CLIP_MEAN[0]) / CLIP_STD[0], 5);
    expect(out[23]).toBeCloseTo((1 - CLIP_MEAN[2]) / CLIP_STD[2], 5);
  });

  it('refuses a wrong pixel count or an output too small', () => {
    expect(() => normalizeRgb(new Uint8Array(5), 2, 1)).toThrow(/expected 6 bytes for 2x1 RGB, got 5/);
    expect(() => normalizeRgb(new Uint8Array(6), 2, 1, new Float32Array(6), 1)).toThrow(/cannot hold 6 values at offset 1/);
  });
});

describe('randomResizedCropBox', () => {
  it('is deterministic per seed, keeps 90–100% of the area and a 3/4–4/3 aspect ratio', () => {
    expect(randomResizedCropBox(300, 280, 5)).toEqual(randomResizedCropBox(300, 280, 5));
    const boxes = Array.from({ length: 200 }, (_, s) => randomResizedCropBox(300, 280, s));
    expect(new Set(boxes.map((b) => JSON.stringify(b))).size).toBeGreaterThan(50);
    for (const b of boxes) {
      expect(b.left).toBeGreaterThanOrEqual(0);
      expect(b.top).toBeGreaterThanOrEqual(0);
      expect(b.left + b.width).toBeLessThanOrEqual(300);
      expect(b.top + b.height).toBeLessThanOrEqual(280);
      const area = (b.width * b.height) / (300 * 280);
      expect(area).toBeGreaterThan(0.88); // rounding of w and h
      expect(area).toBeLessThanOrEqual(1.0);
      expect(b.width / b.height).toBeGreaterThan(0.74);
      expect(b.width / b.height).toBeLessThan(1.35);
    }
  });

  it('falls back to the central crop clamped to the ratio range for extreme shapes (torchvision)', () => {
    // 300×200 at scale >= 0.9 cannot fit any ratio <= 4/3: always the central 267×200.
    expect(randomResizedCropBox(300, 200, 9)).toEqual({ left: 16, top: 0, width: 267, height: 200 });
    expect(randomResizedCropBox(1000, 10, 1)).toEqual({ left: 493, top: 0, width: 13, height: 10 });
    expect(randomResizedCropBox(10, 1000, 1)).toEqual({ left: 0, top: 493, width: 10, height: 13 });
  });
});

describe.skipIf(!data)('images from the real datasets', () => {
  it('expands a grayscale MedPix JPEG to RGB, resizes the short side and centre-crops', async () => {
    const file = join(data ?? '', 'medpix2', 'images_288', 'MPX1024_synpic40275.jpg');
    expect((await sharp(file).metadata()).channels).toBe(1);
    const img = await resizeToRgb(file, 224);
    expect([img.width, img.height, img.data.length]).toEqual([224, 224, 224 * 224 * 3]);
    for (let i = 0; i < img.data.length; i += 3) {
      expect(img.data[i + 1]).toBe(img.data[i]);
      expect(img.data[i + 2]).toBe(img.data[i]);
    }
    // Independent route: scale the 229-wide image to width 224, then take the middle 224 rows.
    const scaled = await sharp(file).resize({ width: 224, kernel: 'cubic' }).raw().toBuffer({ resolveWithObject: true });
    const top = Math.floor((scaled.info.height - 224) / 2);
    let diff = 0;
    for (let y = 0; y < 224; y++) for (let x = 0; x < 224; x++) diff += Math.abs(scaled.data[((y + top) * 224 + x) * scaled.info.channels] - img.data[(y * 224 + x) * 3]);
    expect(diff / (224 * 224)).toBeLessThan(3);
  });

  it('loads a VQA-RAD colour JPEG as normalised CHW that inverts back to the resized pixels', async () => {
    const file = join(data ?? '', 'vqa_rad', 'images', 'synpic54610.jpg');
    const rgb = await resizeToRgb(file, 64);
    const chw = await loadImage(file, { size: 64 });
    expect(chw).toHaveLength(3 * 64 * 64);
    for (let c = 0; c < 3; c++) {
      for (let p = 0; p < 64 * 64; p += 97) {
        expect(chw[c * 4096 + p] * CLIP_STD[c] + CLIP_MEAN[c]).toBeCloseTo(rgb.data[p * 3 + c] / 255, 5);
      }
    }
    const again = await loadImage(readFileSync(file), { size: 64 });
    expect(again).toEqual(chw);
  });

  it('random-resized-crop is seeded: same seed same pixels, another seed other pixels', async () => {
    const file = join(data ?? '', 'vqa_rad', 'images', 'synpic54610.jpg');
    const a = await randomResizedCropToRgb(file, 48, 11);
    const b = await randomResizedCropToRgb(file, 48, 11);
    const c = await randomResizedCropToRgb(file, 48, 12);
    expect([a.width, a.height]).toEqual([48, 48]);
    expect(Buffer.from(a.data).equals(Buffer.from(b.data))).toBe(true);
    expect(Buffer.from(a.data).equals(Buffer.from(c.data))).toBe(false);
    const t = await loadImage(file, { size: 48, mode: 'random-resized-crop', seed: 11 });
    expect(t).toEqual(normalizeRgb(a.data, 48, 48));
    await expect(loadImage(file, { size: 48, mode: 'random-resized-crop' })).rejects.toThrow(/needs a seed/);
  });
});

describe('decoding formats and pixel layouts', () => {
  const gradient = (w: number, h: number): Buffer => {
    const px = Buffer.alloc(w * h * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) px.set([(x * 255) / (w - 1), (y * 255) / (h - 1), 77], (y * w + x) * 3);
    return px;
  };

  it('decodes a 16-bit PNG to the right 8-bit values', async () => {
    const raw = gradient(16, 8);
    const png16 = await sharp(raw, { raw: { width: 16, height: 8, channels: 3 } }).toColourspace('rgb16').png().toBuffer();
    expect((await sharp(png16).metadata()).depth).toBe('ushort');
    const img = await decodeRgb(png16);
    expect([img.width, img.height]).toEqual([16, 8]);
    for (let i = 0; i < raw.length; i++) expect(Math.abs(img.data[i] - raw[i])).toBeLessThanOrEqual(1);
  });

  it('composites alpha on black', async () => {
    const rgba = Buffer.from([255, 0, 0, 0, 255, 0, 0, 255, 200, 100, 50, 128, 0, 0, 255, 255]);
    const png = await sharp(rgba, { raw: { width: 2, height: 2, channels: 4 } }).png().toBuffer();
    const img = await decodeRgb(png);
    expect(Array.from(img.data.subarray(0, 6))).toEqual([0, 0, 0, 255, 0, 0]);
    expect(Math.abs(img.data[6] - 100)).toBeLessThanOrEqual(2);
    expect(Math.abs(img.data[7] - 50)).toBeLessThanOrEqual(2);
    expect(Array.from(img.data.subarray(9, 12))).toEqual([0, 0, 255]);
  });

  it('applies EXIF orientation (6: rotate 90° clockwise)', async () => {
    // Stored 6×2: left half red, right half blue. Displayed 2×6: red on top, blue below.
    const px = Buffer.alloc(6 * 2 * 3);
    for (let y = 0; y < 2; y++) for (let x = 0; x < 6; x++) px.set(x < 3 ? [255, 0, 0] : [0, 0, 255], (y * 6 + x) * 3);
    const jpeg = await sharp(px, { raw: { width: 6, height: 2, channels: 3 } }).jpeg({ quality: 100 }).withMetadata({ orientation: 6 }).toBuffer();
    expect((await sharp(jpeg).metadata()).orientation).toBe(6);
    const img = await decodeRgb(jpeg);
    expect([img.width, img.height]).toEqual([2, 6]);
    expect(img.data[0]).toBeGreaterThan(200); // top-left red
    expect(img.data[2]).toBeLessThan(60);
    const last = (6 * 2 - 1) * 3;
    expect(img.data[last + 2]).toBeGreaterThan(200); // bottom-right blue
    expect(img.data[last]).toBeLessThan(60);
    const resized = await resizeToRgb(jpeg, 2);
    expect(resized.data[0]).toBeGreaterThan(resized.data[2]); // top still red after the resize path
  });

  it('reads grayscale PNG, WebP and TIFF as RGB', async () => {
    const raw = gradient(12, 12);
    const grey = await sharp(raw, { raw: { width: 12, height: 12, channels: 3 } }).toColourspace('b-w').png().toBuffer();
    expect((await sharp(grey).metadata()).channels).toBe(1);
    const g = await decodeRgb(grey);
    expect(g.data[3]).toBe(g.data[4]);
    for (const format of ['webp', 'tiff'] as const) {
      const enc = await sharp(raw, { raw: { width: 12, height: 12, channels: 3 } })[format]({ quality: 100 }).toBuffer();
      const img = await decodeRgb(enc);
      expect([img.width, img.height, img.data.length]).toEqual([12, 12, 12 * 12 * 3]);
      expect(Math.abs(meanOf(img, 0) - 127.5)).toBeLessThan(4);
    }
  });

  it('encodes RGB losslessly as PNG and close as JPEG', async () => {
    const img: RgbImage = { data: new Uint8Array(gradient(20, 10)), width: 20, height: 10 };
    const png = await encodeRgb(img);
    expect(Buffer.from((await decodeRgb(png)).data).equals(Buffer.from(img.data))).toBe(true);
    const jpeg = await encodeRgb(img, { format: 'jpeg', quality: 95 });
    expect((await sharp(jpeg).metadata()).format).toBe('jpeg');
    const back = await decodeRgb(jpeg);
    expect(Math.abs(meanOf(back, 1) - meanOf(img, 1))).toBeLessThan(2);
    await expect(encodeRgb({ data: new Uint8Array(3), width: 2, height: 2 })).rejects.toThrow(/expected 12 bytes/);
  });
});

describe('hostile images are refused with a typed error naming the file and the reason', () => {
  it('zero bytes, truncated JPEG, a text file named .jpg, a GIF, a missing file', async () => {
    const good = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#336699' } })
      .composite([{ input: Buffer.from('<svg width="64" height="64"><circle cx="32" cy="32" r="20" fill="white"/></svg>') }])
      .jpeg()
      .toBuffer();
    const cases: [string, Buffer | string, string][] = [
      ['empty.jpg', Buffer.alloc(0), 'empty'],
      ['truncated.jpg', good.subarray(0, Math.floor(good.length / 2)), 'corrupt'],
      ['notes.jpg', Buffer.from('this is not an image, just text\n'), 'unsupported-format'],
      ['anim.gif', await sharp({ create: { width: 4, height: 4, channels: 3, background: '#fff' } }).gif().toBuffer(), 'unsupported-format'],
    ];
    for (const [name, bytes, reason] of cases) {
      const file = join(work, name);
      writeFileSync(file, bytes);
      const e = await rejection(resizeToRgb(file, 32));
      expect(e.reason).toBe(reason);
      expect(e.file).toBe(file);
      expect(e.message).toContain(file);
    }
    const missing = await rejection(decodeRgb(join(work, 'nope.jpg')));
    expect(missing.reason).toBe('not-found');
  });

  it('a PNG header claiming 100000×100000 is refused before decoding', async () => {
    const file = join(work, 'bomb.png');
    writeFileSync(file, pngHeader(100000, 100000));
    expect((await sharp(file, { limitInputPixels: false }).metadata()).width).toBe(100000);
    const e = await rejection(loadImage(file, { size: 224 }));
    expect(e.reason).toBe('too-large');
    expect(e.message).toMatch(/100000x100000/);
    const small = await rejection(decodeRgb(pngHeader(300, 300), { maxPixels: 50_000, name: 'bytes-from-shard' }));
    expect(small.reason).toBe('too-large');
    expect(small.file).toBe('bytes-from-shard');
  });
});
