import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { ModelComputer, modelSetup } from '@m3ae/training';
import { loadRunConfig, PROTOCOL_VERSION, type MicroBatchJob } from '@m3ae/protocol';
import { ensurePhantomDataset } from '../src/commands/train.js';

// The worker's real compute path: shard dataset → buildPretrainBatch → computeGradients (tiny preset, wasm).
describe('ModelComputer (tiny preset, phantom shards)', () => {
  it('matches the coordinator’s counts, is deterministic, and leaks no tensors over many jobs', async () => {
    const work = mkdtempSync(join(tmpdir(), 'm3ae-model-compute-'));
    const data = await ensurePhantomDataset({ workDir: work, preset: 'tiny', count: 24, seed: 5 });
    const config = loadRunConfig({
      base: {
        runId: 'model-compute',
        seed: 5,
        model: { preset: 'tiny', overrides: { vocabSize: data.vocabSize, padTokenId: data.padTokenId } },
        data: { dir: data.dir, tokenizer: data.tokenizer },
        training: { globalBatch: 4, microBatch: 2 },
        compute: { backend: 'wasm' },
      },
      env: {},
    });
    const setup = await modelSetup(config);
    const computer = await ModelComputer.create(config);
    expect(computer.manifestHash).toBe(setup.manifest.hash);
    const params = setup.initialParams();
    const normalizers = await setup.counts({ step: 0, seed: 5, globalBatchSize: 4, indices: [0, 1, 2, 3], positions: [0, 1, 2, 3] });
    const job = (step: number, version: number, indices: number[], positions: number[]): MicroBatchJob => ({
      protocol: PROTOCOL_VERSION,
      runId: 'model-compute',
      incarnation: 'i',
      step,
      version,
      jobIndex: 0,
      jobCount: 2,
      copy: 0,
      seed: 5,
      globalBatchSize: 4,
      indices,
      positions,
      normalizers,
      manifestHash: setup.manifest.hash,
      datasetHash: setup.datasetHash,
      params: [{ key: 'm3ae:model-compute:params:v0', encoding: 'f32', elements: params.length, bytes: params.length * 4, chunkBytes: 4194304, chunks: 1, stores: 1, checksum: `crc32:0000000${version}` }],
      gradEncoding: 'f32',
    });
    const first = await computer.compute(job(0, 0, [0, 1], [0, 1]), params);
    const again = await computer.compute(job(0, 0, [0, 1], [0, 1]), params);
    expect(Buffer.from(again.grads.buffer)).toEqual(Buffer.from(first.grads.buffer));
    expect(first.counts).toEqual(await setup.counts({ step: 0, seed: 5, globalBatchSize: 4, indices: [0, 1], positions: [0, 1] }));
    expect(first.grads.some((g) => g !== 0)).toBe(true);
    // Real text tokens for the throughput figures: at least the [CLS]/[SEP] pair of each caption, at most full rows.
    expect(first.tokens).toBeGreaterThanOrEqual(2 * 2);
    expect(first.tokens).toBeLessThanOrEqual(2 * 16); // tiny: 16 token positions
    const baseline = tf.memory().numTensors;
    for (let i = 0; i < 12; i++) {
      const p = params.slice();
      p[i] = (p[i] as number) + 1e-3; // a new version every other job: parameters are reloaded
      await computer.compute(job(0, 1 + Math.floor(i / 2), [2, 3], [2, 3]), i % 2 ? params : p);
    }
    expect(tf.memory().numTensors).toBe(baseline);
    await computer.dispose();
    await setup.close?.();
  });
});
