import { LocalRedis } from '@m3ae/protocol';

export { freePort } from '@m3ae/protocol';

/** The Redis CI starts (`.ci/run`) and the development machines run. */
export const SHARED_REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';

/** A private, throw-away `redis-server` on a free port (for tests that take Redis away). */
export async function startPrivateRedis(): Promise<{ url: string; port: number; stop(): Promise<void> }> {
  const redis = await LocalRedis.start();
  return { url: redis.url, port: redis.port, stop: () => redis.stop() };
}
