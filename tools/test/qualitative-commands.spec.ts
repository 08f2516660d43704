import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeQualitativeFixture, type QualitativeFixture } from '@m3ae/qualitative/testing';

const run = promisify(execFile);
const bin = resolve(import.meta.dirname, '../bin/m3ae.js');
let work: string;
let fx: QualitativeFixture;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'm3ae-qualitative-cli-'));
  fx = await makeQualitativeFixture(work);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('m3ae reconstruct and m3ae fill (built, run as real processes)', () => {
  it('m3ae reconstruct writes the grid and prints one JSON line', async () => {
    const out = join(work, 'grid.png');
    const r = await run('node', [bin, 'reconstruct', '--checkpoint', fx.checkpointDir, '--image', fx.images[0] as string, fx.images[1] as string, '--out', out, '--mask-ratio', '0.5', '--seed', '7', '--backend', 'wasm']);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const s = JSON.parse(lines[0] as string) as { step: number; maskRatio: number; width: number; height: number; rows: { maskedPatches: number; loss: number }[] };
    expect(s).toMatchObject({ step: 12, maskRatio: 0.5 });
    expect(s.rows.map((x) => x.maskedPatches)).toEqual([8, 8]);
    const meta = await sharp(out).metadata();
    expect([meta.width, meta.height]).toEqual([s.width, s.height]);
    expect(s.height).toBe(4 + 2 * 132);
  });

  it('m3ae fill prints the top-k table, or JSON', async () => {
    const args = [bin, 'fill', '--checkpoint', fx.checkpointDir, '--image', fx.images[0] as string, '--mismatched-image', fx.images[2] as string, '--text', 'axial CT of the head showing a <mask> lesion', '--top-k', '3', '--backend', 'wasm'];
    const table = await run('node', args);
    expect(table.stdout).toContain('<mask> 1 (token');
    expect(table.stdout).toMatch(/image\s+blank \(shift (\d\.\d{3}|\d\.\de-\d+)\)\s+mismatched \(shift (\d\.\d{3}|\d\.\de-\d+)\)/);
    expect(table.stdout.split('\n').filter((l) => l.includes('%'))).toHaveLength(3);
    const json = JSON.parse((await run('node', [...args, '--json'])).stdout) as { positions: { top: unknown[][] }[]; variants: { name: string }[] };
    expect(json.variants.map((v) => v.name)).toEqual(['image', 'blank', 'mismatched']);
    expect(json.positions[0]?.top.map((t) => t.length)).toEqual([3, 3, 3]);
  });

  it('names bad options and inputs', async () => {
    const bad = await run('node', [bin, 'reconstruct', '--checkpoint', fx.checkpointDir, '--image', fx.images[0] as string, '--out', join(work, 'x.png'), '--mask-ratio', '1.2']).catch((e: { code: number; stderr: string }) => e);
    expect((bad as { code: number }).code).not.toBe(0);
    expect((bad as { stderr: string }).stderr).toContain('--mask-ratio must be a number in [0, 1), got "1.2"');
    const noMask = await run('node', [bin, 'fill', '--checkpoint', fx.checkpointDir, '--image', fx.images[0] as string, '--text', 'no placeholder', '--backend', 'wasm']).catch((e: { code: number; stderr: string }) => e);
    expect((noMask as { code: number }).code).not.toBe(0);
    expect((noMask as { stderr: string }).stderr).toContain('m3ae: --text: text "no placeholder": expected at least one <mask> or [MASK] placeholder');
  });
});
