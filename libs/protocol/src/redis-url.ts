/** The Redis every process talks to unless told otherwise (`REDIS_URL`, `--redis-url` or the run file). */
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

// `scheme://userinfo@rest`: the userinfo runs to the LAST `@`, so a password may hold `@`, `/`, `:`, `#`, `%`,
// whitespace or any other character (a WHATWG URL parser would end it at `/`, `?` or `#` and show the rest).
const WITH_USERINFO = /^(\s*[a-z][a-z0-9+.-]*:?\/\/)([\s\S]*)@([^@]*)$/i;

/**
 * A Redis URL with any password replaced by `***` (a user name is kept), for logs, metrics labels, `/status`
 * and error messages. Secrets are never printed: everything that shows a URL goes through this. Works on
 * text, not on a parsed URL, so that a password with any characters, or a URL that does not parse, is hidden.
 * A bare `redis://secret@host` is a password (Redis' `AUTH secret`).
 */
export function redactRedisUrl(url: string): string {
  const m = WITH_USERINFO.exec(url);
  if (!m) return url;
  const [, scheme, userinfo, rest] = m as unknown as [string, string, string, string];
  const colon = userinfo.indexOf(':');
  return colon < 0 ? `${scheme}***@${rest}` : `${scheme}${userinfo.slice(0, colon)}:***@${rest}`;
}
