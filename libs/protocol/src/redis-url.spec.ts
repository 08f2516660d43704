import { describe, expect, it } from 'vitest';
import { redactRedisUrl } from './redis-url.js';

describe('redactRedisUrl', () => {
  it('hides passwords, keeps host, port, user and database', () => {
    expect(redactRedisUrl('rediss://trainer:s3cret@redis.m3ae:6380/2')).toBe('rediss://trainer:***@redis.m3ae:6380/2');
    expect(redactRedisUrl('redis://:s3cret@127.0.0.1:6379')).toBe('redis://:***@127.0.0.1:6379');
    expect(redactRedisUrl('redis://127.0.0.1:6379')).toBe('redis://127.0.0.1:6379');
  });
  it('redacts even an unparsable URL', () => {
    expect(redactRedisUrl('redis//user:pw@host')).not.toContain('pw');
  });
});
