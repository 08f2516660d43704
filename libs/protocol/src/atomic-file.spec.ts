import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isAtomicTemp, writeFailureAdvice, writeFileAtomic } from './atomic-file.js';

const dir = await mkdtemp(join(tmpdir(), 'm3ae-atomic-'));
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('writeFileAtomic', () => {
  it('writes a string, bytes, chunks or through the handle, replaces the old file, and leaves no temporary file', async () => {
    const path = join(dir, 'a.bin');
    await writeFileAtomic(path, 'first');
    expect(await readFile(path, 'utf8')).toBe('first');
    await writeFileAtomic(path, Uint8Array.of(1, 2, 3));
    expect([...(await readFile(path))]).toEqual([1, 2, 3]);
    await writeFileAtomic(path, [Uint8Array.of(4), new Uint8Array(0), Uint8Array.of(5, 6)]);
    expect([...(await readFile(path))]).toEqual([4, 5, 6]);
    await writeFileAtomic(path, async (file) => void (await file.write('through the handle')));
    expect(await readFile(path, 'utf8')).toBe('through the handle');
    expect(await readdir(dir)).toEqual(['a.bin']);
  });

  it('a failed write keeps the old file, removes its temporary file and throws the file system error', async () => {
    const path = join(dir, 'b.json');
    await writeFileAtomic(path, '{"old": true}');
    const err = await writeFileAtomic(path, async () => {
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ENOSPC' });
    expect(writeFailureAdvice(err)).toBe('free space on that volume');
    expect(await readFile(path, 'utf8')).toBe('{"old": true}');
    expect((await readdir(dir)).filter(isAtomicTemp)).toEqual([]);
    // A directory where the file should go: the rename fails, and nothing is left behind either.
    await mkdir(join(dir, 'c.txt'));
    await expect(writeFileAtomic(join(dir, 'c.txt'), 'x')).rejects.toMatchObject({ code: expect.stringMatching(/EISDIR|EPERM|ENOTEMPTY|EEXIST/) });
    expect((await readdir(dir)).filter(isAtomicTemp)).toEqual([]);
  });

  it('names its temporary files so that a leftover can be recognised, and nothing else', async () => {
    expect(isAtomicTemp('.ckpt-10.safetensors.tmp-1234-0a1b2c3d')).toBe(true);
    expect(isAtomicTemp('ckpt-10.safetensors')).toBe(false);
    expect(isAtomicTemp('shard-00000.m3s.tmp-1234')).toBe(false);
    await writeFile(join(dir, '.x.tmp-1-deadbeef'), 'leftover');
    expect((await readdir(dir)).filter(isAtomicTemp)).toEqual(['.x.tmp-1-deadbeef']);
  });
});
