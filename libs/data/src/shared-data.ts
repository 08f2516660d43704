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
