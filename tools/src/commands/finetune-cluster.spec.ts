import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sharedDataForTests } from '@m3ae/data';
import { chooseBackend, latestCheckpointInfo } from '@m3ae/model';
import { tinyPretrainCheckpoint, tinyVqaRadOptions } from '../../test/finetune-fixture.js';
import { Coordinator } from '@m3ae/coordinator';
import { createSetup, TaskComputer } from '@m3ae/training';
import { loadRunConfig, type RunConfig } from '@m3ae/protocol';
import { TrainingWorker } from '@m3ae/worker';
import { runEval } from './eval.js';
import { runFinetune, type FinetuneOptions } from './finetune.js';
import { finetuneOptionsFromRun, finetuneRunConfig } from '@m3ae/tasks';
import { runFinetuneCluster } from './finetune-cluster.js';

const built = existsSync(resolve(import.meta.dirname, '../../dist/cli.js'));
const data = sharedDataForTests(resolve(import.meta.dirname, '../../..'), 'distributed fine-tuning tests');
if (!built) console.warn('distributed fine-tuning test skipped: needs the built CLI (worker processes)');

let dir = '';
let pretrain = '';

beforeAll(async () => {
  await chooseBackend({ backend: 'wasm' });
  dir = await mkdtemp(join(tmpdir(), 'm3ae-finetune-cluster-'));
  if (!data) return;
  ({ checkpoint: pretrain } = await tinyPretrainCheckpoint(dir, data, 2));
}, 120_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('fine-tuning run configuration', () => {
  it('puts the task in the run file and the optimisation in training, as for pre-training', () => {
    const c = finetuneRunConfig({ task: 'vqa-rad', data: '/d/vqa_rad', output: '/o', checkpoint: '/p', epochs: 3, microBatch: 4, clipNorm: 2 }, {});
    expect(c.task).toMatchObject({ name: 'vqa-rad', data: '/d/vqa_rad', checkpoint: '/p' });
    expect(c.training).toMatchObject({ epochs: 3, microBatch: 4, clipNorm: 2 });
    expect(c.training.globalBatch).toBeUndefined(); // the task's official batch
    expect(c.checkpoint.dir).toBe('/o');
    // The same options come back out of the run file (a worker's and the coordinator's plan).
    expect(finetuneOptionsFromRun(c)).toMatchObject({ task: 'vqa-rad', epochs: 3, microBatch: 4, clipNorm: 2, seed: 0 });
    expect(() => loadRunConfig({ base: { task: { name: 'slake', data: '/x', learningRate: 1e-3 } }, env: {} })).toThrow('task.learningRate was renamed training.learningRate');
    // Pre-training keeps every training field.
    expect(loadRunConfig({ base: { training: { steps: 10 } }, env: {} }).training.steps).toBe(10);
  });
});

describe.skipIf(!data || !built)('m3ae finetune --workers (coordinator + worker processes, tiny, real VQA-RAD)', () => {
  const base = (output: string): FinetuneOptions => ({
    ...tinyVqaRadOptions(data ?? '', pretrain, output),
    // 22 examples in steps of 6: the epoch's last step has 4 (jobs of 3 and 1).
    trainLimit: 22,
    backend: 'wasm',
  });

  it('trains the same parameters as one process, validates each epoch on the coordinator and selects the same model', async () => {
    const single = await runFinetune(base(join(dir, 'single')));
    const singleLatest = await latestCheckpointInfo(join(dir, 'single'));
    const steps: number[] = [];
    const tokens: (number | undefined)[] = [];
    const cluster = await runFinetuneCluster({
      ...base(join(dir, 'cluster')),
      workers: 2,
      redisUrl: process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379',
      onStep: (r) => {
        steps.push(r.samples);
        tokens.push(r.tokens);
      },
    });
    expect(cluster.stopped).toBe(false);
    expect(cluster.rejected).toBe(0);
    expect(cluster.steps).toBe(4);
    expect(steps).toEqual([6, 6, 6, 4]);
    // Throughput in tokens: the questions' real tokens, counted by the workers (at most 16 per question in tiny).
    tokens.forEach((t, i) => {
      expect(t).toBeGreaterThan(2 * (steps[i] as number));
      expect(t).toBeLessThanOrEqual(16 * (steps[i] as number));
    });
    // The exact decomposition: the same summed gradient in the same order, the same AdamW — the same bits.
    expect(cluster.paramsSha256).toBe(singleLatest.paramsSha256);
    expect(cluster.history.map((h) => h.step)).toEqual([2, 4]);
    expect(cluster.history.map((h) => h.score)).toEqual(single.history.map((h) => h.score));
    expect(cluster.bestStep).toBe(single.bestStep);
    const latest = await latestCheckpointInfo(join(dir, 'cluster'));
    expect(JSON.parse(latest.metadata['task'] ?? '{}')).toMatchObject({ name: 'vqa-rad', head: { kind: 'vqa' } });

    // `m3ae eval` reads the selected model of either run the same way.
    const ev = async (out: string): Promise<unknown> => (await runEval({ task: 'vqa-rad', checkpoint: out, data: join(data ?? '', 'vqa_rad'), split: 'holdout', batchSize: 8, backend: 'wasm' })).metrics;
    expect(await ev(join(dir, 'cluster'))).toEqual(await ev(join(dir, 'single')));
  }, 600_000);

  it('a coordinator stopped mid-run resumes from its checkpoint to the same parameters, history and selection', async () => {
    const opts = { ...base(join(dir, 'resumed')), workers: 1, redisUrl: process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379' };
    let liveDuringRun = 0;
    const runOnce = async (config: RunConfig, resume: boolean, stopAfter?: number): Promise<{ sha: string; steps: number; stopped: boolean }> => {
      const setup = await createSetup(config);
      const computer = await TaskComputer.create(config);
      const worker = await TrainingWorker.start({ config, computer, workerId: 'w-inline' });
      let coordinator: Coordinator | undefined;
      try {
        coordinator = new Coordinator({
          config,
          setup,
          resume,
          events: {
            onStep: (r) => {
              liveDuringRun = Math.max(liveDuringRun, tf.memory().numTensors);
              if (r.step + 1 === stopAfter) coordinator?.stop();
            },
          },
        });
        const summary = await coordinator.run();
        return { sha: summary.paramsSha256, steps: summary.startStep + summary.steps, stopped: summary.stopped };
      } finally {
        await worker.close();
        await computer.dispose();
      }
    };
    const config = finetuneRunConfig({ ...opts, checkpointEvery: 1 });
    const tensorsBefore = tf.memory().numTensors;
    const first = await runOnce(config, false, 2);
    // The coordinator's model (validation), the worker's model and every step's tensors are released.
    expect(liveDuringRun).toBeGreaterThan(tensorsBefore); // (the same engine: the models' variables were counted)
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    expect(first).toMatchObject({ steps: 2, stopped: true });
    const afterStop = await latestCheckpointInfo(join(dir, 'resumed'));
    expect(afterStop.step).toBe(2);
    expect((JSON.parse(afterStop.metadata['selection'] ?? '{}') as { history: unknown[] }).history).toHaveLength(1);
    const second = await runOnce(config, true);
    expect(second).toMatchObject({ steps: 4, stopped: false });

    const straight = await runFinetuneCluster({ ...base(join(dir, 'straight')), workers: 1, redisUrl: opts.redisUrl });
    expect(second.sha).toBe(straight.paramsSha256);
    const latest = await latestCheckpointInfo(join(dir, 'resumed'));
    const selection = JSON.parse(latest.metadata['selection'] ?? '{}') as { best: { step: number; score: number }; history: { step: number; score: number }[] };
    expect(selection.history.map((h) => [h.step, h.score])).toEqual(straight.history.map((h) => [h.step, h.score]));
    expect(selection.best.step).toBe(straight.bestStep);
  }, 600_000);
});

