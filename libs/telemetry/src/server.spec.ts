import { request as httpRequest, Agent } from 'node:http';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { parseExposition, sampleValue } from '../test/helpers/exposition.js';
import { promtoolCheckMetrics } from '../test/helpers/promtool.js';
import { startPrivateRedis } from '../test/helpers/redis.js';
import { CoordinatorMetrics } from './coordinator-metrics.js';
import { networkInterfaces } from 'node:os';
import { metricsHostFromEnv, metricsPortFromEnv, startTelemetryServer, type TelemetryServer } from './server.js';
import { WorkerMetrics } from './worker-metrics.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await (cleanups.pop() as () => Promise<void>)();
});

async function serve(options: Parameters<typeof startTelemetryServer>[0]): Promise<TelemetryServer> {
  const server = await startTelemetryServer(options);
  cleanups.push(() => server.close());
  return server;
}

describe('startTelemetryServer', () => {
  it('serves /metrics (promtool-valid), /healthz and the coordinator /status over real HTTP', async () => {
    const metrics = new CoordinatorMetrics({ run: 'run-h' });
    metrics.setRunInfo({ totalSteps: 4, jobsPerStep: 2 });
    metrics.observeStep({ step: 1, durationSeconds: 1, losses: { total: 2.5, mlm: 2 }, learningRate: 1e-3, gradientNorm: 1, samples: 8, tokens: 64 });
    const server = await serve({ port: 0, host: '127.0.0.1', metrics, status: () => ({ ...metrics.status(), redis: 'redis://:hunter2@redis:6379' }) });

    const res = await fetch(`${server.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0.0.4/);
    const text = await res.text();
    expect(sampleValue(parseExposition(text), 'm3ae_loss', { objective: 'total', run: 'run-h' })).toBe(2.5);
    const check = await promtoolCheckMetrics(text);
    expect(check.output).toBe('');
    expect(check.code).toBe(0);

    const health = await fetch(`${server.url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'alive' });

    const status = await fetch(`${server.url}/status`);
    expect(status.status).toBe(200);
    const doc = (await status.json()) as Record<string, unknown>;
    expect(doc).toMatchObject({ run: 'run-h', step: 1, totalSteps: 4, losses: { total: 2.5, mlm: 2 }, etaSeconds: 3 });
    expect(doc['redis']).toBe('redis://:[REDACTED]@redis:6379');

    // With no readiness checks the process is ready.
    expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
    const missing = await fetch(`${server.url}/nope`);
    expect(missing.status).toBe(404);
    expect(await missing.text()).toContain('/metrics /healthz /readyz /status');
    const post = await fetch(`${server.url}/metrics`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
  });

  it('reports ready only while the real Redis answers and the model is loaded', async () => {
    const redisServer = await startPrivateRedis();
    cleanups.push(() => redisServer.stop());
    const redis = new Redis(redisServer.url, { maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => 200 });
    cleanups.push(async () => void redis.disconnect());
    await new Promise((resolve) => redis.once('ready', resolve));
    let modelReady = false;
    const metrics = new WorkerMetrics({ run: 'r', worker: 'w-1', defaultMetrics: false });
    const server = await serve({
      port: 0,
      metrics,
      readiness: { redis: () => redis.ping(), model: () => modelReady },
      readinessTimeoutMs: 500,
    });
    // Workers serve no /status.
    expect((await fetch(`${server.url}/status`)).status).toBe(404);

    let res = await fetch(`${server.url}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ ready: false, checks: { redis: { ok: true }, model: { ok: false, error: 'not ready' } } });

    modelReady = true;
    res = await fetch(`${server.url}/readyz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ ready: true, checks: { redis: { ok: true }, model: { ok: true } } });

    await redisServer.stop();
    res = await fetch(`${server.url}/readyz`);
    expect(res.status).toBe(503);
    const report = (await res.json()) as { checks: { redis: { ok: boolean; error: string } } };
    expect(report.checks.redis.ok).toBe(false);
    expect(report.checks.redis.error.length).toBeGreaterThan(0);
    // Still alive: liveness does not depend on Redis.
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });

  it('answers /readyz within the timeout when a check hangs', async () => {
    const server = await serve({
      port: 0,
      metrics: new WorkerMetrics({ run: 'r', worker: 'w', defaultMetrics: false }),
      readiness: { stuck: () => new Promise(() => undefined), throws: () => { throw new Error('token=abcdefgh12345 bad'); } },
      readinessTimeoutMs: 150,
    });
    const t0 = Date.now();
    const res = await fetch(`${server.url}/readyz`);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(res.status).toBe(503);
    const body = (await res.json()) as { checks: Record<string, { error: string }> };
    expect(body.checks['stuck']?.error).toBe('no answer within 150 ms');
    expect(body.checks['throws']?.error).toBe('token=[REDACTED] bad');
  });

  it('returns 500 with a scrubbed message when collecting fails, and keeps serving', async () => {
    let fail = true;
    const server = await serve({
      port: 0,
      metrics: { contentType: 'text/plain', metrics: async () => (fail ? Promise.reject(new Error('redis://u:pw123@h down')) : 'up 1\n') },
    });
    const bad = await fetch(`${server.url}/metrics`);
    expect(bad.status).toBe(500);
    const text = await bad.text();
    expect(text).not.toContain('pw123');
    fail = false;
    expect(await (await fetch(`${server.url}/metrics`)).text()).toBe('up 1\n');
  });

  it('closes gracefully: a request in flight completes, idle keep-alive connections do not hold it open', async () => {
    let release: () => void = () => undefined;
    const slow = new Promise<void>((r) => (release = r));
    const server = await startTelemetryServer({
      port: 0,
      metrics: { contentType: 'text/plain', metrics: async () => (await slow, 'slow 1\n') },
      closeTimeoutMs: 5000,
    });
    const agent = new Agent({ keepAlive: true });
    cleanups.push(async () => agent.destroy());
    // An idle keep-alive connection (as Prometheus keeps between scrapes).
    await new Promise<void>((resolve, reject) => {
      httpRequest(`${server.url}/healthz`, { agent }, (res) => {
        res.resume();
        res.on('end', resolve);
      }).on('error', reject).end();
    });
    const inFlight = fetch(`${server.url}/metrics`).then((r) => r.text());
    await new Promise((r) => setTimeout(r, 50));
    const closed = server.close();
    expect(server.close()).toBe(closed);
    release();
    expect(await inFlight).toBe('slow 1\n');
    const t0 = Date.now();
    await closed;
    expect(Date.now() - t0).toBeLessThan(2000);
    await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();
  });

  it('validates its port, and reads M3AE_METRICS_PORT', async () => {
    await expect(startTelemetryServer({ port: 70000, metrics: new WorkerMetrics({ run: 'r', worker: 'w', defaultMetrics: false }) })).rejects.toThrow(
      'telemetry server: port is 70000; expected an integer from 0 to 65535',
    );
    expect(metricsPortFromEnv({})).toBe(9400);
    expect(metricsPortFromEnv({ M3AE_METRICS_PORT: '9500' })).toBe(9500);
    expect(() => metricsPortFromEnv({ M3AE_METRICS_PORT: 'http' })).toThrow('M3AE_METRICS_PORT is "http"; expected an integer from 0 to 65535');
  });

  it('listens on loopback unless opened (M3AE_METRICS_HOST), and names the port and the flag when it is in use', async () => {
    expect(metricsHostFromEnv({})).toBe('127.0.0.1');
    expect(metricsHostFromEnv({ M3AE_METRICS_HOST: '0.0.0.0' })).toBe('0.0.0.0');
    const metrics = new WorkerMetrics({ run: 'r', worker: 'w', defaultMetrics: false });
    const server = await serve({ port: 0, metrics });
    // Not reachable on another address of this machine (when it has one).
    const external = Object.values(networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
    if (external) await expect(fetch(`http://${external}:${server.port}/healthz`)).rejects.toThrow();
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    await expect(startTelemetryServer({ port: server.port, metrics })).rejects.toThrow(
      `cannot serve metrics on 127.0.0.1:${server.port}: the port is in use (EADDRINUSE); choose another port with --metrics-port or M3AE_METRICS_PORT (0 picks a free one), or pass --no-metrics`,
    );
  });
});
