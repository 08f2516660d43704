import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { buildPretrainBatch, EpochSampler, openShardDataset, prepareShards, validationSamples } from '@m3ae/data';
import {
  AdamW,
  batchCounts,
  chooseBackend,
  computeGradients,
  createModel,
  flattenParams,
  numPatches,
  setParamsFromFlat,
} from '@m3ae/model';
import { loadRunConfig, redactConfig } from '@m3ae/protocol';
import { ValidationGridRenderer } from '@m3ae/qualitative';
import { makeQualitativeFixture } from '@m3ae/qualitative/testing';
import { heldOutEvaluation, ITM_CHANCE } from '@m3ae/tasks';
import { CoordinatorMetrics, createRunPageHandler, RunHistory, startTelemetryServer } from '@m3ae/telemetry';

/** Where the run page of a run is, and how to end that run. */
export interface RunPageTarget {
  /** The page: `http://127.0.0.1:PORT/`. */
  url: string;
  kind: 'in-process' | 'local-train';
  close(): Promise<void>;
  /** Only for the in-process run: drive it through its states. */
  control?: InProcessControl;
}

export interface InProcessControl {
  history: RunHistory;
  /** Steps the run trains for. */
  steps: number;
  /** Starts stepping (the page shows "waiting for workers" until then). */
  start(): void;
  /** Resolves when the run has done all its steps. */
  done: Promise<void>;
}

/**
 * A real (small) training run in this process, recorded into a real `RunHistory` and served by the real
 * telemetry server with the run page mounted — the coordinator's wiring in miniature: the phantom corpus
 * prepared into shards, batches from `buildPretrainBatch`, `computeGradients` + AdamW on the `tiny` model,
 * a reconstruction grid of fixed validation images every few steps, a worker heartbeat per step.
 */
export async function startInProcessRun(workDir: string, options: { steps?: number; gridEvery?: number; stepDelayMs?: number } = {}): Promise<RunPageTarget> {
  const steps = options.steps ?? 10;
  const gridEvery = options.gridEvery ?? 3;
  const backend = await chooseBackend({ backend: 'wasm' });
  const fx = await makeQualitativeFixture(workDir, { count: 12 });
  const shards = join(workDir, 'shards');
  await prepareShards({ source: 'manifest', input: join(fx.dir, 'corpus', 'manifest.jsonl'), output: shards, imageSize: fx.config.imageSize, tokenizer: fx.tokenizer, samplesPerShard: 6 });
  const dataset = await openShardDataset(shards);
  const config = fx.config;
  const runConfig = loadRunConfig({
    env: {},
    base: { runId: 'browser-page', redis: { url: 'redis://:hunter2@redis.internal:6379', password: 'hunter2' }, training: { steps, globalBatch: 4, microBatch: 4 }, data: { dir: shards } },
  });
  const history = new RunHistory();
  history.setRun({ runId: runConfig.runId, totalSteps: steps, globalBatch: 4, jobsPerStep: 1, config: redactConfig(runConfig) });
  const metrics = new CoordinatorMetrics({ run: runConfig.runId, backend: backend.name });
  metrics.setRunInfo({ totalSteps: steps, jobsPerStep: 1, globalBatchSize: 4 });
  const renderer = new ValidationGridRenderer({ config, samples: await validationSamples({ dataset, tokenizer: fx.tokenizer, imageSize: config.imageSize, maxTextLength: config.maxTextLength, count: 3 }), dir: join(workDir, 'checkpoints') });
  const server = await startTelemetryServer({
    port: 0,
    host: '127.0.0.1',
    metrics,
    status: () => metrics.status(),
    routes: createRunPageHandler({ history, status: () => metrics.status(), latestGrid: () => renderer.latest(), pollMs: 250 }),
  });

  const model = createModel(config, { seed: 0 });
  const params = await flattenParams(model);
  const optimizer = new AdamW(model.manifest, { learningRate: 1e-3, totalSteps: steps, warmupFraction: 0 });
  const sampler = new EpochSampler({ size: dataset.size, seed: 0, globalBatchSize: 4 });
  const worker = `in-process-${process.pid}`;
  let stopped = false;
  let started = false;
  let closing: Promise<void> | undefined;
  let finish: () => void = () => undefined;
  let failRun: (e: unknown) => void = () => undefined;
  const done = new Promise<void>((res, rej) => {
    finish = res;
    failRun = rej;
  });
  done.catch(() => undefined);

  const loop = async (): Promise<void> => {
    for (let step = 0; step < steps && !stopped; step++) {
      const t0 = performance.now();
      const b = sampler.batchAt(step);
      const batch = await buildPretrainBatch({
        dataset,
        tokenizer: fx.tokenizer,
        indices: b.indices,
        positions: b.positions,
        globalBatchSize: 4,
        step,
        seed: 0,
        imageSize: config.imageSize,
        maxTextLength: config.maxTextLength,
        mlmProbability: config.mlmMaskRatio,
        mimMaskRatio: config.mimMaskRatio,
        numPatches: numPatches(config),
      });
      const t1 = performance.now();
      const n = batchCounts(config, batch);
      const r = await computeGradients(model, batch, { normalizers: n, training: true });
      const t2 = performance.now();
      const info = optimizer.update(params, r.grads);
      setParamsFromFlat(model, params);
      const t3 = performance.now();
      // Mean losses as the coordinator reports them (a count of 0 would give NaN: a gap in the curve).
      const losses = { mlm: r.sums.mlm / n.mlm, mim: r.sums.mim / n.mim, itm: r.sums.itm / n.itm };
      let tokens = 0;
      for (const m of batch.attentionMask) tokens += m;
      history.recordHeartbeats([{ id: worker, at: Date.now(), backend: backend.name, pid: process.pid }]);
      history.recordStep({
        step,
        losses: { total: losses.mlm + losses.mim + losses.itm, ...losses },
        accuracy: { mlm: r.correct.mlm / Math.max(1, n.mlm), itm: r.correct.itm / Math.max(1, n.itm) },
        learningRate: info.learningRate,
        gradientNorm: info.gradNorm,
        samples: 4,
        tokens,
        durationMs: t3 - t0,
        phases: { enqueueMs: 0, idleMs: t2 - t1, reduceMs: 0, optimizerMs: t3 - t2, publishMs: 0, checkpointMs: 0 },
        worker: { fetchMs: t1 - t0, computeMs: t2 - t1, encodeMs: 0, uploadMs: 0, totalMs: t2 - t0 },
        jobs: { count: 1, enqueued: 1 },
        workers: [worker],
      });
      if (step === 0 || (step + 1) % gridEvery === 0) history.recordGrid((await renderer.render(step + 1, params)).step);
      // A held-out evaluation as a pre-training run's `evaluation.every` makes one (here on the training shards, for the page only).
      if ((step + 1) % gridEvery === 0) {
        const e = await heldOutEvaluation(model, { dataset, tokenizer: fx.tokenizer, seed: 0, samples: 8 });
        history.recordEvaluation({ ...e, step: step + 1, baseline: { unigramEntropy: 4, unigramHeldOut: 5, itmChance: ITM_CHANCE } });
      }
      await new Promise((res) => setTimeout(res, options.stepDelayMs ?? 150));
    }
    if (!stopped) history.finish();
  };

  return {
    url: `${server.url}/`,
    kind: 'in-process',
    control: {
      history,
      steps,
      start() {
        if (started) return;
        started = true;
        loop().then(finish, (e: unknown) => {
          history.fail(e);
          failRun(e);
        });
      },
      done,
    },
    close() {
      closing ??= (async () => {
        stopped = true;
        if (started) await done.catch(() => undefined);
        await server.close();
        renderer.dispose();
        model.dispose();
        await dataset.close();
      })();
      return closing;
    },
  };
}

/**
 * A live `m3ae train --local` whose coordinator serves the run page on `--metrics-port` (once the page is
 * wired into the coordinator). The run trains the `tiny` preset on a phantom corpus.
 */
export async function startLocalTrainRun(workDir: string, options: { port?: number; steps?: number; timeoutMs?: number } = {}): Promise<RunPageTarget> {
  const port = options.port ?? (await freePort());
  const bin = resolve(import.meta.dirname, '../bin/m3ae.js');
  const child = spawn(process.execPath, [bin, 'train', '--local', '--workers', '1', '--steps', String(options.steps ?? 40), '--work-dir', workDir, '--metrics-port', String(port), '--json'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => void (stderr += d.toString()));
  const url = `http://127.0.0.1:${port}/`;
  const deadline = Date.now() + (options.timeoutMs ?? 180_000);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`m3ae train --local exited with code ${child.exitCode} before serving ${url}:\n${stderr.slice(-2000)}`);
    const ok = await fetch(url).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill('SIGTERM');
      throw new Error(`no run page at ${url} within ${options.timeoutMs ?? 180_000} ms:\n${stderr.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    url,
    kind: 'local-train',
    async close() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
    },
  };
}

async function freePort(): Promise<number> {
  return await new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => (a && typeof a === 'object' ? res(a.port) : rej(new Error('no free port'))));
    });
  });
}
