export * from './task-data.js';
export * from './finetune.js';
export * from './selection.js';
export * from './run-config.js';
export * from './phantom-probe.js';
export * from './pretrain-evaluation.js';
