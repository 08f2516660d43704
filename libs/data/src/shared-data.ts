import { existsSync } from 'node:fs';
import { resolve } from 'node:path';

/**
 * Where the real medical datasets live for tests and benchmarks: `M3AE_SHARED_DATA`, else `../shared/data`
 * beside the workspace. Returns undefined when neither exists (tests then skip with a message).
 */
export function sharedDataDir(workspaceRoot: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const fromEnv = env['M3AE_SHARED_DATA'];
  if (fromEnv) return existsSync(fromEnv) ? resolve(fromEnv) : undefined;
  const beside = resolve(workspaceRoot, '..', 'shared', 'data');
  return existsSync(beside) ? beside : undefined;
}

/**
 * The shared data folder for a test file that needs it. When it is absent: in CI (`CI=true`) an error naming what
 * needs it and where it is looked for — CI must not pass by skipping the tests on real data; elsewhere a printed
 * reason, and undefined (the tests skip).
 */
export function sharedDataForTests(workspaceRoot: string, what: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const dir = sharedDataDir(workspaceRoot, env);
  if (dir) return dir;
  const where = env['M3AE_SHARED_DATA'] ? `M3AE_SHARED_DATA=${env['M3AE_SHARED_DATA']}` : `${resolve(workspaceRoot, '..', 'shared', 'data')} (or M3AE_SHARED_DATA)`;
  if (env['CI'] === 'true' || env['CI'] === '1') throw new Error(`${what} need the real datasets, and ${where} is absent; CI must provide them`);
  console.warn(`${what} skipped: ${where} is absent`);
  return undefined;
}
