export * from './heartbeats.js';
export * from './run-history.js';
export * from './run-page-handler.js';
