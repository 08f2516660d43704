import { describe, expect, it } from 'vitest';
import { redactRedisUrl } from './redis-url.js';

describe('redactRedisUrl', () => {
  it('hides passwords, keeps host, port, user and database', () => {
    expect(redactRedisUrl('rediss://trainer:s3cret@redis.m3ae:6380/2')).toBe('rediss://trainer:***@redis.m3ae:6380/2');
    expect(redactRedisUrl('redis://:s3cret@127.0.0.1:6379')).toBe('redis://:***@127.0.0.1:6379');
    expect(redactRedisUrl('redis://127.0.0.1:6379')).toBe('redis://127.0.0.1:6379');
    expect(redactRedisUrl('redis://s3cret@127.0.0.1:6379')).toBe('redis://***@127.0.0.1:6379');
  });
  it('redacts even an unparsable URL', () => {
    expect(redactRedisUrl('redis//user:pw@host')).not.toContain('pw');
  });
  it.each([
    ['whitespace', 'pa ss\tw\nord'],
    ['@', 'p@ss@word'],
    [':', 'p:a:ss'],
    ['/', 'p/a/ss'],
    ['%', 'p%20a%zz'],
    ['# and ?', 'p#a?ss'],
    ['unicode', 'pässwört🔑'],
  ])('hides a password with %s in it', (_what, password) => {
    const shown = redactRedisUrl(`redis://trainer:${password}@redis.m3ae:6380/1`);
    expect(shown).toBe('rediss://trainer:***@redis.m3ae:6380/1'.replace('rediss', 'redis'));
    for (const piece of password.split(/[\s@:/%#?]+/).filter((p) => p.length > 1)) expect(shown).not.toContain(piece);
  });
});
