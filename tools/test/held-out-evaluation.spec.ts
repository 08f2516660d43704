import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadRunConfig, type RunConfig } from '@m3ae/protocol';
import { modelSetup, trainInProcess, type EvaluationEntry } from '@m3ae/training';
import { formatEvalTable, runEval } from '../src/commands/eval.js';
import { ensurePhantomDataset } from '../src/commands/train.js';

// Pre-training with a held-out evaluation every 2 steps (tiny preset, phantom shards: training and a disjoint held-out corpus).
describe('held-out evaluation during pre-training', () => {
  const work = mkdtempSync(join(tmpdir(), 'm3ae-held-out-'));
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  async function config(): Promise<RunConfig> {
    const train = await ensurePhantomDataset({ workDir: work, preset: 'tiny', count: 24, seed: 5 });
    const held = await ensurePhantomDataset({ workDir: work, preset: 'tiny', count: 12, seed: 6 });
    return loadRunConfig({
      base: {
        runId: 'held-out',
        seed: 5,
        model: { preset: 'tiny', overrides: { vocabSize: train.vocabSize, padTokenId: train.padTokenId } },
        data: { dir: train.dir, tokenizer: train.tokenizer },
        training: { steps: 4, globalBatch: 4, microBatch: 2, learningRate: 1e-3 },
        evaluation: { every: 2, data: held.dir, samples: 10 },
        compute: { backend: 'wasm' },
        checkpoint: { dir: mkdtempSync(join(work, 'ckpt-')), every: 0 },
      },
      env: {},
    });
  }

  let trained = '';

  async function run(c: RunConfig, threads: number): Promise<{ entries: EvaluationEntry[]; tensors: number[]; lines: string[] }> {
    const entries: EvaluationEntry[] = [];
    const tensors: number[] = [];
    const lines: string[] = [];
    const setup = await modelSetup(c, {
      log: (l) => lines.push(l),
      onEvaluate: (e) => {
        entries.push(e);
        tensors.push(tf.memory().numTensors);
      },
    });
    try {
      trained = mkdtempSync(join(work, 'ckpt-'));
      await trainInProcess({ ...c, checkpoint: { ...c.checkpoint, dir: trained } }, setup, { threads });
    } finally {
      await setup.close?.();
    }
    return { entries, tensors, lines };
  }

  it('after steps 2 and 4: ITM/MLM accuracy and MIM loss with their baselines, the same for 1 and 2 compute threads, no tensor leak', async () => {
    const c = await config();
    const one = await run(c, 1);
    expect(one.entries.map((e) => e.step)).toEqual([2, 4]);
    expect(one.tensors[1]).toBe(one.tensors[0]);
    const [a, b] = one.entries as [EvaluationEntry, EvaluationEntry];
    expect(a.pairs).toBe(10);
    expect(a.counts.itm).toBe(10);
    expect(a.baseline.itmChance).toBe(0.5);
    expect(a.baseline.unigramEntropy).toBeGreaterThan(0);
    expect(a.baseline.unigramHeldOut).toBeGreaterThan(0);
    expect(b.baseline.unigramHeldOut).toBe(a.baseline.unigramHeldOut); // the same fixed masked tokens
    for (const v of [a.loss.mlm, a.loss.mim, a.loss.itm, a.accuracy.mlm, a.accuracy.itm]) expect(Number.isFinite(v)).toBe(true);
    // The same fixed held-out batches, other parameters: other figures.
    expect(b.counts).toEqual(a.counts);
    expect(b.loss.mim).not.toBe(a.loss.mim);
    expect(one.lines[0]).toContain('held-out evaluation every 2 steps');
    expect(one.lines.find((l) => l.startsWith('held-out evaluation after step 4'))).toMatch(/ITM acc .*\(chance 50\.0%.*MLM loss .* nats \(unigram model [\d.]+: (below|not below); unigram entropy of the training captions /);
    const two = await run(c, 2);
    const figures = (e: EvaluationEntry): unknown => ({ ...e, seconds: 0 });
    expect(two.entries.map(figures)).toEqual(one.entries.map(figures));
  }, 300_000);

  it('m3ae eval retrieval on held-out shards: zero-shot from the pre-training checkpoint, with the chance level', async () => {
    const c = await config();
    expect(trained).not.toBe('');
    const r = await runEval({ task: 'retrieval', checkpoint: trained, data: c.evaluation.data as string, split: 'test', limit: 10, batchSize: 16, backend: 'wasm' });
    if (r.metrics.kind !== 'retrieval') throw new Error('expected retrieval metrics');
    expect(r.zeroShot).toBe(true);
    expect(r.step).toBe(4);
    expect(r.examples).toBe(10);
    expect(r.metrics.recall.images).toBe(10);
    expect(r.chance?.i2t.r1).toBeGreaterThan(0);
    for (const v of Object.values(r.metrics.recall.i2t)) expect(Math.abs(v * 10 - Math.round(v * 10))).toBeLessThan(1e-9);
    const again = await runEval({ task: 'retrieval', checkpoint: trained, data: c.evaluation.data as string, split: 'test', limit: 10, batchSize: 16, backend: 'wasm' });
    expect(again.metrics).toEqual(r.metrics);
    const table = formatEvalTable(r);
    expect(table).toContain(`shard dataset ${c.evaluation.data as string}, 10 examples`);
    expect(table).toMatch(/image→text \(I2T\)\s+10/);
    expect(table).toMatch(/chance I2T \(random ranking\)\s+\d/);
  }, 300_000);

  it('refuses a held-out dataset that is the training one, naming the field', async () => {
    const c = await config();
    const same = { ...c, evaluation: { ...c.evaluation, data: c.data.dir as string } };
    const err = await modelSetup(same).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/^evaluation\.data = ".*": the same dataset as data\.dir .*; expected held-out pairs/);
  }, 120_000);
});
