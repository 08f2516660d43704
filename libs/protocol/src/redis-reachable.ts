import { Redis, type RedisOptions } from 'ioredis';
import { ProtocolError } from './errors.js';
import { redisOptions, type RedisEndpoint } from './redis-connection.js';

/** How long a process waits for its Redis at start-up before it gives up. */
export const DEFAULT_REDIS_TIMEOUT_SECONDS = 10;

/** Redis did not answer within the start-up deadline (the message names the address, the cause and the fix). */
export class RedisUnreachableError extends ProtocolError {
  override readonly name = 'RedisUnreachableError';
  constructor(
    message: string,
    /** ECONNREFUSED, ENOTFOUND, ETIMEDOUT, WRONGPASS, NOAUTH, … */
    readonly reason: string,
  ) {
    super(message);
  }
}

/** A stop (SIGTERM, SIGINT) arrived while the process was still waiting for Redis. */
export class StoppedWhileConnecting extends ProtocolError {
  override readonly name = 'StoppedWhileConnecting';
}

/** `host:port` of an endpoint, or of a connection's options (never its credentials). */
export function redisAddress(endpoint: RedisEndpoint | RedisOptions): string {
  const o = 'url' in endpoint ? redisOptions(endpoint) : endpoint;
  return `${o.host ?? '127.0.0.1'}:${o.port ?? 6379}`;
}

/** The real cause of a failed connection: the system error code or the server's error word, not "Connection is closed.". */
export function connectionCause(e: unknown): string {
  if (e && typeof e === 'object') {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code) return code;
    const message = (e as { message?: unknown }).message;
    if (typeof message === 'string') {
      const word = /^(WRONGPASS|NOAUTH|NOPERM|ERR|LOADING|MISCONF)\b/.exec(message)?.[1];
      if (word) return word === 'ERR' ? message.slice(0, 120) : word;
      return message.slice(0, 120);
    }
  }
  return String(e).slice(0, 120);
}

/** Errors that waiting longer does not fix. */
const PERMANENT = /^(WRONGPASS|NOAUTH|NOPERM|ERR|CERT_|DEPTH_ZERO|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|EPROTO)/;

/**
 * One connection attempt that fails instead of retrying: resolves with a client that answered PING, or rejects
 * with an Error whose message is the real cause ({@link connectionCause}). The error listener is attached before
 * anything is sent, so ioredis never prints "Unhandled error event". The caller disconnects the client.
 */
export async function connectOnce(endpoint: RedisEndpoint, o: { timeoutMs: number; connectionName?: string }): Promise<Redis> {
  const redis = new Redis(
    redisOptions(endpoint, {
      lazyConnect: true,
      connectTimeout: o.timeoutMs,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      enableOfflineQueue: false,
      connectionName: o.connectionName ?? 'm3ae-probe',
    }),
  );
  let lastError: unknown;
  redis.on('error', (e: unknown) => (lastError ??= e));
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      (async () => {
        await redis.connect();
        await redis.ping();
      })(),
      new Promise<never>((_r, reject) => {
        timer = setTimeout(() => reject(Object.assign(new Error(`no answer within ${o.timeoutMs} ms`), { code: 'ETIMEDOUT' })), o.timeoutMs);
      }),
    ]);
    return redis;
  } catch (e) {
    redis.disconnect();
    const cause = connectionCause(lastError ?? e);
    throw Object.assign(new Error(cause), { code: cause });
  } finally {
    clearTimeout(timer);
  }
}

export interface WaitForRedisOptions {
  /** @defaultValue {@link DEFAULT_REDIS_TIMEOUT_SECONDS} */
  timeoutSeconds?: number;
  /** Polled while waiting: true ends the wait with {@link StoppedWhileConnecting}. */
  shouldStop?: () => boolean;
  /** The setting that changes the deadline, named in the error. @defaultValue '--redis-timeout' */
  timeoutSetting?: string;
}

/**
 * Waits until Redis answers PING, retrying a refused or timed-out connection until the deadline: a Redis that is
 * starting is waited for, one that is absent ends the process with one line naming the address, the cause and
 * the fix. Wrong credentials and TLS errors fail at once.
 */
export async function waitForRedis(endpoint: RedisEndpoint, o: WaitForRedisOptions = {}): Promise<void> {
  const seconds = o.timeoutSeconds ?? DEFAULT_REDIS_TIMEOUT_SECONDS;
  const address = redisAddress(endpoint);
  const deadline = Date.now() + seconds * 1000;
  const stopped = (): StoppedWhileConnecting => new StoppedWhileConnecting(`stopped while waiting for Redis at ${address}`);
  for (;;) {
    if (o.shouldStop?.()) throw stopped();
    let cause: string;
    try {
      const redis = await connectOnce(endpoint, { timeoutMs: Math.max(200, Math.min(2000, deadline - Date.now())) });
      redis.disconnect();
      return;
    } catch (e) {
      cause = connectionCause(e);
    }
    if (PERMANENT.test(cause)) {
      const fix = /PASS|AUTH|NOPERM/.test(cause) ? 'check the password (M3AE_REDIS_PASSWORD or the URL) and user name' : 'check the TLS settings (rediss://, M3AE_REDIS_CA_FILE)';
      throw new RedisUnreachableError(`Redis at ${address} refused the connection (${cause}); ${fix}`, cause);
    }
    if (Date.now() >= deadline) {
      throw new RedisUnreachableError(`cannot reach Redis at ${address} (${cause}) after ${seconds} s; is redis-server running? (${o.timeoutSetting ?? '--redis-timeout'})`, cause);
    }
    for (let t = 0; t < 250 && Date.now() < deadline; t += 50) {
      if (o.shouldStop?.()) throw stopped();
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
