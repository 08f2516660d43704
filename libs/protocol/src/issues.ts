import type { z } from 'zod';
import { redactRedisUrl } from './redis-url.js';

/** Paths whose values are secrets: shown as `***` in every error message. */
const SECRET_FIELD = /(password|secret|token)$/i;

function fieldName(path: readonly PropertyKey[]): string {
  return path.length === 0 ? '(root)' : path.map(String).join('.');
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let node = root;
  for (const p of path) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<PropertyKey, unknown>)[p];
  }
  return node;
}

function showValue(path: readonly PropertyKey[], value: unknown): string {
  const last = String(path[path.length - 1] ?? '');
  if (SECRET_FIELD.test(last)) return '"***"';
  if (value === undefined) return 'nothing';
  // Any URL with credentials (redis://user:pass@…, also misspelt schemes, any character in the password)
  // shows `***` for the password.
  const redact = (v: unknown): unknown => (typeof v === 'string' ? redactRedisUrl(v) : v);
  const s = JSON.stringify(Array.isArray(value) ? value.map(redact) : redact(value)).replace(/\/\/([^@/\s:"]*):[^@/\s"]*@/g, '//$1:***@');
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * One line per zod issue, naming the field, the value received and what was expected, e.g.
 * `training.steps = "abc" (from M3AE_STEPS): expected number, received string`.
 * `sources` maps a dotted field to where its value came from (an environment variable, a flag).
 */
export function formatIssues(issues: readonly z.core.$ZodIssue[], sources: ReadonlyMap<string, string> = new Map(), root?: unknown): string[] {
  return issues.map((issue) => {
    const path = issue.path;
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((k) => `${fieldName([...path, k])}: unknown field; remove it or check its spelling`).join('; ');
    }
    const field = fieldName(path);
    const source = sources.get(field);
    const expected = issue.message.replace(/^Invalid (input|option): /, '');
    // A refinement reports the object it checked; show the field's own value instead.
    const value = issue.code === 'custom' && root !== undefined ? valueAt(root, path) : issue.input;
    return `${field} = ${showValue(path, value)}${source ? ` (from ${source})` : ''}: ${expected}`;
  });
}
