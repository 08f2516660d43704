export * from './answers.js';
export * from './splits.js';
export * from './tasks.js';
export * from './images.js';
export * from './batches.js';
export * from './baselines.js';
