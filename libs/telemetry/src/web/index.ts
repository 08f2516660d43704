export * from './heartbeats.js';
export * from './run-snapshot.js';
export * from './recent-steps.js';
export * from './run-history.js';
export * from './run-page-handler.js';
