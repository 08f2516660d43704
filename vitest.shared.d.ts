import { type ViteUserConfig } from 'vitest/config';
/**
 * One vitest configuration for every project. Sources of other workspace packages are resolved
 * through the `@m3ae/source` export condition, so tests never need a build of their dependencies —
 * except tests that spawn real processes (`m3ae …`), whose Nx `test` target depends on `build`.
 * When M3AE_VITEST_REPORT_DIR is set (by .ci/run), each project also writes a JSON report there.
 */
export declare function projectVitestConfig(projectDir: string): ViteUserConfig;
//# sourceMappingURL=vitest.shared.d.ts.map