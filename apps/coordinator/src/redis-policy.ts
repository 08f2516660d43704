import type { Redis } from 'ioredis';

export class RedisPolicyError extends Error {
  override readonly name = 'RedisPolicyError';
}

/**
 * BullMQ and the blob store rely on Redis never evicting keys: an evicted job or gradient chunk would
 * silently lose work. The coordinator refuses to start otherwise.
 */
export async function assertNoEviction(redis: Redis): Promise<void> {
  const reply = (await redis.config('GET', 'maxmemory-policy')) as unknown;
  const policy = Array.isArray(reply) ? String(reply[1]) : undefined;
  if (policy !== 'noeviction') {
    throw new RedisPolicyError(
      `redis maxmemory-policy is ${JSON.stringify(policy)}; expected "noeviction" (run: redis-cli CONFIG SET maxmemory-policy noeviction, or set it in redis.conf)`,
    );
  }
}
