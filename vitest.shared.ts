import { basename, join } from 'node:path';
import { defineConfig, type ViteUserConfig } from 'vitest/config';

/**
 * One vitest configuration for every project. Sources of other workspace packages are resolved
 * through the `@m3ae/source` export condition, so tests never need a build of their dependencies —
 * except tests that spawn real processes (`m3ae …`), whose Nx `test` target depends on `build`.
 * When M3AE_VITEST_REPORT_DIR is set (by .ci/run), each project also writes a JSON report there.
 */
export function projectVitestConfig(projectDir: string): ViteUserConfig {
  const name = basename(projectDir);
  const reportDir = process.env['M3AE_VITEST_REPORT_DIR'];
  return defineConfig({
    root: projectDir,
    cacheDir: join(import.meta.dirname, 'node_modules/.vite', name),
    resolve: { conditions: ['@m3ae/source', 'node', 'import', 'default'] },
    ssr: { resolve: { conditions: ['@m3ae/source', 'node', 'import', 'default'], externalConditions: ['@m3ae/source'] } },
    test: {
      name,
      environment: 'node',
      include: ['src/**/*.spec.ts', 'test/**/*.spec.ts'],
      testTimeout: 120_000,
      hookTimeout: 120_000,
      pool: 'forks',
      reporters: reportDir ? ['default', ['json', { outputFile: join(reportDir, `${name}.json`) }]] : ['default'],
    },
  });
}
