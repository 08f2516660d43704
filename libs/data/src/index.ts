export * from './shared-data.js';
export * from './rng.js';
export * from './batch.js';
