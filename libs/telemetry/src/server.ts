import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

const hangingUp = new WeakSet<Socket>();
import type { MetricsSource } from './base-metrics.js';
import { scrubSecrets, scrubValue } from './redact.js';

/** Where the HTTP endpoints listen unless told otherwise: this machine only. */
export const DEFAULT_METRICS_HOST = '127.0.0.1';

/** `M3AE_METRICS_HOST` (e.g. 0.0.0.0 in a pod) or {@link DEFAULT_METRICS_HOST}. */
export function metricsHostFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return env['M3AE_METRICS_HOST']?.trim() || DEFAULT_METRICS_HOST;
}

/** A listen error as one line naming the address, the cause and the settings that change it. */
function listenError(e: NodeJS.ErrnoException, host: string, port: number): Error {
  const fix = 'choose another port with --metrics-port or M3AE_METRICS_PORT (0 picks a free one), or pass --no-metrics';
  if (e.code === 'EADDRINUSE') return new Error(`cannot serve metrics on ${host}:${port}: the port is in use (EADDRINUSE); ${fix}`);
  if (e.code === 'EACCES') return new Error(`cannot serve metrics on ${host}:${port}: permission denied (EACCES); ${fix}`);
  if (e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND') return new Error(`cannot serve metrics on ${host}:${port}: no such local address (${e.code}); set --metrics-host or M3AE_METRICS_HOST to an address of this machine`);
  return e;
}

/** The port `m3ae train --local` serves the coordinator on (workers take the ports after it). */
export const DEFAULT_METRICS_PORT = 9400;

/**
 * One readiness condition. Ready unless it throws, rejects, returns `false` or takes longer than the
 * timeout — so `() => redis.ping()` and `() => modelReady` both work as they are.
 */
export type ReadinessCheck = () => unknown;

export interface TelemetryServerOptions {
  /** TCP port; 0 picks a free one (read it back from `server.port`). */
  port: number;
  /**
   * Address to listen on. Loopback unless opened on purpose (`--metrics-host` / `M3AE_METRICS_HOST`; the
   * Kubernetes manifests set 0.0.0.0 so that a pod is scrapable): `/status` shows paths, hosts and pids.
   * @defaultValue {@link metricsHostFromEnv}
   */
  host?: string;
  /** What `/metrics` serves: a `CoordinatorMetrics`/`WorkerMetrics`, or any prom-client `Registry`. */
  metrics: MetricsSource;
  /** `/readyz` conditions by name, e.g. `{ redis: () => redis.ping(), model: () => modelReady }`. */
  readiness?: Record<string, ReadinessCheck>;
  /** @defaultValue 2000 */
  readinessTimeoutMs?: number;
  /** The `/status` JSON document (served only when given: the coordinator's). */
  status?: () => unknown;
  /**
   * Extra paths served before the built-in ones (the coordinator's run page: `createRunPageHandler`).
   * Returns true when it answered the request, false to let the built-in endpoints (or 404) answer.
   */
  routes?: (req: IncomingMessage, res: ServerResponse) => boolean | Promise<boolean>;
  /** Receives a warning when a handler fails. */
  logger?: { warn(obj: object, msg?: string): void };
  /** How long `close()` waits for requests in flight before cutting connections. @defaultValue 3000 */
  closeTimeoutMs?: number;
}

export interface TelemetryServer {
  /** The bound port (useful with `port: 0`). */
  readonly port: number;
  /** `http://127.0.0.1:PORT` for local clients and tests. */
  readonly url: string;
  /** Stops accepting connections, lets requests in flight finish (bounded), then closes the rest. Idempotent. */
  close(): Promise<void>;
}

export interface ReadinessReport {
  ready: boolean;
  checks: Record<string, { ok: boolean; ms: number; error?: string }>;
}

/** `/metrics`, `/healthz`, `/readyz`, `/status` (and the mounted `routes`) for one request. */
async function serveEndpoint(options: TelemetryServerOptions, startedAt: number, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = new URL(req.url ?? '/', 'http://localhost').pathname;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
    return;
  }
  if (options.routes && (await options.routes(req, res))) return;
  switch (path) {
    case '/metrics': {
      const body = await options.metrics.metrics();
      send(res, 200, options.metrics.contentType, body, req.method === 'HEAD');
      return;
    }
    case '/healthz':
      sendJson(res, 200, { status: 'alive', uptimeSeconds: (Date.now() - startedAt) / 1000 }, req.method === 'HEAD');
      return;
    case '/readyz': {
      const report = await checkReadiness(options.readiness ?? {}, options.readinessTimeoutMs ?? 2000);
      sendJson(res, report.ready ? 200 : 503, report, req.method === 'HEAD');
      return;
    }
    case '/status':
      if (options.status) {
        sendJson(res, 200, scrubValue(await options.status()), req.method === 'HEAD');
        return;
      }
      break;
    default:
      break;
  }
  send(res, 404, 'text/plain; charset=utf-8', `not found: ${path}\nendpoints: ${endpoints(options).join(' ')}\n`);
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => reject(listenError(e, host, port));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * The observability endpoints of a process, on plain `node:http`:
 * `/metrics` (Prometheus text), `/healthz` (the process is alive: always 200 while the event loop turns),
 * `/readyz` (200 when every readiness check passes, else 503, with a JSON report) and `/status` (JSON,
 * coordinator only). Everything returned is scrubbed of credentials.
 */
export async function startTelemetryServer(options: TelemetryServerOptions): Promise<TelemetryServer> {
  if (!(Number.isInteger(options.port) && options.port >= 0 && options.port <= 65535)) {
    throw new Error(`telemetry server: port is ${options.port}; expected an integer from 0 to 65535`);
  }
  const host = options.host ?? metricsHostFromEnv();
  const startedAt = Date.now();
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    serveEndpoint(options, startedAt, req, res).catch((err: unknown) => {
      const message = scrubSecrets(err instanceof Error ? err.message : String(err));
      options.logger?.warn({ path: req.url, error: message }, 'telemetry endpoint failed');
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', `error: ${message}\n`);
      else res.destroy();
    });
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  await listen(server, options.port, host);
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const socket of sockets) hangingUp.add(socket);
        const timer = setTimeout(() => server.closeAllConnections(), options.closeTimeoutMs ?? 3000);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}

/** Runs every check concurrently, each bounded by `timeoutMs`. */
export async function checkReadiness(checks: Record<string, ReadinessCheck>, timeoutMs: number): Promise<ReadinessReport> {
  const entries = await Promise.all(
    Object.entries(checks).map(async ([name, check]) => {
      const t0 = performance.now();
      let timer: NodeJS.Timeout | undefined;
      try {
        const result = await Promise.race([
          Promise.resolve().then(check),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
          }),
        ]);
        const ms = performance.now() - t0;
        return result === false ? [name, { ok: false, ms, error: 'not ready' }] : [name, { ok: true, ms }];
      } catch (err) {
        const error = scrubSecrets(err instanceof Error ? err.message : String(err));
        return [name, { ok: false, ms: performance.now() - t0, error }];
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  const report: ReadinessReport = { ready: true, checks: {} };
  for (const [name, result] of entries as [string, ReadinessReport['checks'][string]][]) {
    report.checks[name] = result;
    if (!result.ok) report.ready = false;
  }
  return report;
}

function endpoints(options: TelemetryServerOptions): string[] {
  return ['/metrics', '/healthz', '/readyz', ...(options.status ? ['/status'] : [])];
}

function send(res: ServerResponse, code: number, contentType: string, body: string, headOnly = false): void {
  // Set once the server is closing: answer and hang up (requests in flight included), so that a
  // kept-alive connection does not hold `close()` up.
  if (hangingUp.has(res.req.socket)) res.setHeader('Connection', 'close');
  res.statusCode = code;
  res.setHeader('Content-Type', contentType);
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.setHeader('Cache-Control', 'no-store');
  res.end(headOnly ? undefined : body);
}

function sendJson(res: ServerResponse, code: number, value: unknown, headOnly = false): void {
  send(res, code, 'application/json; charset=utf-8', `${JSON.stringify(value)}\n`, headOnly);
}

/**
 * The metrics port from `M3AE_METRICS_PORT` (how the Kubernetes manifests set it), else `fallback`.
 * A value that is not a port is an error naming the variable.
 */
export function metricsPortFromEnv(env: NodeJS.ProcessEnv = process.env, fallback = DEFAULT_METRICS_PORT): number {
  const raw = env['M3AE_METRICS_PORT'];
  if (raw === undefined || raw === '') return fallback;
  const port = Number(raw);
  if (!(/^\d+$/.test(raw) && port <= 65535)) {
    throw new Error(`M3AE_METRICS_PORT is ${JSON.stringify(raw)}; expected an integer from 0 to 65535`);
  }
  return port;
}
