import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prepareShards } from '@m3ae/data';
import { loadRunConfig } from '@m3ae/protocol';
import { CoordinatorMetrics, startTelemetryServer, type RunPageState } from '@m3ae/telemetry';
import { makeQualitativeFixture, type QualitativeFixture } from '@m3ae/qualitative/testing';
import { runCoordinator, startWorkers, stopWorkers, syntheticRun } from '../test/training-harness.js';
import { prepareRunPage } from './run-page.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'm3ae-run-page-wiring-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function state(url: string): Promise<RunPageState> {
  return (await (await fetch(`${url}/run/state.json`)).json()) as RunPageState;
}

describe('prepareRunPage wired to a real coordinator (real Redis, BullMQ, synthetic workers)', () => {
  it('shows the run step by step, its workers with their heartbeats, and its end', async () => {
    const config = syntheticRun({ training: { steps: 5 }, checkpoint: { every: 2 } });
    const metrics = new CoordinatorMetrics({ run: config.runId });
    const page = await prepareRunPage(config, { heartbeatMs: 100, status: () => metrics.status() });
    expect(page.grids).toBeUndefined(); // synthetic compute: no model to reconstruct with
    const server = await startTelemetryServer({ port: 0, host: '127.0.0.1', metrics, status: () => metrics.status(), routes: page.handler });
    const workers = await startWorkers(config, 2);
    try {
      const before = await state(server.url);
      expect(before.state.phase).toBe('waiting');
      expect(before.run).toMatchObject({ runId: config.runId, totalSteps: 5, globalBatch: 8, jobsPerStep: 4 });
      const seen: number[] = [];
      const { summary } = await runCoordinator(config, {
        ...page.events,
        onStep(r) {
          page.events.onStep(r);
          seen.push(page.history.completedSteps);
        },
      });
      page.ended(summary);
      expect(seen).toEqual([1, 2, 3, 4, 5]);
      // Heartbeats are read every 100 ms; workers beat once a second (and at start). Poll (bounded) rather than
      // sleep a fixed time: on a loaded machine the first read can come late.
      let s = await state(server.url);
      for (let i = 0; i < 100 && !s.workers.every((w) => w.lastHeartbeatAt !== null); i++) {
        await new Promise((r) => setTimeout(r, 100));
        s = await state(server.url);
      }
      expect(s.state.phase).toBe('finished');
      expect(s.progress).toMatchObject({ completedSteps: 5, totalSteps: 5, etaSeconds: 0 });
      expect(s.series.points.map((p) => p.step)).toEqual([1, 2, 3, 4, 5]);
      for (const p of s.series.points) expect(Number.isFinite(p.loss.total)).toBe(true);
      expect(s.breakdown.coordinator).toHaveProperty('idleMs');
      expect(s.breakdown.worker).toHaveProperty('computeMs');
      expect(s.workers.map((w) => w.id)).toEqual(['w0', 'w1']);
      for (const w of s.workers) {
        expect(w.lastHeartbeatAt).not.toBeNull();
        expect(w.backend).toBe('synthetic');
        expect(w.alive).toBe(true);
      }
      expect(s.workers.reduce((a, w) => a + w.steps, 0)).toBeGreaterThanOrEqual(5);
      expect(s.checkpoint?.step).toBe(5);
      expect(s.run.config).toMatchObject({ runId: config.runId, training: { steps: 5 } });
    } finally {
      await stopWorkers(workers);
      await page.close();
      await server.close();
    }
  });

  it('shows a failed run', async () => {
    const config = syntheticRun();
    const page = await prepareRunPage(config, { heartbeatMs: 1000 });
    page.ended({ error: new Error('another coordinator took over') });
    expect(page.history.snapshot().state).toMatchObject({ phase: 'failed', message: 'another coordinator took over' });
    page.ended({ stopped: true });
    expect(page.history.currentPhase).toBe('stopped');
    await page.close();
  });
});

describe('prepareRunPage for a model run: a reconstruction grid at every checkpoint', () => {
  let fx: QualitativeFixture;
  beforeAll(async () => {
    fx = await makeQualitativeFixture(join(work, 'fixture'));
    await prepareShards({ source: 'manifest', input: join(fx.dir, 'corpus', 'manifest.jsonl'), output: join(work, 'shards'), imageSize: 32, tokenizer: fx.tokenizer, samplesPerShard: 4 });
  });

  it('renders the validation images with the checkpoint the coordinator just wrote, keeps it next to the checkpoints, and serves it', async () => {
    const config = loadRunConfig({
      env: {},
      base: {
        runId: 'grid-run',
        model: { preset: 'tiny', overrides: { maxTextLength: 32 } },
        data: { dir: join(work, 'shards'), tokenizer: fx.tokenizerPath },
        checkpoint: { dir: fx.checkpointDir },
        compute: { backend: 'wasm' },
      },
    });
    const page = await prepareRunPage(config, { heartbeatMs: 1000, gridImages: 3, resume: true });
    try {
      expect(page.grids).toBeDefined();
      expect(page.history.completedSteps).toBe(12); // resumed at the fixture checkpoint's step
      const server = await startTelemetryServer({ port: 0, host: '127.0.0.1', metrics: new CoordinatorMetrics({ run: 'grid-run' }), routes: page.handler });
      try {
        expect((await state(server.url)).image.available).toBe(false);
        page.events.onCheckpoint({ step: 12, path: join(fx.checkpointDir, 'ckpt-12.safetensors'), durationMs: 3 });
        await page.idle();
        expect(existsSync(join(fx.checkpointDir, 'recon-12.png'))).toBe(true);
        const s = await state(server.url);
        expect(s.image).toEqual({ available: true, version: 1, step: 12 });
        expect(s.checkpoint).toMatchObject({ step: 12, file: 'ckpt-12.safetensors' });
        const png = Buffer.from(await (await fetch(`${server.url}/run/grid.png`)).arrayBuffer());
        const meta = await sharp(png).metadata();
        // Three rows (validation images) of three 128-px cells.
        expect([meta.width, meta.height]).toEqual([4 + 3 * 132, 4 + 3 * 132]);
        // A bad checkpoint is logged, never thrown at the coordinator.
        page.events.onCheckpoint({ step: 13, path: join(work, 'missing.safetensors'), durationMs: 1 });
        await page.idle();
        expect((await state(server.url)).image.step).toBe(12);
      } finally {
        await server.close();
      }
    } finally {
      await page.close();
    }
  });
});
