import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSafetensors } from '../safetensors/index.js';
import {
  CheckpointError,
  inspectCheckpoint,
  latestCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  loadLatestCheckpoint,
  paramsSha256,
  saveCheckpoint,
  writeCheckpoint,
  type CheckpointManifest,
  type CheckpointState,
} from './index.js';

/** A small manifest shaped like the model's: two trainable tensors around a fixed one. */
function manifest(shapeA: number[] = [2, 3]): CheckpointManifest {
  const entries = [
    { name: 'enc.a.weight', shape: shapeA, offset: 0, trainable: true },
    { name: 'mim_head.decoder_pos_embed', shape: [1, 2, 2], offset: null, trainable: false },
    { name: 'head.bias', shape: [5], offset: shapeA.reduce((x, y) => x * y, 1), trainable: true },
  ];
  const hash = createHash('sha256').update(JSON.stringify(entries.map((e) => ({ name: e.name, shape: e.shape })))).digest('hex');
  return { entries, size: shapeA.reduce((x, y) => x * y, 1) + 5, hash };
}

function state(step: number, m = manifest()): CheckpointState {
  const params = Float32Array.from({ length: m.size }, (_, i) => Math.sin(i + step));
  return {
    step,
    manifest: m,
    params,
    fixedParams: new Map([['mim_head.decoder_pos_embed', new Float32Array([0, 0, 0.5, 1])]]),
    optimizer: { step, m: params.map((x) => x / 10), v: params.map((x) => x * x) },
    config: { preset: 'tiny', hiddenSize: 32 },
    metadata: { sampler_step: String(step), data_manifest_hash: 'abc' },
  };
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'm3ae-ckpt-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('checkpoint files', () => {
  it('round-trips parameters, fixed parameters, AdamW state and metadata, as a plain safetensors file', async () => {
    const s = state(7);
    const path = join(dir, 'one.safetensors');
    const w = await writeCheckpoint(path, s);
    expect(w.paramsSha256).toBe(paramsSha256(s.params));
    const back = await loadCheckpoint(path, s.manifest);
    expect(back.step).toBe(7);
    expect(Array.from(back.params)).toEqual(Array.from(s.params));
    expect(Array.from(back.fixedParams.get('mim_head.decoder_pos_embed') ?? [])).toEqual([0, 0, 0.5, 1]);
    expect(back.optimizer?.step).toBe(7);
    expect(Array.from(back.optimizer?.m ?? [])).toEqual(Array.from(s.optimizer?.m ?? []));
    expect(Array.from(back.optimizer?.v ?? [])).toEqual(Array.from(s.optimizer?.v ?? []));
    expect(back.config).toEqual({ preset: 'tiny', hiddenSize: 32 });
    expect(back.metadata['sampler_step']).toBe('7');
    expect(back.metadata['data_manifest_hash']).toBe('abc');

    // Any safetensors reader sees our names, F32 tensors in the model's shapes, and string metadata.
    const plain = await readSafetensors(path);
    expect([...plain.tensors.keys()]).toEqual([
      'enc.a.weight', 'mim_head.decoder_pos_embed', 'head.bias',
      'optimizer.m.enc.a.weight', 'optimizer.m.head.bias', 'optimizer.v.enc.a.weight', 'optimizer.v.head.bias',
    ]);
    expect(plain.tensors.get('enc.a.weight')).toMatchObject({ dtype: 'F32', shape: [2, 3] });
    expect(plain.metadata).toMatchObject({ format: 'm3ae-checkpoint', step: '7', manifest_hash: s.manifest.hash, params_sha256: w.paramsSha256, optimizer_step: '7' });
    // params_sha256 is the hash of the trainable tensors' bytes in canonical order.
    const bytes = Buffer.concat([plain.tensors.get('enc.a.weight'), plain.tensors.get('head.bias')].map((t) => Buffer.from((t?.data as Float32Array).buffer)));
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(w.paramsSha256);
  });

  it('works without optimizer state', async () => {
    const { optimizer: _o, ...s } = state(3);
    const path = join(dir, 'noopt.safetensors');
    await writeCheckpoint(path, s);
    expect((await loadCheckpoint(path, s.manifest)).optimizer).toBeNull();
  });

  it('refuses a different manifest, a wrong shape, a corrupted parameter and bad inputs, with clear errors', async () => {
    const s = state(1);
    const path = join(dir, 'check.safetensors');
    await writeCheckpoint(path, s);
    const other = manifest([3, 2]);
    await expect(loadCheckpoint(path, other)).rejects.toThrow(`written for parameter manifest ${s.manifest.hash}, but this model's manifest is ${other.hash}`);
    await expect(loadCheckpoint(path, { ...other, hash: s.manifest.hash })).rejects.toThrow('tensor enc.a.weight has shape [2, 3]; expected [3, 2]');

    const bytes = await readFile(path);
    const corrupt = join(dir, 'corrupt.safetensors');
    const hdr = Number(bytes.readBigUInt64LE(0));
    bytes[8 + hdr + 5] = (bytes[8 + hdr + 5] ?? 0) ^ 0x40; // flip a bit inside enc.a.weight
    await writeFile(corrupt, bytes);
    await expect(loadCheckpoint(corrupt, s.manifest)).rejects.toThrow(/the parameters' SHA-256 is [0-9a-f]{64} but the file records/);
    expect((await inspectCheckpoint(corrupt, { verify: true })).params_sha256_ok).toBe(false);
    expect((await inspectCheckpoint(path, { verify: true })).params_sha256_ok).toBe(true);

    await expect(writeCheckpoint(join(dir, 'x.safetensors'), { ...s, metadata: { step: '9' } })).rejects.toThrow('metadata.step: reserved');
    await expect(writeCheckpoint(join(dir, 'x.safetensors'), { ...s, params: new Float32Array(3) })).rejects.toThrow('params: got 3 values; expected 11');
    await expect(writeCheckpoint(join(dir, 'x.safetensors'), { ...s, fixedParams: new Map() })).rejects.toThrow('fixedParams.mim_head.decoder_pos_embed: missing');
    await expect(writeCheckpoint(join(dir, 'x.safetensors'), { ...s, step: -1 })).rejects.toThrow('step: got -1; expected a non-negative integer');
    await expect(writeCheckpoint(join(dir, 'x.safetensors'), { ...s, step: -1 })).rejects.toBeInstanceOf(CheckpointError);
    const notCkpt = join(dir, 'plain.safetensors');
    const { writeSafetensors } = await import('../safetensors/index.js');
    await writeSafetensors(notCkpt, [['w', { dtype: 'F32', shape: [1], data: new Float32Array(1) }]]);
    await expect(loadCheckpoint(notCkpt, s.manifest)).rejects.toThrow('metadata format is undefined; expected "m3ae-checkpoint" (not an M3AE checkpoint)');
  });
});

describe('checkpoint directories', () => {
  it('keeps the last M, finds the latest, ignores and cleans leftovers of interrupted writes', async () => {
    const d = join(dir, 'run');
    expect(await listCheckpoints(d)).toEqual([]);
    expect(await latestCheckpoint(d)).toBeUndefined();
    for (const step of [2, 10, 4]) await saveCheckpoint(d, state(step), { keepLast: 0 });
    expect((await listCheckpoints(d)).map((c) => c.step)).toEqual([2, 4, 10]); // numeric, not lexical, order
    // A crash during a write leaves only a temporary file: it is never taken for a checkpoint.
    await writeFile(join(d, '.ckpt-12.safetensors.tmp-999-deadbeef'), 'partial');
    expect((await latestCheckpoint(d))?.step).toBe(10);
    const saved = await saveCheckpoint(d, state(11), { keepLast: 2 });
    expect(saved.removed.map((p) => p.split('/').pop()).sort()).toEqual(['.ckpt-12.safetensors.tmp-999-deadbeef', 'ckpt-2.safetensors', 'ckpt-4.safetensors']);
    expect((await readdir(d)).sort()).toEqual(['ckpt-10.safetensors', 'ckpt-11.safetensors']);
    const latest = await loadLatestCheckpoint(d, manifest());
    expect(latest.step).toBe(11);
    expect(Array.from(latest.params)).toEqual(Array.from(state(11).params));
    const summary = await inspectCheckpoint(d);
    expect(summary).toMatchObject({ step: 11, params_sha256: paramsSha256(state(11).params), manifest_hash: manifest().hash, param_count: 11, optimizer_step: 11, tensors: 7 });
    expect(summary.metadata).toEqual({ sampler_step: '11', data_manifest_hash: 'abc' });
    await expect(saveCheckpoint(d, state(12), { keepLast: -1 })).rejects.toThrow('keepLast: got -1');
    await expect(loadLatestCheckpoint(join(dir, 'empty-nothing'), manifest())).rejects.toThrow('no such file or directory');
  });

  it('a checkpoint that cannot be written names the step, the file, the cause and the fix', async () => {
    // A file where the directory should be: no disk error can be staged more portably than this.
    await writeFile(join(dir, 'a-file'), 'not a directory');
    const err = await saveCheckpoint(join(dir, 'a-file', 'ckpts'), state(6)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as Error).message).toMatch(/^could not write the checkpoint of step 6 to .*a-file\/ckpts\/ckpt-6\.safetensors: ENOTDIR.*; check the directory or point checkpoint\.dir \(--checkpoint-dir\) at a volume that can take it \(about 1 MB a checkpoint\)$/);
    expect((err as Error).cause).toMatchObject({ code: 'ENOTDIR' });
  });
});
