import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { Coordinator, type RejectReason } from '@m3ae/coordinator';
import { SyntheticComputer, syntheticSetup, type GradientComputer } from '@m3ae/training';
import {
  BlobStore,
  encodeTensor,
  LocalRedis,
  pretrainTotals,
  PROTOCOL_VERSION,
  RunKeys,
  syntheticCounts,
  syntheticGradients,
  syntheticManifest,
  shardRanges,
  type BlobRef,
  type Contribution,
  type MicroBatchJob,
  type StepReport,
  type TensorEncoding,
} from '@m3ae/protocol';
import { ManifestMismatchError, TrainingWorker } from '@m3ae/worker';
import { FaultyComputer, runCoordinator, runKeys, serialReference, startWorkers, stopWorkers, syntheticRun } from './training-harness.js';

// In-process coordinator and workers (real Redis, real BullMQ, the synthetic workload): orchestration only.
describe('distributed training orchestration (synthetic compute)', () => {
  it('gives bitwise-identical parameters with 1, 2 and 3 workers, equal to the serial computation, and leaves nothing in Redis', async () => {
    const shas: string[] = [];
    for (const n of [1, 2, 3]) {
      const config = syntheticRun();
      const workers = await startWorkers(config, n);
      const seenKeys: string[] = [];
      const { summary } = await runCoordinator(config, {
        onStep: () => undefined,
        onEnqueue: (e) => {
          if (e.step === 1 && e.jobIndex === 0) void runKeys(config.runId).then((k) => seenKeys.push(...k));
        },
      });
      await stopWorkers(workers);
      expect(summary.steps).toBe(4);
      expect(summary.rejected).toBe(0);
      shas.push(summary.paramsSha256);
      // Everything the run wrote was under its namespace (queue included), and none of it is left.
      expect(seenKeys.length).toBeGreaterThan(0);
      for (const k of seenKeys) expect(k.startsWith(`m3ae:${config.runId}:`)).toBe(true);
      expect(seenKeys.some((k) => k.startsWith(`m3ae:${config.runId}:bull:microbatches:`))).toBe(true);
      expect(await runKeys(config.runId)).toEqual([]);
      if (n === 1) expect(summary.paramsSha256).toBe(serialReference(config));
      // Every worker took part when there were several.
      if (n > 1) expect(workers.filter((w) => w.stats.completed > 0).length).toBeGreaterThan(1);
    }
    expect(new Set(shas).size).toBe(1);
  });

  it('with 3 reducer processes: the serial parameters, and no gradient byte through the coordinator', async () => {
    const config = syntheticRun({ training: { shards: 3, steps: 3 }, compute: { synthetic: { paramCount: 200_000 } }, coordinator: { reducers: 'processes' } });
    const workers = await startWorkers(config, 2);
    const reports: StepReport[] = [];
    const { summary } = await runCoordinator(config, { onStep: (r) => reports.push(r) });
    await stopWorkers(workers);
    expect(summary.paramsSha256).toBe(serialReference(config));
    for (const r of reports) {
      const by = new Map(r.processes.map((p) => [p.id, p]));
      expect(by.get('coordinator')).toMatchObject({ readBytes: 0, writtenBytes: 0 });
      // Each reducer read its range of the 4 gradients and wrote its range of the parameters.
      const reducers = r.processes.filter((p) => p.role === 'reducer');
      expect(reducers).toHaveLength(3);
      expect(reducers.reduce((a, p) => a + p.writtenBytes, 0)).toBe(200_000 * 4);
      expect(reducers.reduce((a, p) => a + p.readBytes, 0)).toBe(4 * 200_000 * 4);
    }
    expect(await runKeys(config.runId)).toEqual([]);
  });

  it('with bf16 gradients: still identical across worker counts, and different from f32', async () => {
    const a = syntheticRun({ training: { gradEncoding: 'bf16', steps: 3 } });
    const b = { ...syntheticRun({ training: { gradEncoding: 'bf16', steps: 3 } }) };
    const wa = await startWorkers(a, 1);
    const ra = await runCoordinator(a);
    await stopWorkers(wa);
    const wb = await startWorkers(b, 3);
    const rb = await runCoordinator(b);
    await stopWorkers(wb);
    expect(ra.summary.paramsSha256).toBe(rb.summary.paramsSha256);
    expect(ra.summary.paramsSha256).toBe(serialReference(a));
    expect(ra.summary.paramsSha256).not.toBe(serialReference(a, 3, 'f32'));
  });

  it('fetches each parameter version once per worker', async () => {
    const config = syntheticRun({ training: { steps: 3 } });
    const [w] = await startWorkers(config, 1);
    await runCoordinator(config);
    await stopWorkers([w as TrainingWorker]);
    expect(w?.stats.completed).toBe(12);
    expect(w?.stats.paramFetches).toBe(3);
  });

  it('rejects duplicate, stale, foreign, truncated, corrupted, non-finite, miscounted and mis-encoded contributions, and stays exact', async () => {
    const config = syntheticRun({ training: { steps: 3 }, compute: { synthetic: { workMsPerSample: 150 } } });
    const keys = new RunKeys(config.runId);
    const redis = new Redis(config.redis.url);
    const blobs = new BlobStore([redis], { chunkBytes: config.redis.chunkBytes });
    const rejected: RejectReason[] = [];
    let duplicates = 0;
    let injected: Promise<void> | undefined;
    // Forged contributions for step 1, pushed as soon as its jobs are enqueued (before any worker is done).
    const inject = async (job: MicroBatchJob): Promise<void> => {
      const params = coordinator.parameters.slice();
      const good = syntheticGradients(job.indices, pretrainTotals(job.normalizers), params);
      const counts = syntheticCounts(job.indices);
      const push = async (over: Partial<Contribution>, grads: Float32Array = good.grads, corrupt?: (key: string) => Promise<void>, encoding: TensorEncoding = 'f32'): Promise<void> => {
        const refs = await blobs.putShards(keys.grad(job.step, job.jobIndex, 'forger', randomBytes(4).toString('hex')), encodeTensor(grads, encoding), encoding, shardRanges(grads.length, 1));
        if (corrupt) await corrupt((refs[0] as BlobRef).key);
        const c: Contribution = {
          protocol: PROTOCOL_VERSION,
          runId: config.runId,
          incarnation: job.incarnation,
          step: job.step,
          version: job.version,
          jobIndex: job.jobIndex,
          copy: 0,
          workerId: 'forger',
          manifestHash: job.manifestHash,
          grads: refs,
          sums: good.sums,
          counts,
          correct: good.correct,
          timings: { fetchMs: 0, computeMs: 1, encodeMs: 0, uploadMs: 0, totalMs: 1 },
          transfer: { readBytes: 0, writtenBytes: 0 },
          ...over,
        };
        await redis.rpush(keys.results, JSON.stringify(c));
      };
      const nan = good.grads.slice();
      nan[3] = Number.POSITIVE_INFINITY;
      await push({ step: job.step - 1 });
      await push({ version: job.version + 1 });
      await push({ incarnation: 'an-earlier-coordinator' });
      await push({ manifestHash: syntheticManifest(config.compute.synthetic.paramCount + 1).hash });
      await push({ counts: { ...counts, mlm: counts.mlm + 1 } });
      await push({}, nan);
      await push({}, good.grads, async (key) => void (await redis.set(`${key}:0`, 'short')));
      await push({}, good.grads, async (key) => {
        const c = (await redis.getBuffer(`${key}:1`)) as Buffer;
        c[5] = (c[5] as number) ^ 1;
        await redis.set(`${key}:1`, c);
      });
      await push({}, good.grads.subarray(1));
      await push({}, good.grads, undefined, 'fx53'); // not the run's encoding (f32)
      await redis.rpush(keys.results, '{"not": "a contribution"}');
      await push({}); // valid: counted
      await push({}); // the same micro-batch again: a duplicate
    };
    const workers = await startWorkers(config, 1);
    const coordinator: Coordinator = new Coordinator({
      config,
      setup: syntheticSetup(config),
      events: {
        onEnqueue: (e) => {
          if (e.step === 1 && e.jobIndex === 3 && e.kind === 'original') injected = inject(e.job);
        },
        onReject: (reason) => rejected.push(reason),
        onDuplicate: () => duplicates++,
      },
    });
    const summary = await coordinator.run();
    await injected;
    await stopWorkers(workers);
    const forged: RejectReason[] = ['checksum', 'counts', 'encoding', 'length', 'malformed', 'manifest', 'non-finite', 'stale-incarnation', 'stale-step', 'stale-version', 'truncated'];
    for (const reason of forged) expect(rejected.filter((r) => r === reason).length, reason).toBe(reason === 'stale-step' ? rejected.length - 10 : 1);
    // The forged valid copy won micro-batch 3 and its repeat was a duplicate. The worker's own result for it
    // was a duplicate too, or refused as stale, or never uploaded (the worker saw the step was done).
    const extraStale = rejected.filter((r) => r === 'stale-step').length - 1;
    expect(duplicates).toBeGreaterThanOrEqual(1);
    expect(duplicates + extraStale).toBeLessThanOrEqual(2);
    expect(summary.paramsSha256).toBe(serialReference(config));
    expect(await runKeys(config.runId)).toEqual([]);
    redis.disconnect();
  });

  it('recomputes a micro-batch whose only result was rejected', async () => {
    const config = syntheticRun({ training: { steps: 2 } });
    let retries = 0;
    const workers = await startWorkers(config, 1, {
      computer: () => new FaultyComputer(config, (j) => (j.step === 1 && j.jobIndex === 2 && j.copy === 0 ? { nan: true } : undefined)),
    });
    const { summary } = await runCoordinator(config, { onEnqueue: (e) => void (e.kind === 'retry' && retries++) });
    await stopWorkers(workers);
    expect(summary.rejected).toBe(1);
    expect(retries).toBe(1);
    expect(summary.paramsSha256).toBe(serialReference(config));
  });

  it('a micro-batch that every copy fails ends the run with the workers\' reason, not a bare "lost"', async () => {
    const config = syntheticRun({ training: { steps: 2 }, coordinator: { maxCopies: 2 } });
    const workers = await startWorkers(config, 1, {
      computer: () => new FaultyComputer(config, (j) => (j.step === 0 && j.jobIndex === 1 ? { error: 'device lost: out of memory' } : undefined)),
    });
    await expect(runCoordinator(config)).rejects.toThrow(/step 0: micro-batch 1 was lost 2 times \(a worker failed it: .*device lost: out of memory\)/);
    await stopWorkers(workers);
  });

  it('sends a backup copy for a straggler; the first valid result wins', async () => {
    const config = syntheticRun({ training: { steps: 3 }, coordinator: { backupMinMs: 300, backupFactor: 2 } });
    let backupsWon = 0;
    const workers = await startWorkers(config, 2, {
      // Whichever worker takes the original copy of step 1, micro-batch 1 stalls on it (a slow node).
      computer: () => new FaultyComputer(config, (j) => (j.step === 1 && j.jobIndex === 1 && j.copy === 0 ? { delayMs: 4000 } : undefined)),
    });
    const started = Date.now();
    const { summary } = await runCoordinator(config, { onBackupWon: () => backupsWon++ });
    const elapsed = Date.now() - started;
    await stopWorkers(workers);
    expect(summary.backups).toBeGreaterThanOrEqual(1);
    expect(backupsWon).toBe(1);
    expect(elapsed).toBeLessThan(4000);
    expect(summary.paramsSha256).toBe(serialReference(config));
    // The straggler finished after the run: it saw it was stale and uploaded nothing.
    expect(await runKeys(config.runId)).toEqual([]);
  });

  it('says that no worker is alive while a step waits, keeps waiting, and finishes exactly once workers come', async () => {
    const config = syntheticRun({ training: { steps: 2 }, coordinator: { noWorkerWarnMs: 300 } });
    const warnings: { step: number; waiting: number; seconds: number }[] = [];
    let workers: Awaited<ReturnType<typeof startWorkers>> = [];
    const run = runCoordinator(config, {
      onNoWorkers: (w) => {
        warnings.push(w);
        // Two warnings, then the workers arrive.
        if (warnings.length === 2) void startWorkers(config, 2).then((ws) => (workers = ws));
      },
    });
    const { summary } = await run;
    await stopWorkers(workers);
    // Two, or one more if the workers took longer than a warning period to say they are alive.
    expect(warnings.length).toBeGreaterThanOrEqual(2);
    expect(warnings.every((w) => w.step === 0 && w.waiting === 4)).toBe(true);
    expect(warnings[1]?.seconds).toBeGreaterThanOrEqual(warnings[0]?.seconds ?? 0);
    expect(summary.steps).toBe(2);
    expect(summary.paramsSha256).toBe(serialReference(config));
  });

  it('refuses a worker whose model manifest differs, at start and per job', async () => {
    const config = syntheticRun({ training: { steps: 2 } });
    const other = { ...config, compute: { ...config.compute, synthetic: { ...config.compute.synthetic, paramCount: config.compute.synthetic.paramCount + 8 } } };
    // Started before the coordinator published its manifest: it is refused on its first job, hands it back and stops.
    const early = await TrainingWorker.start({ config, computer: new SyntheticComputer(other.compute.synthetic), workerId: 'wrong-early' });
    const good = await startWorkers(config, 1);
    const run = runCoordinator(config);
    await expect(early.done).rejects.toBeInstanceOf(ManifestMismatchError);
    // Started after: refused at once.
    await new Promise((r) => setTimeout(r, 200));
    await expect(TrainingWorker.start({ config, computer: new SyntheticComputer(other.compute.synthetic), workerId: 'wrong-late' })).rejects.toThrow(/refuses run .*model manifest/);
    const { summary } = await run;
    await stopWorkers(good);
    expect(summary.rejected).toBe(0);
    expect(summary.paramsSha256).toBe(serialReference(config));
  });

  it('pins a run to the first worker\'s backend kind: a worker on another is refused with the reason', async () => {
    const config = syntheticRun({ training: { steps: 3 }, compute: { synthetic: { workMsPerSample: 60 } } });
    // The synthetic computer under another backend's name (same model, same numbers: only the kind differs).
    const onBackend = (backend: string): GradientComputer => {
      const inner = new SyntheticComputer(config.compute.synthetic);
      return { manifestHash: inner.manifestHash, paramCount: inner.paramCount, backend, compute: async (j, p) => await inner.compute(j, p), dispose: async () => await inner.dispose() };
    };
    // Started before the coordinator wrote its hash, the first worker records its kind with its first job.
    const good = await startWorkers(config, 1, { computer: () => onBackend('wasm') });
    const run = runCoordinator(config);
    const redis = new Redis(config.redis.url);
    const key = new RunKeys(config.runId).coordinator;
    for (let i = 0; i < 200 && (await redis.hget(key, 'backendKind')) === null; i++) await new Promise((r) => setTimeout(r, 25));
    expect(await redis.hget(key, 'backendKind')).toBe('wasm');
    redis.disconnect();
    await expect(TrainingWorker.start({ config, computer: onBackend('webgpu'), workerId: 'other-late' })).rejects.toThrow(
      /refuses run .*computes on the wasm backend but this worker runs webgpu; .*break exactness/,
    );
    const { summary } = await run;
    await stopWorkers(good);
    expect(summary.rejected).toBe(0);
    expect(summary.paramsSha256).toBe(serialReference(config));
    expect(await runKeys(config.runId)).toEqual([]);
  });

  it('hands the running job back on shutdown when it cannot finish in the grace period', async () => {
    const config = syntheticRun({ training: { steps: 1 }, worker: { shutdownGraceMs: 200 } });
    let slowStarted!: () => void;
    const started = new Promise<void>((r) => (slowStarted = r));
    const [slow] = await startWorkers(config, 1, {
      computer: () =>
        new FaultyComputer(config, () => {
          slowStarted();
          return { delayMs: 10_000 };
        }),
    });
    const run = runCoordinator(config);
    await started;
    const t = Date.now();
    await (slow as TrainingWorker).close();
    expect(Date.now() - t).toBeLessThan(2000);
    expect(slow?.stats.handedBack).toBe(1);
    const helpers = await startWorkers(config, 1);
    const { summary } = await run;
    await stopWorkers(helpers);
    expect(summary.paramsSha256).toBe(serialReference(config));
  });

  it('stops on request with a checkpoint, and a resumed coordinator ends bitwise-equal to an uninterrupted run', async () => {
    const config = syntheticRun({ training: { steps: 5 }, checkpoint: { every: 1 } });
    const workers = await startWorkers(config, 2);
    const coordinator: Coordinator = new Coordinator({
      config,
      setup: syntheticSetup(config),
      events: { onEnqueue: (e) => void (e.step === 2 && e.jobIndex === 0 && coordinator.stop()) },
    });
    const first = await coordinator.run();
    expect(first.stopped).toBe(true);
    expect(first.checkpoint).toMatch(/ckpt-2\.safetensors$/);
    const { summary } = await runCoordinator(config, {}, true);
    await stopWorkers(workers);
    expect(summary.startStep).toBe(2);
    expect(summary.paramsSha256).toBe(serialReference(config));
    expect(await runKeys(config.runId)).toEqual([]);
  });
});

describe('a Redis that restarts empty mid-run (own redis-server)', () => {
  let redis: LocalRedis | undefined;
  afterAll(async () => redis?.stop());

  it('coordinator and workers reconnect, the step is redone, and the result is exact', async () => {
    redis = await LocalRedis.start();
    const config = syntheticRun({ training: { steps: 4 }, compute: { synthetic: { workMsPerSample: 40 } } }, redis.url);
    const workers = await startWorkers(config, 2);
    let restarted: Promise<void> | undefined;
    const { summary } = await runCoordinator(config, {
      onEnqueue: (e) => {
        if (e.step === 2 && e.jobIndex === 3 && e.kind === 'original') restarted = new Promise((r) => setTimeout(r, 60)).then(async () => (redis as LocalRedis).restart(300));
      },
    });
    await restarted;
    await stopWorkers(workers);
    expect(summary.recoveries).toBeGreaterThanOrEqual(1);
    expect(summary.steps).toBe(4);
    expect(summary.paramsSha256).toBe(serialReference(config));
    expect(await runKeys(config.runId, redis.url)).toEqual([]);
  });
});
