import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { startPrivateRedis } from '../../test/helpers/redis.js';
import { CoordinatorMetrics } from '../coordinator-metrics.js';
import { startTelemetryServer, type TelemetryServer } from '../server.js';
import { readWorkerHeartbeats } from './heartbeats.js';
import { RUN_PAGE_JS } from './page.js';
import { RunHistory } from './run-history.js';
import { createRunPageHandler, type RunPageState } from './run-page-handler.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await (cleanups.pop() as () => Promise<void>)();
});

async function serve(options: Parameters<typeof startTelemetryServer>[0]): Promise<TelemetryServer> {
  const server = await startTelemetryServer(options);
  cleanups.push(() => server.close());
  return server;
}

/** Stand-in bytes: the handler serves whatever the renderer produced, byte for byte. */
function png(tag: number): Buffer {
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(64, tag)]);
}

function step(i: number): Parameters<RunHistory['recordStep']>[0] {
  return { step: i, losses: { total: 3 - i * 0.1, mlm: 2, mim: 0.9, itm: 0.7 }, learningRate: 1e-4, gradientNorm: 1, samples: 8, durationMs: 200, workers: ['w1'] };
}

describe('run page over real HTTP (mounted on the telemetry server)', () => {
  it('serves the page, its assets, the polled state (incremental) and the newest grid, next to /metrics and /status', async () => {
    const history = new RunHistory();
    history.setRun({ runId: 'page-run', totalSteps: 10, config: { redis: { url: 'redis://:hunter2@redis:6379' }, training: { steps: 10 } } });
    const metrics = new CoordinatorMetrics({ run: 'page-run' });
    let grid: Buffer | undefined;
    const page = createRunPageHandler({ history, status: () => ({ ...metrics.status(), redisUrl: 'redis://default:hunter2@r:6379' }), latestGrid: () => grid });
    const server = await serve({ port: 0, host: '127.0.0.1', metrics, status: () => metrics.status(), routes: page });

    const html = await fetch(`${server.url}/`);
    expect(html.status).toBe(200);
    expect(html.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(html.headers.get('content-security-policy')).toContain("script-src 'self'");
    const body = await html.text();
    expect(body).toContain('<svg id="loss-chart"');
    expect(body).toContain('src="run/page.js"');
    expect(body).not.toMatch(/https?:\/\//); // nothing from elsewhere: works offline
    for (const [path, type] of [['/run/page.js', 'text/javascript'], ['/run/page.css', 'text/css'], ['/run/icon.svg', 'image/svg+xml']] as const) {
      const r = await fetch(`${server.url}${path}`);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toContain(type);
      expect((await r.text()).length).toBeGreaterThan(300);
    }

    // Waiting: no step, no grid.
    let state = (await (await fetch(`${server.url}/run/state.json`)).json()) as RunPageState;
    expect(state.state.phase).toBe('waiting');
    expect(state.image).toEqual({ available: false, version: 0, step: null });
    expect((await fetch(`${server.url}/run/grid.png`)).status).toBe(404);

    for (let i = 0; i < 3; i++) history.recordStep(step(i));
    grid = png(1);
    history.recordGrid(3);
    state = (await (await fetch(`${server.url}/run/state.json?since=-1`)).json()) as RunPageState;
    expect(state.state.phase).toBe('training');
    expect(state.series.points.map((p) => p.step)).toEqual([1, 2, 3]);
    expect(state.image).toEqual({ available: true, version: 1, step: 3 });
    expect(state.status).toMatchObject({ run: 'page-run', redisUrl: 'redis://default:[REDACTED]@r:6379' });
    const raw = await (await fetch(`${server.url}/run/state.json`)).text();
    expect(raw).not.toContain('hunter2');

    history.recordStep(step(3));
    state = (await (await fetch(`${server.url}/run/state.json?since=${state.series.lastSeq}&generation=${state.series.generation}`)).json()) as RunPageState;
    expect(state.series.reset).toBe(false);
    expect(state.series.points.map((p) => p.step)).toEqual([4]);

    const img = await fetch(`${server.url}/run/grid.png?v=1`);
    expect(img.status).toBe(200);
    expect(img.headers.get('content-type')).toBe('image/png');
    expect(Buffer.from(await img.arrayBuffer()).equals(png(1))).toBe(true);
    // A new grid is a new version.
    grid = png(2);
    state = (await (await fetch(`${server.url}/run/state.json`)).json()) as RunPageState;
    expect(state.image.version).toBe(2);

    // The built-in endpoints still answer.
    expect((await fetch(`${server.url}/metrics`)).status).toBe(200);
    expect(((await (await fetch(`${server.url}/status`)).json()) as { run: string }).run).toBe('page-run');
    expect((await fetch(`${server.url}/nope`)).status).toBe(404);
    const head = await fetch(`${server.url}/`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it('refuses bad queries naming the field and the value', async () => {
    const page = createRunPageHandler({ history: new RunHistory() });
    const server = await serve({ port: 0, host: '127.0.0.1', metrics: new CoordinatorMetrics({ run: 'q' }), routes: page });
    const bad = await fetch(`${server.url}/run/state.json?since=abc`);
    expect(bad.status).toBe(400);
    expect(await bad.text()).toBe('query since="abc": expected an integer ≥ -1\n');
    const bad2 = await fetch(`${server.url}/run/state.json?since=3&generation=-7`);
    expect(bad2.status).toBe(400);
    expect(await bad2.text()).toContain('query generation="-7"');
    expect(() => createRunPageHandler({ history: new RunHistory(), pollMs: 5 })).toThrow(/pollMs is 5/);
  });

  it('shows a failed run with its (scrubbed) reason, and a status callback that throws does not break the page', async () => {
    const history = new RunHistory();
    history.recordStep(step(0));
    history.fail(new Error('redis://:topsecret@10.0.0.5:6379 refused the connection'));
    const page = createRunPageHandler({
      history,
      status: () => {
        throw new Error('metrics gone: password=topsecret while scraping');
      },
    });
    // Mounted on a bare node:http server too: the handler stands alone.
    const srv = createServer((req, res) => {
      void page(req, res).then((done) => {
        if (!done) res.writeHead(404).end();
      });
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => srv.close(() => r())));
    const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    const text = await (await fetch(`${url}/run/state.json`)).text();
    expect(text).not.toContain('topsecret');
    const doc = JSON.parse(text) as RunPageState;
    expect(doc.state.phase).toBe('failed');
    expect(doc.state.message).toBe('redis://:[REDACTED]@10.0.0.5:6379 refused the connection');
    expect(doc.status).toEqual({ error: 'metrics gone: password=[REDACTED] while scraping' });
    expect((await fetch(`${url}/other`)).status).toBe(404);
    expect((await fetch(`${url}/run/state.json`, { method: 'POST' })).status).toBe(405);
  });

  it('ships a script that parses, uses no template literals, and never writes HTML', () => {
    expect(() => new Function(RUN_PAGE_JS)).not.toThrow();
    expect(RUN_PAGE_JS).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(/);
  });
});

describe('readWorkerHeartbeats (real Redis)', () => {
  it('reads the heartbeats workers write, skipping unreadable ones and other runs', async () => {
    const r = await startPrivateRedis();
    cleanups.push(() => r.stop());
    const redis = new Redis(r.url);
    cleanups.push(async () => void (await redis.quit()));
    const at = Date.now();
    await redis.set('m3ae:run-x:workers:w1', JSON.stringify({ id: 'w1', backend: 'wasm', pid: 11, at }), 'EX', 30);
    await redis.set('m3ae:run-x:workers:w2', JSON.stringify({ id: 'w2', backend: 'cpu', pid: 12, at: at - 1000 }), 'EX', 30);
    await redis.set('m3ae:run-x:workers:bad', '{not json', 'EX', 30);
    await redis.set('m3ae:run-y:workers:w9', JSON.stringify({ id: 'w9', at }), 'EX', 30);
    for (let i = 0; i < 300; i++) await redis.set(`m3ae:run-x:params:v0:${i}`, 'x');
    const beats = await readWorkerHeartbeats(redis, 'm3ae:run-x:workers:*');
    expect(beats.sort((a, b) => a.id.localeCompare(b.id))).toEqual([
      { id: 'w1', at, backend: 'wasm', pid: 11 },
      { id: 'w2', at: at - 1000, backend: 'cpu', pid: 12 },
    ]);
    const history = new RunHistory();
    history.recordHeartbeats(beats);
    expect(history.snapshot().workers.map((w) => [w.id, w.backend, w.alive])).toEqual([
      ['w1', 'wasm', true],
      ['w2', 'cpu', true],
    ]);
    expect(await readWorkerHeartbeats(redis, 'm3ae:nobody:workers:*')).toEqual([]);
  });
});
