import type { IncomingMessage, ServerResponse } from 'node:http';
import { scrubSecrets, scrubValue } from '../redact.js';
import { RUN_PAGE_CSS, RUN_PAGE_ICON, RUN_PAGE_JS, runPageHtml } from './page.js';
import type { RunHistory } from './run-history.js';
import type { RunSnapshot } from './run-snapshot.js';

export interface RunPageOptions {
  /** The coordinator's own history (curves, breakdown, workers, rejects, the run's state). */
  history: RunHistory;
  /** The `/status` document (`CoordinatorMetrics.status()`), included as `status` when given. */
  status?: () => unknown;
  /** The newest reconstruction grid as PNG bytes, if any (e.g. `ValidationGridRenderer.latest()`). */
  latestGrid?: () => Uint8Array | undefined;
  /** Milliseconds between the page's polls. @defaultValue 1000 */
  pollMs?: number;
}

/** The run page's document: the history snapshot, the reconstruction grid's version and the `/status` document. */
export interface RunPageState extends RunSnapshot {
  image: { available: boolean; version: number; step: number | null };
  status: unknown;
}

/**
 * Answers the run page's paths and returns true, or returns false for any other path (so it can sit in front
 * of other handlers, e.g. as the telemetry server's `routes`). GET and HEAD only.
 */
export type RunPageHandler = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

/** Paths the run page answers. */
export const RUN_PAGE_PATHS = ['/', '/index.html', '/run/page.css', '/run/page.js', '/run/icon.svg', '/run/state.json', '/run/grid.png'] as const;

// Everything the page needs comes from this origin; nothing inline, nothing from elsewhere.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export class QueryError extends Error {
  override readonly name = 'QueryError';
}

/** An optional integer query field (≥ −1); the error names the field, the value and what was expected. */
function intParam(params: URLSearchParams, name: string): number | undefined {
  const raw = params.get(name);
  if (raw === null || raw === '') return undefined;
  if (!/^-?\d{1,15}$/.test(raw) || Number(raw) < -1) throw new QueryError(`query ${name}=${JSON.stringify(raw)}: expected an integer ≥ -1`);
  return Number(raw);
}

/**
 * The live run page: `/` (HTML), `/run/page.css`, `/run/page.js`, `/run/icon.svg` (static, served from this package: no
 * build step, no CDN), `/run/state.json?since=SEQ&generation=G` (what the page polls: the run's state, new
 * curve points, breakdown, workers, rejects, `/status`) and `/run/grid.png` (the newest reconstruction grid).
 * Everything served is scrubbed of credentials.
 */
export function createRunPageHandler(options: RunPageOptions): RunPageHandler {
  const pollMs = options.pollMs ?? 1000;
  if (!(Number.isInteger(pollMs) && pollMs >= 100 && pollMs <= 60_000)) throw new Error(`run page: pollMs is ${pollMs}; expected an integer from 100 to 60000`);
  const html = runPageHtml({ pollMs });
  let lastGrid: Uint8Array | undefined;
  let gridVersion = 0;
  const grid = (): Uint8Array | undefined => {
    const png = options.latestGrid?.();
    if (png && png !== lastGrid) {
      lastGrid = png;
      gridVersion++;
    }
    return png;
  };

  return async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname;
    if (!(RUN_PAGE_PATHS as readonly string[]).includes(path)) return false;
    const head = req.method === 'HEAD';
    if (req.method !== 'GET' && !head) {
      res.setHeader('Allow', 'GET, HEAD');
      send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', false);
      return true;
    }
    switch (path) {
      case '/':
      case '/index.html':
        send(res, 200, 'text/html; charset=utf-8', html, head);
        return true;
      case '/run/page.css':
        send(res, 200, 'text/css; charset=utf-8', RUN_PAGE_CSS, head);
        return true;
      case '/run/page.js':
        send(res, 200, 'text/javascript; charset=utf-8', RUN_PAGE_JS, head);
        return true;
      case '/run/icon.svg':
        send(res, 200, 'image/svg+xml', RUN_PAGE_ICON, head);
        return true;
      case '/run/state.json': {
        let since: number | undefined;
        let generation: number | undefined;
        try {
          since = intParam(url.searchParams, 'since');
          generation = intParam(url.searchParams, 'generation');
        } catch (e) {
          send(res, 400, 'text/plain; charset=utf-8', `${(e as Error).message}\n`, head);
          return true;
        }
        const png = grid();
        const snapshot = options.history.snapshot(since, generation);
        let status: unknown = null;
        try {
          status = options.status ? await options.status() : null;
        } catch (e) {
          status = { error: scrubSecrets(e instanceof Error ? e.message : String(e)) };
        }
        const doc: RunPageState = {
          ...snapshot,
          image: { available: png !== undefined, version: png ? gridVersion : 0, step: snapshot.grid?.step ?? null },
          status: scrubValue(status),
        };
        send(res, 200, 'application/json; charset=utf-8', `${JSON.stringify(doc)}\n`, head);
        return true;
      }
      case '/run/grid.png': {
        const png = grid();
        if (!png) {
          send(res, 404, 'text/plain; charset=utf-8', 'no reconstruction grid yet\n', head);
          return true;
        }
        sendBytes(res, 200, 'image/png', png, head);
        return true;
      }
      default:
        return false;
    }
  };
}

function headers(res: ServerResponse, code: number, contentType: string, length: number): void {
  res.statusCode = code;
  res.setHeader('Content-Type', contentType);
  res.setHeader('Content-Length', length);
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'no-referrer');
  res.setHeader('Content-Security-Policy', CSP);
}

function send(res: ServerResponse, code: number, contentType: string, body: string, headOnly: boolean): void {
  headers(res, code, contentType, Buffer.byteLength(body));
  res.end(headOnly ? undefined : body);
}

function sendBytes(res: ServerResponse, code: number, contentType: string, body: Uint8Array, headOnly: boolean): void {
  headers(res, code, contentType, body.byteLength);
  res.end(headOnly ? undefined : body);
}
