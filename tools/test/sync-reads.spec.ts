import { resolve } from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '../..');

/** The no-restricted-properties messages for `code` linted as the contents of a workspace file. */
async function lintAs(file: string, code: string): Promise<string[]> {
  const eslint = new ESLint({ cwd: root });
  const [result] = await eslint.lintText(code, { filePath: resolve(root, file) });
  return (result?.messages ?? []).filter((m) => m.ruleId === 'no-restricted-properties').map((m) => m.message);
}

const code = (read: string): string => `import * as tf from '@tensorflow/tfjs-core';\nexport const v = tf.scalar(1).${read}();\n`;

describe('only asynchronous tensor reads in source (eslint no-restricted-properties)', () => {
  it('refuses dataSync, arraySync and bufferSync in libs, apps and tools, naming the reason', async () => {
    for (const [file, read] of [
      ['libs/model/src/pretrain.ts', 'dataSync'],
      ['apps/worker/src/index.ts', 'arraySync'],
      ['tools/src/commands/fill.ts', 'bufferSync'],
    ] as const) {
      const errors = await lintAs(file, code(read));
      expect(errors, `${read} in ${file}`).toHaveLength(1);
      expect(errors[0]).toMatch(new RegExp(`${read}\\(\\) throws on the webgpu backend under Node.*await`));
    }
  });

  it('allows the asynchronous reads, and synchronous ones in tests', async () => {
    expect(await lintAs('libs/model/src/pretrain.ts', code('data'))).toEqual([]);
    expect(await lintAs('libs/model/src/pretrain.spec.ts', code('dataSync'))).toEqual([]);
  });
});
