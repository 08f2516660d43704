export * from './errors.js';
export * from './normalize.js';
export * from './random-resized-crop.js';
export * from './image.js';
export * from './grid.js';
