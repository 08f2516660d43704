export * from './checkpoint.js';
export * from './directory.js';
export * from './inspect.js';
