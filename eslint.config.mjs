import nx from '@nx/eslint-plugin';

export default [
  ...nx.configs['flat/base'],
  ...nx.configs['flat/typescript'],
  {
    ignores: ['**/dist', '**/out-tsc', '**/node_modules', '.nx/**', '**/vitest.config.*.timestamp*', 'tools/test/fixtures/**'],
  },
  {
    files: ['**/src/**/*.ts', '**/test/**/*.ts', '**/bin/**/*.js'],
    rules: {
      // Architecture by tags: apps run, libs compose, tools drive. libs/data never needs the model, and the
      // wire protocol stays free of both so that any process can speak it.
      '@nx/enforce-module-boundaries': [
        'error',
        {
          enforceBuildableLibDependency: true,
          allow: [],
          // The CLI loads heavy libraries (tfjs through @m3ae/model) lazily so that `m3ae --help` starts fast, and
          // imports them statically elsewhere; both are fine for these packages.
          checkDynamicDependenciesExceptions: ['@m3ae/model', '@m3ae/data', '@m3ae/protocol', '@m3ae/telemetry', '@m3ae/coordinator', '@m3ae/worker', '@m3ae/training', '@m3ae/tasks'],
          depConstraints: [
            { sourceTag: 'type:app', onlyDependOnLibsWithTags: ['type:lib'] },
            { sourceTag: 'type:lib', onlyDependOnLibsWithTags: ['type:lib'] },
            { sourceTag: 'type:tool', onlyDependOnLibsWithTags: ['type:lib', 'type:app'] },
            { sourceTag: 'scope:data', notDependOnLibsWithTags: ['scope:model', 'scope:coordinator', 'scope:worker'] },
            { sourceTag: 'scope:protocol', onlyDependOnLibsWithTags: ['scope:protocol'] },
            { sourceTag: 'scope:coordinator', notDependOnLibsWithTags: ['scope:worker'] },
            { sourceTag: 'scope:worker', notDependOnLibsWithTags: ['scope:coordinator'] },
            // The trainer composes data, model and tasks; it knows no transport but the protocol's shapes.
            { sourceTag: 'scope:training', notDependOnLibsWithTags: ['scope:coordinator', 'scope:worker', 'scope:telemetry'] },
          ],
        },
      ],
    },
  },
  {
    // Only asynchronous reads in the code that runs the model: the webgpu backend cannot read a tensor
    // synchronously under Node (its readSync needs OffscreenCanvas), and a synchronous read stalls the device
    // queue on any GPU backend. Tests may read synchronously.
    files: ['**/src/**/*.ts'],
    ignores: ['**/*.spec.ts', '**/*.test.ts'],
    rules: {
      'no-restricted-properties': [
        'error',
        ...['dataSync', 'arraySync', 'bufferSync'].map((property) => ({
          property,
          message: `${property}() throws on the webgpu backend under Node and stalls the GPU queue: read with await data() / array() / buffer() (flatten on the device, one read).`,
        })),
      ],
    },
  },
  {
    files: ['**/*.ts', '**/*.mts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
];
