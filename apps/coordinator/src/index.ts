export * from './coordinator.js';
export * from './model-setup.js';
export * from './optimizer.js';
export * from './redis-policy.js';
export * from './setups.js';
export * from './step-reducer.js';
export * from './training-setup.js';
export * from './task-setup.js';
