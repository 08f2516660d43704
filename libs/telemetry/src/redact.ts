/** What replaces a secret in logs, `/status` and error texts. */
export const REDACTED = '[REDACTED]';

/**
 * Keys whose values are secrets wherever they appear in a log record (pino `redact` paths, matched at the
 * top level and up to two levels down: `{ redis: { password } }`, `{ config: { redis: { password } } }`).
 */
export const SECRET_KEYS = [
  'password',
  'pass',
  'redisPassword',
  'token',
  'accessToken',
  'refreshToken',
  'apiKey',
  'secret',
  'authorization',
  'Authorization',
  'cookie',
] as const;

/** pino `redact.paths` for {@link SECRET_KEYS}, plus the usual HTTP header spots. */
export function secretRedactPaths(extra: readonly string[] = []): string[] {
  const paths: string[] = [];
  for (const key of SECRET_KEYS) paths.push(key, `*.${key}`, `*.*.${key}`);
  paths.push('req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'headers.cookie');
  return [...paths, ...extra];
}

// `scheme://user:password@host`, `scheme://:password@host`, and for Redis `redis://password@host` too.
const URL_WITH_CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s/@:]*)(?::([^\s/@]*))?@/gi;
const BEARER = /\b(bearer\s+|token\s*[=:]\s*)([A-Za-z0-9._~+/-]{8,}=*)/gi;
const PASSWORD_ASSIGN = /\b(password\s*[=:]\s*|passwd\s*[=:]\s*|requirepass\s+)("[^"]*"|'[^']*'|[^\s&,;]+)/gi;

/**
 * Removes credentials from free text: the password part of any URL with userinfo, bearer tokens and
 * `password=…` assignments. Applied to every log string, error message and `/status` document, so that a
 * Redis URL with its password or a token never reaches a log line, whatever code path printed it.
 */
export function scrubSecrets(text: string): string {
  if (!text) return text;
  return text
    .replace(URL_WITH_CREDENTIALS, (match: string, scheme: string, user: string, password: string | undefined) => {
      if (password !== undefined) return `${scheme}${user}:${REDACTED}@`;
      // A bare `redis://secret@host` is a password; `ssh://git@host` is only a user name.
      return user && /^rediss?:/i.test(scheme) ? `${scheme}${REDACTED}@` : match;
    })
    .replace(BEARER, (_m: string, prefix: string) => `${prefix}${REDACTED}`)
    .replace(PASSWORD_ASSIGN, (_m: string, prefix: string) => `${prefix}${REDACTED}`);
}

const SECRET_KEY_SET = new Set<string>(SECRET_KEYS.map((k) => k.toLowerCase()));

/**
 * A deep copy of plain objects and arrays with every string scrubbed and every secret-named key replaced.
 * Other objects (Errors, Buffers, class instances) are returned as they are: pino's serializers handle them.
 */
export function scrubValue<T>(value: T, depth = 0): T {
  if (typeof value === 'string') return scrubSecrets(value) as T;
  if (depth > 8 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => scrubValue(v, depth + 1)) as T;
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    out[k] = SECRET_KEY_SET.has(k.toLowerCase()) && v !== undefined && v !== null && v !== '' ? REDACTED : scrubValue(v, depth + 1);
  }
  return out as T;
}
