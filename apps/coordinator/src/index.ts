export * from './coordinator.js';
export * from './optimizer.js';
export * from './redis-policy.js';
export * from './step-reducer.js';
export * from './training-setup.js';
export * from './setups.js';
