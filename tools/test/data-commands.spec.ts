import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { medpixDevManifestLines, shardTokenizer, sharedDataForTests } from '@m3ae/data';
import { inspectCheckpoint } from '@m3ae/model';

const run = promisify(execFile);
const bin = resolve(import.meta.dirname, '../bin/m3ae.js');
const data = sharedDataForTests(resolve(import.meta.dirname, '../..'), 'm3ae tokenizer/prepare process tests');
const work = mkdtempSync(join(tmpdir(), 'm3ae-cli-data-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe.skipIf(!data)('m3ae tokenizer train and m3ae prepare (built, run as real processes)', () => {
  it('trains a vocabulary, prepares shards with it, and resumes to the same dataset', async () => {
    const d = data as string;
    const tok = join(work, 'tokenizer.json');
    const t = await run('node', [bin, 'tokenizer', 'train', '--vocab-size', '600', '--output', tok, `medpix:${join(d, 'medpix2')}`, join(d, 'iu_xray_reports')]);
    const trained = JSON.parse(t.stdout.trim().split('\n').pop() as string) as { vocabSize: number; agreement: { mismatches: number } };
    expect(trained.vocabSize).toBe(600);
    expect(trained.agreement.mismatches).toBe(0);

    const lines = medpixDevManifestLines(d, 12, (caption, image) => `${caption} (image ${image})`);
    const manifest = join(work, 'pairs.jsonl');
    writeFileSync(manifest, lines.map((l) => JSON.stringify(l)).join('\n') + '\n{"id": "broken", "image": "nowhere.jpg", "text": "an image that is not there"}\n');
    const args = ['prepare', '--source', 'manifest', '--input', manifest, '--output', join(work, 'shards'), '--image-size', '32', '--samples-per-shard', '5', '--tokenizer', tok];
    const first = await run('node', [bin, ...args]);
    // Not a terminal: no progress bar, nothing on stderr, exactly one JSON line on stdout.
    expect(first.stderr).toBe('');
    expect(first.stdout.endsWith('\n')).toBe(true);
    expect(first.stdout.trim().split('\n')).toHaveLength(1);
    expect(JSON.parse(first.stdout)).toEqual({ written: 12, skipped: { 'missing-image': 1 }, shards: 3 });
    const hash = (JSON.parse(readFileSync(join(work, 'shards', 'dataset.json'), 'utf8')) as { datasetHash: string }).datasetHash;
    // The dataset carries its tokenizer: `m3ae train --data SHARDS` needs nothing else.
    expect(shardTokenizer(join(work, 'shards'))).toBe(join(work, 'shards', 'tokenizer.json'));
    expect(readFileSync(join(work, 'shards', 'tokenizer.json')).equals(readFileSync(tok))).toBe(true);
    const second = await run('node', [bin, ...args]);
    expect(second.stdout).toBe(first.stdout);
    expect((JSON.parse(readFileSync(join(work, 'shards', 'dataset.json'), 'utf8')) as { datasetHash: string }).datasetHash).toBe(hash);
  });

  it('m3ae train --local --data takes the model sizes from the data; with a run file a mismatch names the fix', async () => {
    const d = data as string;
    const dir = join(work, 'fit');
    const tok = join(work, 'tokenizer-1200.json');
    await run('node', [bin, 'tokenizer', 'train', '--vocab-size', '1200', '--output', tok, `medpix:${join(d, 'medpix2')}`]);
    const manifest = join(work, 'fit-pairs.jsonl');
    writeFileSync(manifest, medpixDevManifestLines(d, 8).map((l) => JSON.stringify(l)).join('\n') + '\n');
    // 48 px and 1,200 tokens: tiny has 32 px and 1,000.
    await run('node', [bin, 'prepare', '--source', 'manifest', '--input', manifest, '--output', join(dir, 'shards'), '--image-size', '48', '--tokenizer', tok]);
    const env = { ...process.env, REDIS_URL: '', M3AE_REDIS_URL: '', M3AE_LOG_LEVEL: 'warn', M3AE_BACKEND: 'wasm' };
    const common = ['train', '--local', '--data', join(dir, 'shards'), '--workers', '1', '--steps', '1', '--global-batch', '4', '--micro-batch', '4', '--work-dir', dir, '--no-metrics'];
    const trained = await run('node', [bin, ...common, '--json'], { env, maxBuffer: 1 << 24 });
    const report = JSON.parse(trained.stdout.trim().split('\n').pop() as string) as { steps: number; checkpoint: string };
    expect(report.steps).toBe(1);
    const config = (await inspectCheckpoint(report.checkpoint)).config as { imageSize: number; vocabSize: number };
    expect(config).toMatchObject({ imageSize: 48, vocabSize: 1200 });
    // A run file states the model: the mismatch is an error with the two ways out.
    const runFile = join(dir, 'run.json');
    writeFileSync(runFile, JSON.stringify({ model: { preset: 'tiny', overrides: { vocabSize: 1200 } }, data: { dir: join(dir, 'shards') } }));
    const refused = await run('node', [bin, ...common, '--config', runFile], { env }).catch((e: { code: number; stderr: string }) => e);
    expect((refused as { code: number }).code).toBe(1);
    expect((refused as { stderr: string }).stderr).toContain('model.overrides.imageSize = 32: expected 48');
    expect((refused as { stderr: string }).stderr).toContain('set model.overrides.imageSize: 48 in the run configuration, or prepare the data at 32 px (m3ae prepare --image-size 32)');
  }, 180_000);

  it('rejects a bad option naming it, the value and the choices', async () => {
    const err = await run('node', [bin, 'prepare', '--source', 'medpix', '--input', 'x', '--output', join(work, 'o'), '--image-format', 'png']).catch((e: { stderr: string; code: number }) => e);
    expect((err as { code: number }).code).not.toBe(0);
    expect((err as { stderr: string }).stderr).toMatch(/--image-format must be one of raw, jpeg, got "png"/);
  });
});
