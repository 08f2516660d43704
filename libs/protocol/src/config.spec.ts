import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { blobEndpoints, jobsPerStep, loadRunConfig, pretrainTraining, queueEndpoint, redactConfig } from './config.js';
import { ConfigError } from './errors.js';

const dir = mkdtempSync(join(tmpdir(), 'm3ae-config-'));
function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}
function errorOf(f: () => unknown): ConfigError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('run configuration', () => {
  it('refuses the fields of earlier versions, naming what replaced them', () => {
    const e = errorOf(() => loadRunConfig({ base: { task: { name: 'vqa-rad', data: '/d', batchSize: 64, clipNorm: 1 } }, env: { M3AE_LR: '1e-3' } }));
    expect(e.message).toContain('task.batchSize was renamed training.globalBatch');
    expect(e.message).toContain('task.clipNorm was renamed training.clipNorm');
    expect(e.message).toContain('M3AE_LR was renamed M3AE_LEARNING_RATE');
  });

  it('one training section for both kinds: epochs only for fine-tuning, the model only for pre-training', () => {
    expect(errorOf(() => loadRunConfig({ base: { training: { epochs: 3 } }, env: {} })).message).toContain('training.epochs = 3: applies to fine-tuning only');
    const task = loadRunConfig({ base: { task: { name: 'slake', data: '/x' }, training: { epochs: 3, learningRate: 1e-3, clipNorm: 0 } }, env: {} });
    expect(task.training).toMatchObject({ epochs: 3, learningRate: 1e-3, clipNorm: 0 });
    expect(task.training.globalBatch).toBeUndefined(); // the task's official batch, resolved by @m3ae/tasks
    expect(() => pretrainTraining(task)).toThrow(/fine-tunes slake/);
    expect(errorOf(() => loadRunConfig({ base: { task: { name: 'slake', data: '/x' }, model: { preset: 'small' } }, env: {} })).message).toContain('model.preset = "small": applies to pre-training only');
  });

  it('evaluation: every / data / samples from the file, M3AE_EVAL_* and flags; data required when on; pre-training only', () => {
    expect(loadRunConfig({ env: {} }).evaluation).toEqual({ every: 0, samples: 256 });
    const c = loadRunConfig({ base: { evaluation: { every: 50 } }, env: { M3AE_EVAL_DATA: '/held-out', M3AE_EVAL_SAMPLES: '64' }, overrides: { 'evaluation.every': { value: 25, source: '--eval-every' } } });
    expect(c.evaluation).toEqual({ every: 25, data: '/held-out', samples: 64 });
    expect(errorOf(() => loadRunConfig({ env: { M3AE_EVAL_EVERY: '10' } })).message).toContain('evaluation.data');
    expect(errorOf(() => loadRunConfig({ env: { M3AE_EVAL_EVERY: '-1' } })).message).toContain('evaluation.every');
    const misplaced = errorOf(() => loadRunConfig({ base: { task: { name: 'slake', data: '/x' }, evaluation: { every: 5, data: '/h' } }, env: {} }));
    expect(misplaced.message).toContain('evaluation.every = 5: applies to pre-training only');
  });

  it('fills every default from nothing', () => {
    const c = loadRunConfig({ env: {} });
    expect(c.runId).toBe('m3ae');
    expect(c.training).toMatchObject({ gradEncoding: 'f32', schedule: 'linear', beta2: 0.98 });
    expect(pretrainTraining(c)).toMatchObject({ steps: 100, globalBatch: 8, microBatch: 2, learningRate: 1e-4, clipNorm: 1, lrMultiplierHead: 5, warmupFraction: 0.1 });
    expect(c.redis.url).toBe('redis://127.0.0.1:6379');
    expect(jobsPerStep(pretrainTraining(c).globalBatch, pretrainTraining(c))).toBe(4);
    expect(jobsPerStep(22, { microBatch: 6, microBatchesPerJob: 1 })).toBe(4);
    expect(jobsPerStep(22, { microBatch: 3, microBatchesPerJob: 2 })).toBe(4);
  });

  it('reads YAML and JSON files; environment overrides the file; flags override both', () => {
    const yaml = file('run.yaml', 'runId: exp1\ntraining:\n  steps: 50\n  globalBatch: 16\n  microBatch: 4\nredis:\n  url: redis://10.0.0.5:6379\n');
    const c = loadRunConfig({ file: yaml, env: { M3AE_STEPS: '7', M3AE_BLOB_REDIS_URLS: 'redis://a:1, redis://b:2', M3AE_BACKEND: '' } });
    expect(c.runId).toBe('exp1');
    expect(c.training.steps).toBe(7);
    expect(c.training.globalBatch).toBe(16);
    expect(c.compute.backend).toBe('auto'); // empty environment values are ignored
    expect(blobEndpoints(c).map((e) => e.url)).toEqual(['redis://a:1', 'redis://b:2']);
    const json = file('run.json', JSON.stringify({ seed: 3, model: { preset: 'small' } }));
    const d = loadRunConfig({ file: json, env: { M3AE_SEED: '4' }, overrides: { seed: { value: 5, source: '--seed' } } });
    expect(d.seed).toBe(5);
    expect(d.model.preset).toBe('small');
    expect(blobEndpoints(d).map((e) => e.url)).toEqual([d.redis.url]);
  });

  it('names field, value, source and expectation for every bad field', () => {
    const e = errorOf(() =>
      loadRunConfig({
        base: { training: { steps: 0, bogus: 1 }, checkpoint: { keep: 'many' } },
        env: { M3AE_GLOBAL_BATCH: 'lots', M3AE_GRAD_ENCODING: 'fp8' },
      }),
    );
    expect(e.message).toContain('training.steps = 0: Too small: expected number to be >0');
    expect(e.message).toContain('training.bogus: unknown field');
    expect(e.message).toContain('training.globalBatch = "lots" (from M3AE_GLOBAL_BATCH): expected number, received string');
    expect(e.message).toContain('training.gradEncoding = "fp8" (from M3AE_GRAD_ENCODING): expected one of "f32"|"bf16"');
    expect(e.message).toContain('checkpoint.keep = "many": expected number, received string');
    expect(e.issues).toHaveLength(5);
  });

  it('training.microBatchesPerJob: default 1, from the file or M3AE_MICRO_BATCHES_PER_JOB, with any gradient encoding', () => {
    expect(loadRunConfig({ env: {} }).training.microBatchesPerJob).toBe(1);
    const c = loadRunConfig({ base: { training: { gradEncoding: 'fx53' } }, env: { M3AE_MICRO_BATCHES_PER_JOB: '4' } });
    expect(c.training.microBatchesPerJob).toBe(4);
    expect(jobsPerStep(16, pretrainTraining(c))).toBe(2);
    expect(loadRunConfig({ base: { training: { microBatchesPerJob: 4 } }, env: {} }).training).toMatchObject({ microBatchesPerJob: 4, gradEncoding: 'f32' });
    expect(loadRunConfig({ base: { training: { microBatchesPerJob: 2, gradEncoding: 'bf16' } }, env: {} }).training.microBatchesPerJob).toBe(2);
    expect(errorOf(() => loadRunConfig({ base: { training: { microBatchesPerJob: 0, gradEncoding: 'fx53' } }, env: {} })).message).toContain('training.microBatchesPerJob = 0');
  });

  it('checks that the global batch splits into micro-batches', () => {
    const e = errorOf(() => loadRunConfig({ base: { training: { globalBatch: 10, microBatch: 4 } }, env: {} }));
    expect(e.message).toContain('training.globalBatch = 10: expected globalBatch to be a multiple of microBatch');
  });

  it('never shows a password with whitespace, @, /, # or unicode in a config error', () => {
    for (const password of ['hunter 22', 'hunter@qq/zz', 'hunter#qq?zz', 'hünter qq🔑']) {
      const e = errorOf(() => loadRunConfig({ env: { M3AE_REDIS_URL: `redis://admin:${password}@redis:6379` }, base: { training: { steps: 'x' } } }));
      if (/\s/.test(password)) expect(e.message).toContain('redis.url = "redis://admin:***@redis:6379" (from M3AE_REDIS_URL)');
      for (const piece of password.split(/[\s@/#?]+/)) expect(e.message).not.toContain(piece);
    }
  });

  it('never shows a password: not in errors, not in the redacted config', () => {
    const e = errorOf(() => loadRunConfig({ env: { M3AE_REDIS_URL: 'http://admin:hunter2@redis:6379', M3AE_REDIS_PASSWORD: '' }, base: { redis: { password: 42 } } }));
    expect(e.message).not.toContain('hunter2');
    expect(e.message).toContain('redis.url = "http://admin:***@redis:6379" (from M3AE_REDIS_URL)');
    expect(e.message).toContain('redis.password = "***"');
    const c = loadRunConfig({ env: { M3AE_REDIS_URL: 'rediss://trainer:hunter2@redis:6380', M3AE_REDIS_PASSWORD: 'hunter3', M3AE_REDIS_CA_FILE: '/etc/ca.pem' } });
    expect(JSON.stringify(redactConfig(c))).not.toMatch(/hunter/);
    expect(queueEndpoint(c)).toMatchObject({ url: 'rediss://trainer:hunter2@redis:6380', password: 'hunter3', caFile: '/etc/ca.pem' });
  });

  it('says which file cannot be read or parsed', () => {
    expect(() => loadRunConfig({ file: join(dir, 'nope.yaml'), env: {} })).toThrow(/config file ".*nope.yaml" cannot be read \(ENOENT\)/);
    const broken = file('broken.json', '{"runId": ');
    expect(() => loadRunConfig({ file: broken, env: {} })).toThrow(/config file ".*broken.json" is not valid JSON/);
    const list = file('list.yaml', '- a\n- b\n');
    expect(() => loadRunConfig({ file: list, env: {} })).toThrow('holds a list; expected a mapping of fields');
  });
});
