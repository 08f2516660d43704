export * from './reconstruction-grid.js';
export * from './validation-grids.js';
export * from './checkpoint-tokenizer.js';
export * from './reconstruct.js';
export * from './fill.js';
// The test fixture (a phantom corpus, a tokenizer and a tiny checkpoint) is `@m3ae/qualitative/testing`, not here.
