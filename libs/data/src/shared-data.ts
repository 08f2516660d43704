import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { PairManifestLine } from './readers/manifest.js';

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

/**
 * The first `limit` MedPix 2.0 `dev` pairs of the shared data as manifest lines (the 288 px images), for tests that
 * prepare real image–caption shards; `text` may reword a caption (to make every one unique, say).
 */
export function medpixDevManifestLines(dataDir: string, limit: number, text: (caption: string, image: string) => string = (c) => c): PairManifestLine[] {
  const dir = join(dataDir, 'medpix2');
  return readFileSync(join(dir, 'descriptions_dev.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .slice(0, limit)
    .map((l) => {
      const r = JSON.parse(l) as { image: string; Description: { Caption: string } };
      return { id: r.image, image: join(dir, 'images_288', `${r.image}.jpg`), text: text(r.Description.Caption, r.image) };
    });
}
