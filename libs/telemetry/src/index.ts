export * from './base-metrics.js';
export * from './coordinator-metrics.js';
export * from './exposition.js';
export * from './logger.js';
export * from './redact.js';
export * from './server.js';
export * from './worker-metrics.js';
export * from './web/index.js';
