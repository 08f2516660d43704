import { resolve } from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '../..');

/** Lints `code` as if it were the contents of an existing file of the workspace. */
async function lintAs(file: string, code: string): Promise<string[]> {
  const eslint = new ESLint({ cwd: root });
  const [result] = await eslint.lintText(code, { filePath: resolve(root, file) });
  return (result?.messages ?? []).filter((m) => m.ruleId === '@nx/enforce-module-boundaries').map((m) => m.message);
}

describe('module boundaries (eslint, @nx/enforce-module-boundaries)', () => {
  it('forbids libs/data importing libs/model', async () => {
    const errors = await lintAs('libs/data/src/index.ts', "export { chooseBackend } from '@m3ae/model';\n");
    expect(errors.join('\n')).toMatch(/scope:data.*scope:model|not allowed|cannot depend/i);
  });

  it('forbids a lib importing an app', async () => {
    const errors = await lintAs('libs/model/src/index.ts', "export { workerId } from '@m3ae/worker';\n");
    expect(errors.length).toBeGreaterThan(0);
  });

  it('forbids the protocol lib depending on the model', async () => {
    const errors = await lintAs('libs/protocol/src/index.ts', "export { chooseBackend } from '@m3ae/model';\n");
    expect(errors.length).toBeGreaterThan(0);
  });

  it('allows an app importing libs and the tools importing apps', async () => {
    expect(await lintAs('apps/worker/src/index.ts', "export { chooseBackend } from '@m3ae/model';\n")).toEqual([]);
    expect(await lintAs('tools/src/index.ts', "export { workerId } from '@m3ae/worker';\n")).toEqual([]);
  });
});
