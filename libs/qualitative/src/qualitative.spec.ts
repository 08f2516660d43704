import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { denormalizeRgb, loadImage, resizeToRgb } from '@m3ae/data';
import { encodeMaskedText, MASK_MARKERS } from '@m3ae/model';
import { checkpointTokenizerPath } from './checkpoint-tokenizer.js';
import { fill, formatFill } from './fill.js';
import { reconstruct } from './reconstruct.js';
import { makeQualitativeFixture, type QualitativeFixture } from './testing/fixture.js';

let work: string;
let fx: QualitativeFixture;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'm3ae-qualitative-'));
  fx = await makeQualitativeFixture(work);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('the pictures show what the model read', () => {
  it('un-normalising a loaded image gives its resized pixels back', async () => {
    const rgb = await resizeToRgb(fx.images[0] as string, 32);
    expect(denormalizeRgb(await loadImage(fx.images[0] as string, { size: 32 }), 32, 32)).toEqual(rgb.data);
  });
});

describe('m3ae reconstruct (in process, real checkpoint, tokenizer and images)', () => {
  it('writes a PNG grid, one row per image: original · masked · reconstruction', async () => {
    const out = join(work, 'out', 'grid.png');
    const images = fx.images.slice(0, 3);
    const s = await reconstruct({ checkpoint: fx.checkpointDir, images, out, seed: 4, texts: [fx.samples[0]?.text as string], backend: 'wasm' });
    expect(s).toMatchObject({ out, step: 12, maskRatio: 0.75, seed: 4, backend: 'wasm', checkpoint: join(fx.checkpointDir, 'ckpt-12.safetensors') });
    expect(s.rows.map((r) => r.image)).toEqual(images);
    for (const r of s.rows) {
      expect(r.maskedPatches).toBe(12); // 16 patches, 4 kept
      expect(r.loss).toBeGreaterThan(0);
    }
    const meta = await sharp(out).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', s.width, s.height]);
    expect([s.width, s.height]).toEqual([4 + 3 * 132, 4 + 3 * 132]);
    // The first cell is the image itself (32 px, shown 4× by nearest neighbour).
    const raw = await sharp(out).raw().toBuffer();
    const rgb = await resizeToRgb(images[1] as string, 32);
    for (const [x, y] of [[0, 0], [13, 21], [31, 31]] as const) {
      const o = ((4 + 132 + y * 4) * s.width + 4 + x * 4) * 3;
      expect(Array.from(raw.subarray(o, o + 3))).toEqual(Array.from(rgb.data.subarray((y * 32 + x) * 3, (y * 32 + x) * 3 + 3)));
    }
    // Another seed hides other patches: another grid.
    const other = join(work, 'out', 'grid-2.png');
    await reconstruct({ checkpoint: fx.checkpointDir, images, out: other, seed: 5, backend: 'wasm' });
    expect((await sharp(other).raw().toBuffer()).equals(raw)).toBe(false);
  });

  it('names what is wrong', async () => {
    const out = join(work, 'never.png');
    await expect(reconstruct({ checkpoint: fx.checkpointDir, images: [], out })).rejects.toThrow(/--image: expected at least one image file/);
    await expect(reconstruct({ checkpoint: fx.checkpointDir, images: fx.images.slice(0, 3), texts: ['a', 'b'], out })).rejects.toThrow(/--text given 2 times for 3 images/);
    await expect(reconstruct({ checkpoint: join(work, 'none'), images: fx.images.slice(0, 1), out, backend: 'wasm' })).rejects.toThrow(/none: no such file or directory/);
    await expect(reconstruct({ checkpoint: fx.checkpointDir, images: [join(work, 'missing.png')], out, backend: 'wasm' })).rejects.toThrow(/missing\.png/);
    await expect(reconstruct({ checkpoint: fx.checkpointDir, images: fx.images.slice(0, 1), out, tokenizer: join(work, 'nope.json'), backend: 'wasm' })).rejects.toThrow(/--tokenizer ".*nope\.json": no such file/);
  });

  it('finds the tokenizer from the run configuration stored in the checkpoint, or asks for --tokenizer', async () => {
    const info = { path: 'ckpt-1.safetensors', metadata: { run_config: JSON.stringify({ data: { dir: work } }) } } as unknown as Parameters<typeof checkpointTokenizerPath>[0];
    // data.dir/tokenizer.json exists in the fixture directory.
    expect(checkpointTokenizerPath(info, undefined)).toBe(join(work, 'tokenizer.json'));
    const gone = { ...info, metadata: { run_config: JSON.stringify({ data: { tokenizer: '/nowhere/tokenizer.json' } }) } } as typeof info;
    expect(() => checkpointTokenizerPath(gone, undefined)).toThrow(/the tokenizer its run used \(\/nowhere\/tokenizer\.json\) is not here; pass --tokenizer FILE/);
    const none = { ...info, metadata: {} } as typeof info;
    expect(() => checkpointTokenizerPath(none, undefined)).toThrow(/names no tokenizer; pass --tokenizer FILE/);
  });
});

describe('m3ae fill (in process)', () => {
  it('encodes <mask> placeholders with the real tokenizer', () => {
    const t = encodeMaskedText(fx.tokenizer, 'axial CT showing a <mask> lesion in the <mask> lobe', fx.config.maxTextLength);
    expect(t.positions).toHaveLength(2);
    const mask = fx.tokenizer.special.mask;
    for (const p of t.positions) expect(t.inputIds[p]).toBe(mask);
    // Around the masks, the words are tokenised as in the plain text.
    const plain = fx.tokenizer.encode('axial CT showing a lesion in the lobe', fx.config.maxTextLength);
    const withoutMasks = Array.from(t.inputIds).filter((id) => id !== mask);
    expect(fx.tokenizer.decode(withoutMasks, true)).toBe(fx.tokenizer.decode(Array.from(plain.inputIds), true));
    expect(encodeMaskedText(fx.tokenizer, 'a [MASK] b', 16).positions).toHaveLength(1);
    expect(() => encodeMaskedText(fx.tokenizer, 'no placeholder here', 16)).toThrow(new RegExp(`expected at least one ${MASK_MARKERS[0]} or`));
    expect(() => encodeMaskedText(fx.tokenizer, 'a very long text that goes on and on and on until <mask>', 8)).toThrow(/1 placeholder\(s\) but only 0 fit in 8 tokens/);
  });

  it('lists the top-k tokens per mask with the image, a blank and a mismatched image, and how far they moved', async () => {
    const s = await fill({ checkpoint: fx.checkpointDir, image: fx.images[0] as string, mismatchedImage: fx.images[3], text: 'axial CT showing a <mask> lesion', topK: 4, backend: 'wasm' });
    expect(s.variants.map((v) => v.name)).toEqual(['image', 'blank', 'mismatched']);
    expect(s.positions).toHaveLength(1);
    const p = s.positions[0] as (typeof s.positions)[number];
    expect(p.top).toHaveLength(3);
    for (const top of p.top) {
      expect(top).toHaveLength(4);
      for (const t of top) {
        expect(t.id).toBeGreaterThanOrEqual(0);
        expect(t.id).toBeLessThan(fx.config.vocabSize);
        expect(t.probability).toBeGreaterThan(0);
      }
    }
    expect(p.shift[0]).toBe(0);
    expect(p.shift[1]).toBeGreaterThan(0);
    expect(p.shift[2]).toBeGreaterThan(0);
    const table = formatFill(s);
    expect(table).toContain('<mask> 1 (token');
    expect(table).toContain('mismatched (shift');
    expect(table.split('\n').filter((l) => l.includes('%'))).toHaveLength(4);
    await expect(fill({ checkpoint: fx.checkpointDir, image: fx.images[0] as string, text: 'no mask', backend: 'wasm' })).rejects.toThrow(/--text: text "no mask": expected at least one <mask>/);
  });
});
