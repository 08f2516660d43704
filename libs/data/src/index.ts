export * from './shared-data.js';
export * from './rng.js';
export * from './batch.js';
export * from './skip-log.js';
export * from './readers/index.js';
export * from './tokenizer/index.js';
export * from './images/index.js';
