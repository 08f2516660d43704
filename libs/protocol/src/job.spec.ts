import { describe, expect, it } from 'vitest';
import { PayloadError } from './errors.js';
import { paramsIdentity, parseContribution, parseMicroBatchJob, PROTOCOL_VERSION, type Contribution, type MicroBatchJob } from './job.js';
import { MAX_SHARDS } from './shards.js';

const params = { key: 'm3ae:r:params:v3', encoding: 'f32', elements: 10, bytes: 40, chunkBytes: 4194304, chunks: 1, stores: 1, checksum: 'crc32:0badf00d' } as const;
const hash = 'a'.repeat(64);
const job: MicroBatchJob = {
  protocol: PROTOCOL_VERSION,
  runId: 'r',
  incarnation: 'i1',
  step: 3,
  version: 3,
  jobIndex: 1,
  jobCount: 4,
  copy: 0,
  seed: 0,
  globalBatchSize: 8,
  indices: [17, 4],
  positions: [2, 3],
  normalizers: { mlm: 10, mim: 72, itm: 8 },
  manifestHash: hash,
  params: [{ ...params }],
  gradEncoding: 'bf16',
};

describe('micro-batch job payload', () => {
  it('accepts a well-formed job and survives a JSON round trip', () => {
    expect(parseMicroBatchJob(JSON.parse(JSON.stringify(job)))).toEqual(job);
  });

  it('refuses anything else with the field named', () => {
    expect(() => parseMicroBatchJob({ ...job, pixelValues: [1, 2, 3] })).toThrow('pixelValues: unknown field');
    expect(() => parseMicroBatchJob({ ...job, positions: [2] })).toThrow('positions = [2]: positions must have one entry per index');
    expect(() => parseMicroBatchJob({ ...job, positions: [2, 8] })).toThrow('every position must be below globalBatchSize');
    expect(() => parseMicroBatchJob({ ...job, jobIndex: 4 })).toThrow('jobIndex must be below jobCount');
    expect(() => parseMicroBatchJob({ ...job, step: -1 })).toThrow('step = -1: Too small');
    expect(() => parseMicroBatchJob({ ...job, protocol: 1 })).toThrow(`protocol = 1: expected ${PROTOCOL_VERSION}`);
    expect(() => parseMicroBatchJob({ ...job, manifestHash: 'xyz' })).toThrow('manifestHash = "xyz": expected 64 lowercase hex characters');
    expect(() => parseMicroBatchJob({ ...job, params: [{ ...params, bytes: 41 }] })).toThrow('params.0.bytes = ');
    expect(() => parseMicroBatchJob({ ...job, params: [params, { ...params, encoding: 'bf16', bytes: 20 }] })).toThrow('parameters travel as f32');
    // One blob per shard: at least one, at most MAX_SHARDS.
    expect(() => parseMicroBatchJob({ ...job, params: [] })).toThrow(/params = \[\]: .*>=1/);
    expect(() => parseMicroBatchJob({ ...job, params: Array.from({ length: MAX_SHARDS + 1 }, () => params) })).toThrow(/params = .*<=64/);
    expect(() => parseMicroBatchJob('nonsense')).toThrow(PayloadError);
    // A job of several micro-batches says how big each is, and must be summed exactly.
    expect(parseMicroBatchJob({ ...job, gradEncoding: 'fx53', microBatch: 1 })).toMatchObject({ microBatch: 1 });
    expect(parseMicroBatchJob({ ...job, microBatch: 1 })).toMatchObject({ microBatch: 1, gradEncoding: job.gradEncoding });
    expect(() => parseMicroBatchJob({ ...job, gradEncoding: 'fx53', microBatch: 0 })).toThrow('microBatch = 0');
  });

  it('validates contributions the same way', () => {
    const c: Contribution = {
      protocol: PROTOCOL_VERSION,
      runId: 'r',
      incarnation: 'i1',
      step: 3,
      version: 3,
      jobIndex: 1,
      copy: 0,
      workerId: 'w-1',
      manifestHash: hash,
      grads: [{ ...params, key: 'm3ae:r:grads:s3:j1:w-1:x:shard0' }],
      sums: { mlm: 1, mim: 2, itm: 3 },
      counts: { mlm: 2, mim: 18, itm: 2 },
      correct: { mlm: 1, itm: 1 },
      timings: { fetchMs: 1, computeMs: 2, encodeMs: 0, uploadMs: 1, totalMs: 4 },
      transfer: { readBytes: 40, writtenBytes: 40 },
    };
    expect(parseContribution(JSON.parse(JSON.stringify(c)))).toEqual(c);
    // A downstream task's contribution carries its one objective.
    const task: Contribution = { ...c, sums: { vqa: 12.5 }, counts: { vqa: 4 }, correct: { vqa: 1 } };
    expect(parseContribution(JSON.parse(JSON.stringify(task)))).toEqual(task);
    expect(() => parseContribution({ ...c, sums: { mlm: 1, mim: -2 } })).toThrow(/sums\.mim = -2: .*>=0/);
    expect(() => parseContribution({ ...c, counts: { mlm: 1, vqa2: 2 } })).toThrow(/counts/);
    expect(() => parseContribution({ ...c, protocol: 1 })).toThrow(`protocol = 1: expected ${PROTOCOL_VERSION}`);
    // fx53 gradients: 8 bytes a value.
    const g = c.grads[0] as Contribution['grads'][number];
    expect(parseContribution({ ...c, grads: [{ ...g, encoding: 'fx53', bytes: 80 }] }).grads[0]?.encoding).toBe('fx53');
    expect(() => parseContribution({ ...c, grads: [g, { ...g, encoding: 'fx53', bytes: 40 }] })).toThrow(/grads\.1\.bytes = 40: bytes must equal elements × bytes per element/);
    expect(() => parseContribution({ ...c, transfer: { readBytes: -1, writtenBytes: 0 } })).toThrow(/transfer\.readBytes = -1/);
  });

  it('identifies a parameter vector by its shards\' checksums', () => {
    expect(paramsIdentity([params])).toBe('crc32:0badf00d');
    expect(paramsIdentity([params, { ...params, checksum: 'crc32:00000001' }])).toBe('crc32:0badf00d+crc32:00000001');
  });
});
