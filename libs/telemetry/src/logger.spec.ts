import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from './logger.js';
import { REDACTED, scrubSecrets } from './redact.js';

/** A destination that keeps every line pino writes. */
function capture(isTTY = false): Writable & { lines: string[]; isTTY: boolean } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  }) as Writable & { lines: string[]; isTTY: boolean };
  stream.lines = lines;
  stream.isTTY = isTTY;
  return stream;
}

const SECRET = 's3cr3t-P4ss';

describe('scrubSecrets', () => {
  it('removes passwords from URLs, bearer tokens and password assignments, and leaves the rest', () => {
    expect(scrubSecrets(`redis://default:${SECRET}@redis:6379/0`)).toBe(`redis://default:${REDACTED}@redis:6379/0`);
    expect(scrubSecrets(`connect rediss://:${SECRET}@r.example:6380 failed`)).toBe(`connect rediss://:${REDACTED}@r.example:6380 failed`);
    expect(scrubSecrets(`redis://${SECRET}@h:1`)).toBe(`redis://${REDACTED}@h:1`);
    expect(scrubSecrets('ssh://git@github.com/x')).toBe('ssh://git@github.com/x');
    expect(scrubSecrets(`Authorization: Bearer ${SECRET}abc`)).toBe(`Authorization: Bearer ${REDACTED}`);
    expect(scrubSecrets(`token=${SECRET}xyz&x=1`)).toBe(`token=${REDACTED}&x=1`);
    expect(scrubSecrets(`requirepass ${SECRET}`)).toBe(`requirepass ${REDACTED}`);
    expect(scrubSecrets(`password: "${SECRET}"`)).toBe(`password: ${REDACTED}`);
    expect(scrubSecrets('the password must be set')).toBe('the password must be set');
    expect(scrubSecrets('redis://127.0.0.1:6379')).toBe('redis://127.0.0.1:6379');
  });
});

describe('createLogger', () => {
  it('writes JSON lines carrying the run, worker, step and job ids', () => {
    const out = capture();
    const log = createLogger({ name: 'worker', bindings: { run: 'run-7', worker: 'w-2' }, destination: out, env: {} });
    log.child({ step: 12, job: 'run-7:12:3' }).info({ samples: 8 }, 'job done');
    expect(out.lines).toHaveLength(1);
    const line = JSON.parse(out.lines[0] as string) as Record<string, unknown>;
    expect(line).toMatchObject({ name: 'worker', run: 'run-7', worker: 'w-2', step: 12, job: 'run-7:12:3', samples: 8, msg: 'job done', level: 30 });
  });

  it('never writes a secret: by key, inside URLs, in messages, format arguments, bindings and errors', () => {
    const out = capture();
    const url = `redis://default:${SECRET}@redis.m3ae.svc:6379`;
    const log = createLogger({ name: 'coordinator', bindings: { run: 'r' }, destination: out, env: {} });
    const child = log.child({ redisUrl: url });
    child.info({ password: SECRET, config: { redis: { url, password: SECRET }, auth: { token: SECRET } } }, `connecting to ${url}`);
    child.warn('retrying %s', url);
    child.error({ err: new Error(`ECONNREFUSED ${url}`) }, 'connection failed');
    child.info({ headers: { authorization: `Bearer ${SECRET}` } }, 'request');
    child.info({ list: [url, { password: SECRET }] }, 'nested');
    expect(out.lines).toHaveLength(5);
    for (const line of out.lines) expect(line).not.toContain(SECRET);
    const first = JSON.parse(out.lines[0] as string) as { password: string; redisUrl: string; config: { redis: { url: string } } };
    expect(first.password).toBe(REDACTED);
    expect(first.redisUrl).toBe(`redis://default:${REDACTED}@redis.m3ae.svc:6379`);
    expect(first.config.redis.url).toContain('redis.m3ae.svc');
    const err = JSON.parse(out.lines[2] as string) as { err: { message: string; stack: string; type: string } };
    expect(err.err.type).toBe('Error');
    expect(err.err.message).toContain('ECONNREFUSED redis://default:');
  });

  it('is pretty on a terminal, JSON elsewhere or when told, and rejects bad levels and formats by name', () => {
    const tty = capture(true);
    createLogger({ name: 'x', destination: tty, env: {} }).info({ run: 'r1' }, 'hello');
    expect(tty.lines.join('\n')).toContain('hello');
    expect(() => JSON.parse(tty.lines[0] as string)).toThrow();

    const forced = capture(true);
    createLogger({ name: 'x', destination: forced, env: { M3AE_LOG_FORMAT: 'json' } }).info('hello');
    expect(JSON.parse(forced.lines[0] as string)).toMatchObject({ msg: 'hello' });

    const prod = capture(true);
    createLogger({ name: 'x', destination: prod, env: { NODE_ENV: 'production' } }).info('hello');
    expect(JSON.parse(prod.lines[0] as string)).toMatchObject({ msg: 'hello' });

    const quiet = capture();
    const log = createLogger({ name: 'x', destination: quiet, env: { M3AE_LOG_LEVEL: 'warn' } });
    log.info('hidden');
    log.warn('shown');
    expect(quiet.lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(['shown']);

    expect(() => createLogger({ name: 'x', level: 'loud', env: {} })).toThrow(/level "loud" is not one of/);
    expect(() => createLogger({ name: 'x', env: { M3AE_LOG_FORMAT: 'xml' } })).toThrow(/M3AE_LOG_FORMAT "xml"/);
  });
});
