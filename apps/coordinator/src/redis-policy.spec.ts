import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertNoEviction } from './redis-policy.js';

async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

describe('assertNoEviction (own redis-server)', () => {
  let server: ChildProcess;
  let redis: Redis;
  beforeAll(async () => {
    const port = await freePort();
    server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    redis = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: (n) => (n > 50 ? null : 100) });
    for (let i = 0; i < 50; i++) {
      try {
        await redis.connect();
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });
  afterAll(async () => {
    redis.disconnect();
    server.kill('SIGKILL');
  });

  it('accepts noeviction and refuses any other policy with the fix in the message', async () => {
    await redis.config('SET', 'maxmemory-policy', 'noeviction');
    await expect(assertNoEviction(redis)).resolves.toBeUndefined();
    await redis.config('SET', 'maxmemory-policy', 'allkeys-lru');
    await expect(assertNoEviction(redis)).rejects.toThrow('redis maxmemory-policy is "allkeys-lru"; expected "noeviction"');
  });
});
