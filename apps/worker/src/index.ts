export * from './identity.js';
export * from './training-worker.js';
