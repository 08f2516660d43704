export * from './gradient-computer.js';
export * from './identity.js';
export * from './model-computer.js';
export * from './synthetic-computer.js';
export * from './threaded-computer.js';
export * from './training-worker.js';
export * from './task-computer.js';
