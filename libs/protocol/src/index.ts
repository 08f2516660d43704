export * from './redis-url.js';
