import type { WorkerHeartbeat } from './run-history.js';

/** The two ioredis calls the heartbeat reader needs (an ioredis `Redis` fits). */
export interface HeartbeatRedis {
  scan(cursor: string, matchToken: 'MATCH', pattern: string, countToken: 'COUNT', count: number): Promise<[cursor: string, keys: string[]]>;
  mget(keys: string[]): Promise<(string | null)[]>;
}

/**
 * The workers' heartbeats of a run (`SCAN MATCH m3ae:<run>:workers:*`, values `{ id, at, backend, pid }` as
 * the worker writes them; they expire when a worker stops beating). Unreadable values are skipped: a
 * heartbeat is advisory and must never break the page.
 */
export async function readWorkerHeartbeats(redis: HeartbeatRedis, pattern: string): Promise<WorkerHeartbeat[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 200);
    keys.push(...batch);
    cursor = next;
  } while (cursor !== '0');
  if (keys.length === 0) return [];
  const values = await redis.mget([...new Set(keys)]);
  const beats: WorkerHeartbeat[] = [];
  for (const raw of values) {
    const beat = parseHeartbeat(raw);
    if (beat) beats.push(beat);
  }
  return beats;
}

export function parseHeartbeat(raw: string | null): WorkerHeartbeat | undefined {
  if (raw === null) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    return undefined;
  }
  if (v === null || typeof v !== 'object') return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o['id'] !== 'string' || o['id'] === '' || typeof o['at'] !== 'number' || !Number.isFinite(o['at'])) return undefined;
  return {
    id: o['id'],
    at: o['at'],
    ...(typeof o['backend'] === 'string' ? { backend: o['backend'] } : {}),
    ...(typeof o['pid'] === 'number' ? { pid: o['pid'] } : {}),
  };
}
