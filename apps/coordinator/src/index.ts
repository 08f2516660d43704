export * from './coordinator.js';
export * from './redis-policy.js';
export * from './redis-source.js';
