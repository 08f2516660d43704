import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const bin = resolve(import.meta.dirname, '../bin/m3ae.js');
const work = mkdtempSync(join(tmpdir(), 'm3ae-synth-cli-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('m3ae data synth (built, run as a real process)', () => {
  it('writes the phantom corpus and ends with one JSON line; the same seed gives the same manifest', async () => {
    const a = await run('node', [bin, 'data', 'synth', '--output', join(work, 'a'), '--count', '6', '--seed', '3', '--size', '64']);
    const b = await run('node', [bin, 'data', 'synth', '--output', join(work, 'b'), '--count', '6', '--seed', '3', '--size', '64']);
    const result = JSON.parse(a.stdout.trim()) as { written: number; manifest: string };
    expect(result.written).toBe(6);
    expect(result.manifest).toBe(join(work, 'a', 'manifest.jsonl'));
    expect(JSON.parse(b.stdout.trim())).toMatchObject({ written: 6 });
    const lines = readFileSync(result.manifest, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(6);
    expect(readFileSync(join(work, 'b', 'manifest.jsonl'), 'utf8')).toBe(readFileSync(result.manifest, 'utf8'));
    expect(readFileSync(join(work, 'a', 'images', '000005.png')).equals(readFileSync(join(work, 'b', 'images', '000005.png')))).toBe(true);
  });

  it('rejects a bad option naming it and the value', async () => {
    await expect(run('node', [bin, 'data', 'synth', '--output', join(work, 'c'), '--count', 'ten', '--seed', '1'])).rejects.toMatchObject({
      stderr: expect.stringContaining('--count must be an integer in 0..100000000, got "ten"'),
    });
  });
});
