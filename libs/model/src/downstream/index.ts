export * from './tasks.js';
export * from './heads.js';
export * from './downstream-model.js';
export * from './objective.js';
export * from './metrics.js';
