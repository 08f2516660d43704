import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sharedDataForTests } from '@m3ae/data';
import { chooseBackend, latestCheckpointInfo } from '@m3ae/model';
import { startCli } from '../../test/cli-process.js';
import { tinyPretrainCheckpoint, tinyVqaRadOptions } from '../../test/finetune-fixture.js';
import type { EvalReport } from './eval.js';
import { runFinetune, type FinetuneOptions } from './finetune.js';

const run = promisify(execFile);
const bin = resolve(import.meta.dirname, '../../bin/m3ae.js');
const built = existsSync(resolve(import.meta.dirname, '../../dist/cli.js'));
const data = sharedDataForTests(resolve(import.meta.dirname, '../../..'), 'fine-tuning / eval tests on real VQA-RAD');
if (!built) console.warn('m3ae eval process tests skipped: tools is not built (nx run @m3ae/tools:build)');

let dir = '';
let pretrain = '';

beforeAll(async () => {
  await chooseBackend({ backend: 'wasm' });
  dir = await mkdtemp(join(tmpdir(), 'm3ae-finetune-'));
  if (!data) return;
  ({ checkpoint: pretrain } = await tinyPretrainCheckpoint(dir, data, 1));
}, 120_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe.skipIf(!data)('m3ae finetune (in process, tiny, real VQA-RAD questions)', () => {
  const base = (output: string): FinetuneOptions => tinyVqaRadOptions(data ?? '', pretrain, output);

  it('selects on validation, records the task, and resumes to bit-identical parameters', async () => {
    const straight = await runFinetune(base(join(dir, 'ft-a')));
    expect(straight.steps).toBe(4);
    expect(straight.settings.imageSize).toBe(40); // 384/288 of tiny's 32 px, whole patches
    expect(straight.settings.textLength).toBe(16);
    expect(straight.settings.lrMultiplierHead).toBe(50); // the official VQA head multiplier
    expect(straight.history.map((h) => h.step)).toEqual([2, 4]);
    expect(straight.bestStep).toBe(straight.history.reduce((b, h) => (h.score > b.score ? h : b)).step);
    expect(straight.meta.labels?.length).toBeGreaterThan(1);
    expect(existsSync(straight.bestPath)).toBe(true);
    const latestA = await latestCheckpointInfo(join(dir, 'ft-a'));
    expect(latestA.step).toBe(4);
    expect(JSON.parse(latestA.metadata['task'] ?? '{}')).toMatchObject({ name: 'vqa-rad', head: { kind: 'vqa' }, carve: { testFraction: 0.1 } });

    // Stopped after step 2 (as on SIGTERM), then resumed: the same parameters as the straight run.
    const ac = new AbortController();
    const stopped = await runFinetune({ ...base(join(dir, 'ft-b')), signal: ac.signal, log: (l) => (l.startsWith('step 2 ') ? ac.abort() : undefined) });
    expect(stopped.stopped).toBe(true);
    expect(stopped.steps).toBe(2);
    const resumed = await runFinetune({ ...base(join(dir, 'ft-b')), resume: true });
    expect(resumed.steps).toBe(4);
    expect(resumed.history.map((h) => h.step)).toEqual([2, 4]);
    const latestB = await latestCheckpointInfo(join(dir, 'ft-b'));
    expect(latestB.paramsSha256).toBe(latestA.paramsSha256);
  }, 300_000);

  it('fine-tunes retrieval on MedPix (true caption + negatives, irtr head from the ITM match row), selecting on R@K', async () => {
    const r = await runFinetune({
      task: 'retrieval',
      data: join(data ?? '', 'medpix2'),
      output: join(dir, 'ft-irtr'),
      checkpoint: pretrain,
      trainLimit: 16,
      valLimit: 6,
      negatives: 3,
      epochs: 1,
      globalBatch: 8,
      microBatch: 4,
      learningRate: 1e-4,
    });
    expect(r.meta).toMatchObject({ name: 'retrieval', head: { kind: 'retrieval', outputs: 1 }, source: 'medpix', textLength: 16 });
    expect(r.settings.augment).toBe(true); // the official irtr run uses clip_resizedcrop
    expect(r.steps).toBe(2);
    const val = r.history.at(-1)?.val;
    if (val?.kind !== 'retrieval') throw new Error('expected retrieval metrics');
    expect(val.recall.images).toBeGreaterThan(0);
    expect(r.bestScore).toBeCloseTo((val.recall.i2t.r1 + val.recall.i2t.r5 + val.recall.i2t.r10 + val.recall.t2i.r1 + val.recall.t2i.r5 + val.recall.t2i.r10) / 6, 10);
  }, 300_000);

  it('refuses what would break the protocol or the model, naming the problem', async () => {
    await expect(runFinetune({ ...base(join(dir, 'ft-c')), checkpoint: undefined })).rejects.toThrow(/--checkpoint \(task\.checkpoint\) is required/);
    const first = await runFinetune({ ...base(join(dir, 'ft-d')), steps: 1, evalEvery: 1 });
    await expect(runFinetune({ ...base(join(dir, 'ft-e')), checkpoint: first.bestPath })).rejects.toThrow(/is a fine-tuned checkpoint/);
    await expect(runFinetune({ ...base(join(dir, 'ft-f')), globalBatch: 0 })).rejects.toThrow(/training.globalBatch = 0/);
  }, 300_000);
});

describe.skipIf(!data || !built)('m3ae eval (the built CLI as a process, tiny, real VQA-RAD files)', () => {
  let output = '';

  beforeAll(async () => {
    output = join(dir, 'ft-eval');
    const { stdout } = await run('node', [bin, 'finetune', 'vqa-rad', '--checkpoint', pretrain, '--data', join(data ?? '', 'vqa_rad'), '--output', output, '--holdout-fraction', '0.1',
      '--train-limit', '24', '--val-limit', '12', '--epochs', '1', '--global-batch', '8', '--micro-batch', '4', '--learning-rate', '1e-4', '--backend', 'wasm']);
    const summary = JSON.parse(stdout) as { best: { path: string; step: number }; steps: number };
    expect(summary.steps).toBe(3);
    expect(summary.best.path).toContain(join(output, 'best'));
  }, 300_000);

  it('SIGTERM stops a fine-tuning at its next step: the step is kept as a checkpoint, exit 143 within seconds', async () => {
    const out = join(dir, 'ft-sigterm');
    const p = startCli(['finetune', 'vqa-rad', '--checkpoint', pretrain, '--data', join(data ?? '', 'vqa_rad'), '--output', out, '--holdout-fraction', '0.1',
      '--train-limit', '24', '--val-limit', '12', '--epochs', '100', '--global-batch', '4', '--micro-batch', '4', '--learning-rate', '1e-4', '--backend', 'wasm']);
    await p.waitFor(/^step 2\//m, 120_000);
    const signalled = performance.now();
    p.child.kill('SIGTERM');
    const r = await p.exit(60_000);
    expect(r.code).toBe(143);
    expect(performance.now() - signalled).toBeLessThan(30_000);
    const summary = JSON.parse(r.stdout.trim().split('\n').pop() as string) as { steps: number; stopped: boolean };
    expect(summary.stopped).toBe(true);
    expect(summary.steps).toBeGreaterThanOrEqual(1);
    expect(summary.steps).toBeLessThan(600); // 100 epochs of 6 steps: it did stop early
    expect((await latestCheckpointInfo(out)).step).toBe(summary.steps);
  }, 180_000);

  it('prints open / closed / overall with counts on the held-out split and writes consistent JSON', async () => {
    const json = join(dir, 'eval.json');
    const preds = join(dir, 'predictions.jsonl');
    const { stdout } = await run('node', [bin, 'eval', 'vqa-rad', '--checkpoint', output, '--data', join(data ?? '', 'vqa_rad'), '--split', 'holdout', '--json', json, '--predictions', preds, '--backend', 'wasm']);
    const r = JSON.parse(readFileSync(json, 'utf8')) as EvalReport;
    if (r.metrics.kind !== 'vqa') throw new Error('expected VQA metrics');
    const { open, closed, overall, unseenAnswers } = r.metrics.vqa;
    expect(r.split).toBe('holdout');
    expect(r.checkpoint).toContain(join(output, 'best'));
    // The holdout carve is ~10% of 3,064 questions, by image.
    expect(r.examples).toBeGreaterThan(250);
    expect(r.examples).toBeLessThan(400);
    expect(open.total + closed.total).toBe(r.examples);
    expect(overall.total).toBe(r.examples);
    expect(overall.correct).toBe(open.correct + closed.correct);
    expect(overall.accuracy).toBeCloseTo((open.accuracy * open.total + closed.accuracy * closed.total) / r.examples, 10);
    for (const c of [open, closed, overall]) {
      expect(c.accuracy).toBeGreaterThanOrEqual(0);
      expect(c.accuracy).toBeLessThanOrEqual(1);
    }
    // The vocabulary came from 24 training questions: most held-out answers are unseen, and counted wrong.
    expect(unseenAnswers).toBeGreaterThan(0);
    expect(overall.correct).toBeLessThanOrEqual(r.examples - unseenAnswers);
    expect(stdout).toMatch(new RegExp(`overall\\s+${r.examples}\\s+${overall.correct}\\s+${(100 * overall.accuracy).toFixed(2)}`));
    // One line per question; its correct flags add up to the table's.
    const lines = readFileSync(preds, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: string; type: string; truth: string; predicted: string; correct: boolean });
    expect(lines.length).toBe(r.examples);
    expect(lines.filter((l) => l.correct).length).toBe(overall.correct);
    expect(lines.filter((l) => l.correct && l.type === 'OPEN').length).toBe(open.correct);
    for (const l of lines) expect(l.correct).toBe(l.truth === l.predicted);
    expect(stdout).toMatch(/open\s+\d+/);
    expect(stdout).toMatch(/closed\s+\d+/);
  }, 300_000);

  it('names what is missing: the test file absent here, a pre-training checkpoint for VQA', async () => {
    await expect(run('node', [bin, 'eval', 'vqa-rad', '--checkpoint', output, '--data', join(data ?? '', 'vqa_rad'), '--split', 'test'])).rejects.toMatchObject({ stderr: expect.stringMatching(/testset\.json/) });
    await expect(run('node', [bin, 'eval', 'vqa-rad', '--checkpoint', pretrain, '--data', join(data ?? '', 'vqa_rad'), '--split', 'val'])).rejects.toMatchObject({
      stderr: expect.stringMatching(/pre-training checkpoint .*fine-tune it first/),
    });
  }, 120_000);

  it('evaluates retrieval zero-shot from a pre-training checkpoint (ITM match score), R@1 ≤ R@5 ≤ R@10', async () => {
    const json = join(dir, 'irtr.json');
    const { stdout } = await run('node', [bin, 'eval', 'retrieval', '--checkpoint', pretrain, '--data', join(data ?? '', 'medpix2'), '--split', 'test', '--limit', '12', '--json', json, '--backend', 'wasm']);
    const r = JSON.parse(readFileSync(json, 'utf8')) as EvalReport;
    if (r.metrics.kind !== 'retrieval') throw new Error('expected retrieval metrics');
    expect(r.zeroShot).toBe(true);
    expect(r.metrics.recall.images).toBe(12);
    expect(r.metrics.recall.texts).toBeGreaterThan(0);
    expect(r.metrics.recall.texts).toBeLessThanOrEqual(12);
    for (const d of [r.metrics.recall.i2t, r.metrics.recall.t2i]) {
      expect(d.r1).toBeLessThanOrEqual(d.r5);
      expect(d.r5).toBeLessThanOrEqual(d.r10);
    }
    // Recalls are fractions of the 12 image queries.
    for (const v of Object.values(r.metrics.recall.i2t)) expect(Math.abs(v * 12 - Math.round(v * 12))).toBeLessThan(1e-9);
    expect(stdout).toMatch(/image→text \(I2T\)\s+12/);
    expect(stdout).toContain('zero-shot');
  }, 300_000);
});
