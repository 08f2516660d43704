import { InvalidArgumentError } from 'commander';
import { BACKEND_NAMES } from '@m3ae/model';

/**
 * Parsers of command-line flag values for commander's `.option(flags, description, parser)`: each returns the
 * parsed value or throws an `InvalidArgumentError` naming the flag, what it must be and what it got.
 */

export function positiveInt(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got ${JSON.stringify(v)}`);
    return n;
  };
}

export function nonNegativeInt(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be an integer >= 0, got ${JSON.stringify(v)}`);
    return n;
  };
}

/** An integer from `min` to `max` (inclusive). */
export function intInRange(name: string, min: number, max = Number.MAX_SAFE_INTEGER): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!(v.trim() !== '' && Number.isInteger(n) && n >= min && n <= max)) throw new InvalidArgumentError(`${name} must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
    return n;
  };
}

export function positiveNumber(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive number, got ${JSON.stringify(v)}`);
    return n;
  };
}

export function nonNegativeNumber(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!(v.trim() !== '' && Number.isFinite(n) && n >= 0)) throw new InvalidArgumentError(`${name} must be a number >= 0, got ${JSON.stringify(v)}`);
    return n;
  };
}

/** A number in [0, 1); an empty value is refused (Number('') would be 0). */
export function fraction(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!(v.trim() !== '' && Number.isFinite(n) && n >= 0 && n < 1)) throw new InvalidArgumentError(`${name} must be a number in [0, 1), got ${JSON.stringify(v)}`);
    return n;
  };
}

export function oneOf<T extends string>(name: string, allowed: readonly T[]): (v: string) => T {
  return (v) => {
    if (!(allowed as readonly string[]).includes(v)) throw new InvalidArgumentError(`${name} must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
    return v as T;
  };
}

/** A repeatable flag: every value, in order. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** The help of every `--backend` flag: the names the one chooser takes (`@m3ae/model`'s `chooseBackend`). */
export const BACKEND_HELP = `TensorFlow.js backend: auto (the first that works of ${BACKEND_NAMES.join(' → ')}; webgpu only on a hardware adapter) or one of them (default M3AE_BACKEND or auto)`;
