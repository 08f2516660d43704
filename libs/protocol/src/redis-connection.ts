import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { Redis, type RedisOptions } from 'ioredis';
import { ConfigError } from './errors.js';
import { redactRedisUrl } from './redis-url.js';

/**
 * Where and how to reach one Redis. The URL may carry credentials (`rediss://user:pass@host:6380/0`);
 * `username`/`password` given separately win over the URL's (so a Kubernetes Secret can supply them through
 * the environment). `rediss://` turns TLS on; `caFile` adds a private CA to trust.
 */
export interface RedisEndpoint {
  url: string;
  username?: string | undefined;
  password?: string | undefined;
  caFile?: string | undefined;
  /** Verify the server certificate (default true). Turn off only for a self-signed test server. */
  tlsRejectUnauthorized?: boolean | undefined;
}

/** ioredis options for an endpoint (host, port, db, credentials, TLS); `extra` is merged on top. */
export function redisOptions(endpoint: RedisEndpoint, extra: RedisOptions = {}): RedisOptions {
  let u: URL;
  try {
    u = new URL(endpoint.url);
  } catch {
    throw new ConfigError(`redis url ${JSON.stringify(redactRedisUrl(endpoint.url))} is not a URL; expected redis://[user:password@]host[:port][/db] or rediss://…`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new ConfigError(`redis url ${JSON.stringify(redactRedisUrl(endpoint.url))} has protocol ${JSON.stringify(u.protocol)}; expected "redis:" or "rediss:"`);
  }
  const dbText = u.pathname.replace(/^\//, '');
  const db = dbText === '' ? 0 : Number(dbText);
  if (!Number.isInteger(db) || db < 0) {
    throw new ConfigError(`redis url ${JSON.stringify(redactRedisUrl(endpoint.url))} has database ${JSON.stringify(dbText)}; expected a non-negative integer`);
  }
  const host = u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1';
  const tls = u.protocol === 'rediss:' || endpoint.caFile !== undefined;
  const username = endpoint.username ?? (u.username ? decodeURIComponent(u.username) : undefined);
  const password = endpoint.password ?? (u.password ? decodeURIComponent(u.password) : undefined);
  const options: RedisOptions = {
    host,
    port: u.port ? Number(u.port) : 6379,
    db,
    ...(username ? { username } : {}),
    ...(password ? { password } : {}),
    ...(tls
      ? {
          tls: {
            ...(endpoint.caFile ? { ca: readCa(endpoint.caFile) } : {}),
            rejectUnauthorized: endpoint.tlsRejectUnauthorized ?? true,
            // SNI with an IP address is not allowed (Node warns); certificates for IPs are checked without it.
            ...(isIP(host) ? {} : { servername: host }),
          },
        }
      : {}),
    ...extra,
  };
  return options;
}

function readCa(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new ConfigError(`redis.caFile ${JSON.stringify(file)} cannot be read (${(e as NodeJS.ErrnoException).code ?? String(e)}); expected a PEM file with the CA certificate`);
  }
}

/**
 * A connection for the blob store and bookkeeping. Commands wait across reconnects instead of failing
 * (`maxRetriesPerRequest: null`), which is what lets a run survive a Redis restart; BullMQ workers need it too.
 */
export function connectRedis(endpoint: RedisEndpoint, extra: RedisOptions = {}): Redis {
  return new Redis(redisOptions(endpoint, { maxRetriesPerRequest: null, connectionName: 'm3ae', ...extra }));
}
