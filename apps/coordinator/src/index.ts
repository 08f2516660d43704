export * from './redis-policy.js';
