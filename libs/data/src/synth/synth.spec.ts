import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resizeToRgb } from '../images/image.js';
import { readManifest } from '../readers/manifest.js';
import { SkipLog } from '../skip-log.js';
import {
  LESION_LOCATIONS,
  LESION_SIZES,
  PHANTOM_MODALITIES,
  PHANTOM_REGIONS,
  phantomAttributes,
  phantomCaption,
  type PhantomAttributes,
} from './attributes.js';
import { writePhantomCorpus, type PhantomManifestLine } from './corpus.js';
import { renderPhantom } from './render.js';

const work = mkdtempSync(join(tmpdir(), 'm3ae-synth-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function filesOf(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const f of readdirSync(join(dir, 'images')).sort()) out.set(f, readFileSync(join(dir, 'images', f)));
  out.set('manifest.jsonl', readFileSync(join(dir, 'manifest.jsonl')));
  return out;
}

describe('phantom corpus on disk', () => {
  it('is deterministic from the seed: same bytes twice, other bytes for another seed', async () => {
    await writePhantomCorpus({ output: join(work, 'a'), count: 12, seed: 5 });
    await writePhantomCorpus({ output: join(work, 'b'), count: 12, seed: 5, concurrency: 1 });
    await writePhantomCorpus({ output: join(work, 'c'), count: 12, seed: 6 });
    const [a, b, c] = ['a', 'b', 'c'].map((d) => filesOf(join(work, d)));
    expect(a.size).toBe(13);
    for (const [name, bytes] of a) expect(bytes.equals(b.get(name) ?? Buffer.alloc(0)), name).toBe(true);
    expect(a.get('manifest.jsonl')?.equals(c.get('manifest.jsonl') ?? Buffer.alloc(0))).toBe(false);
    expect(a.get('000003.png')?.equals(c.get('000003.png') ?? Buffer.alloc(0))).toBe(false);
  });

  it('is read back by the manifest reader with no skips, and its images decode', async () => {
    const out = join(work, 'm');
    const { manifest, written } = await writePhantomCorpus({ output: out, count: 20, seed: 9, format: 'jpeg', size: 96 });
    expect(written).toBe(20);
    const log = new SkipLog();
    const recs = [];
    for await (const r of readManifest(manifest, { skipLog: log })) recs.push(r);
    expect(log.total).toBe(0);
    expect(recs).toHaveLength(20);
    const lines = readFileSync(manifest, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as PhantomManifestLine);
    expect(recs.map((r) => r.text)).toEqual(lines.map((l) => l.text));
    expect(recs[0].id).toBe('phantom-000000');
    expect(recs[0].imagePath).toBe(join(out, 'images', '000000.jpg'));
    const img = await resizeToRgb(recs[7].imagePath, 64);
    expect([img.width, img.height]).toEqual([64, 64]);
  });

  it('refuses bad settings by name and value', async () => {
    await expect(writePhantomCorpus({ output: join(work, 'x'), count: -1, seed: 1 })).rejects.toThrow(/count must be an integer >= 0, got -1/);
    await expect(writePhantomCorpus({ output: join(work, 'x'), count: 1, seed: 1, size: 8 })).rejects.toThrow(/size .* got 8/);
  });
});

describe('captions say what the pixels show', () => {
  const DENSITY_WORDS = ['hyperdense', 'hypodense', 'hyperintense', 'hypointense', 'radiopaque', 'radiolucent'];

  it('names modality, plane, region, size, density, shape and location, each drawn independently', () => {
    const n = 3000;
    const counts = new Map<string, number>();
    const joint = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const a = phantomAttributes(1, i);
      const caption = phantomCaption(a, 1, i).toLowerCase();
      expect(caption).toContain(a.plane);
      expect(caption).toContain(`the ${a.region}`);
      expect(caption).toContain(`${a.location} quadrant`);
      expect(caption).toContain(a.shape);
      expect(caption).toContain(a.size);
      expect(caption).toContain({ CT: ' ct ', MR: ' mri ', 'X-ray': ' radiograph ' }[a.modality]);
      expect(DENSITY_WORDS.filter((w) => caption.includes(w))).toHaveLength(1);
      for (const [k, v] of Object.entries(a)) counts.set(`${k}=${v}`, (counts.get(`${k}=${v}`) ?? 0) + 1);
      joint.set(`${a.size}|${a.location}`, (joint.get(`${a.size}|${a.location}`) ?? 0) + 1);
    }
    for (const m of PHANTOM_MODALITIES) expect(Math.abs((counts.get(`modality=${m}`) ?? 0) / n - 1 / 3)).toBeLessThan(0.04);
    for (const r of PHANTOM_REGIONS) expect(Math.abs((counts.get(`region=${r}`) ?? 0) / n - 1 / 4)).toBeLessThan(0.04);
    // Independence: every (size, location) cell near 1/12 of the draws.
    for (const s of LESION_SIZES) for (const l of LESION_LOCATIONS) expect(Math.abs((joint.get(`${s}|${l}`) ?? 0) / n - 1 / 12)).toBeLessThan(0.025);
  });

  /** Measures the lesion from pixels: the phantom rendered with and without it (same noise) differs only there. */
  function measure(a: PhantomAttributes, index: number, size: number) {
    const withLesion = renderPhantom(a, { size, seed: 21, index }).pixels;
    const without = renderPhantom(a, { size, seed: 21, index, lesion: false }).pixels;
    let n = 0;
    let sx = 0;
    let sy = 0;
    let sd = 0;
    const pts: [number, number][] = [];
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const d = withLesion[y * size + x] - without[y * size + x];
        if (Math.abs(d) > 8) {
          n++;
          sx += x;
          sy += y;
          sd += d;
          pts.push([x, y]);
        }
      }
    }
    const cx = sx / n;
    const cy = sy / n;
    let xx = 0;
    let yy = 0;
    let xy = 0;
    let rmax = 0;
    for (const [x, y] of pts) {
      xx += (x - cx) ** 2;
      yy += (y - cy) ** 2;
      xy += (x - cx) * (y - cy);
      rmax = Math.max(rmax, Math.hypot(x - cx, y - cy));
    }
    [xx, yy, xy] = [xx / n, yy / n, xy / n];
    const tr = xx + yy;
    const disc = Math.sqrt(Math.max(0, (tr * tr) / 4 - (xx * yy - xy * xy)));
    return {
      meanShift: sd / n,
      right: cx > size / 2,
      upper: cy < size / 2,
      radius: Math.sqrt(n / Math.PI) / size,
      elongation: Math.sqrt((tr / 2 + disc) / (tr / 2 - disc)),
      fill: n / (Math.PI * (rmax + 0.5) ** 2),
    };
  }

  it('density, location, size and shape words agree with the lesion measured in the image', () => {
    const size = 256;
    for (let i = 0; i < 90; i++) {
      const a = phantomAttributes(21, i);
      const m = measure(a, i, size);
      const label = `#${i} ${JSON.stringify(a)} ${JSON.stringify(m)}`;
      // Density: brighter (hyper-) or darker (hypo-) than the same tissue without the lesion.
      if (a.density === 'hyper') expect(m.meanShift, label).toBeGreaterThan(30);
      else expect(m.meanShift, label).toBeLessThan(-30);
      // Location: the patient's left is the image's right.
      expect(m.right, label).toBe(a.location.startsWith('left'));
      expect(m.upper, label).toBe(a.location.endsWith('upper'));
      // Size class from the lesion's area.
      const measuredSize = m.radius < 0.045 ? 'small' : m.radius < 0.08 ? 'medium' : 'large';
      expect(measuredSize, label).toBe(a.size);
      // Shape: oval = elongated; irregular = fills little of its circumscribed disc; round otherwise.
      const measuredShape = m.elongation > 1.5 ? 'oval' : m.fill < 0.73 ? 'irregular' : 'round';
      expect(measuredShape, label).toBe(a.shape);
    }
  });
});
