export * from './load.js';
export * from './corpus.js';
export * from './train.js';
