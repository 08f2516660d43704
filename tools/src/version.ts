import { readFileSync } from 'node:fs';

/** The version of the `m3ae` program (the tools package's version). */
export function m3aeVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}
