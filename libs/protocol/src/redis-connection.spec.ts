import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobStore } from './blob-store.js';
import { ConfigError } from './errors.js';
import { freePort, LocalRedis } from './local-redis.js';
import { connectRedis, redisOptions } from './redis-connection.js';

describe('redisOptions', () => {
  it('takes host, port, db and credentials from the URL; separate credentials win', () => {
    expect(redisOptions({ url: 'redis://u:p%40ss@10.1.2.3:6390/4' })).toMatchObject({ host: '10.1.2.3', port: 6390, db: 4, username: 'u', password: 'p@ss' });
    expect(redisOptions({ url: 'redis://u:p@h', password: 'secret2' })).toMatchObject({ host: 'h', port: 6379, db: 0, password: 'secret2' });
    expect(redisOptions({ url: 'redis://h' }).tls).toBeUndefined();
    expect(redisOptions({ url: 'rediss://redis.example:6380' }).tls).toMatchObject({ servername: 'redis.example', rejectUnauthorized: true });
  });
  it('refuses bad URLs and unreadable CA files without showing the password', () => {
    expect(() => redisOptions({ url: 'http://u:hunter2@h' })).toThrow('has protocol "http:"; expected "redis:" or "rediss:"');
    expect(() => redisOptions({ url: 'http://u:hunter2@h' })).not.toThrow(/hunter2/);
    expect(() => redisOptions({ url: 'redis://h/x' })).toThrow('has database "x"');
    expect(() => redisOptions({ url: 'rediss://h', caFile: '/nonexistent/ca.pem' })).toThrow(ConfigError);
  });
});

// A real TLS Redis with an ACL user and a private CA, made with openssl for this test.
describe('TLS, username and password against a real redis-server', () => {
  let redis: LocalRedis;
  let tlsPort: number;
  const dir = mkdtempSync(join(tmpdir(), 'm3ae-tls-'));
  const ssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  beforeAll(async () => {
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=m3ae-test-ca');
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
    writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
    ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '1', '-extfile', 'ext.cnf');
    tlsPort = await freePort();
    redis = await LocalRedis.start({
      port: 0,
      readyPort: tlsPort,
      args: [
        '--tls-port', String(tlsPort), '--tls-cert-file', join(dir, 'server.crt'), '--tls-key-file', join(dir, 'server.key'),
        '--tls-ca-cert-file', join(dir, 'ca.crt'), '--tls-auth-clients', 'no',
        '--user', 'default', 'off', '--user', 'trainer', 'on', '>s3cret', '~*', '&*', '+@all',
      ],
    });
  });
  afterAll(async () => redis?.stop());

  it('connects with rediss://, the CA file and an ACL user, and moves a blob', async () => {
    const endpoint = { url: `rediss://localhost:${tlsPort}`, username: 'trainer', password: 's3cret', caFile: join(dir, 'ca.crt') };
    const c = connectRedis(endpoint);
    expect(await c.ping()).toBe('PONG');
    expect(await c.acl('WHOAMI')).toBe('trainer');
    const store = BlobStore.connect([endpoint], { chunkBytes: 1024 });
    const x = new Float32Array(3000).map((_, i) => i);
    const ref = await store.putTensor('m3ae:tls:params:v0', x, 'f32');
    expect(await store.getTensor(ref)).toEqual(x);
    await store.delete(ref);
    await store.close();
    c.disconnect();
  });

  it('fails with a wrong password and without the CA', async () => {
    const errorsOf = async (url: string, caFile?: string): Promise<string> => {
      const c = connectRedis({ url, caFile }, { maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
      const seen: string[] = [];
      c.on('error', (e: Error) => seen.push(e.message));
      await c.connect().catch((e: Error) => seen.push(e.message));
      c.disconnect();
      return seen.join(' | ');
    };
    expect(await errorsOf(`rediss://trainer:nope@localhost:${tlsPort}`, join(dir, 'ca.crt'))).toMatch(/WRONGPASS/);
    expect(await errorsOf(`rediss://trainer:s3cret@localhost:${tlsPort}`)).toMatch(/self.signed|certificate/i);
  });
});
