export * from './attributes.js';
export * from './render.js';
export * from './corpus.js';
