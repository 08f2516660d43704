/** The Redis every process talks to unless told otherwise (`REDIS_URL`, `--redis-url` or the run file). */
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/**
 * A Redis URL with any password (and username) replaced, for logs, metrics labels, `/status` and error
 * messages. Secrets are never printed: everything that shows a URL goes through this.
 */
export function redactRedisUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}
