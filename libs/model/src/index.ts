export * from './backend.js';
export * from './safetensors/index.js';
export * from './config.js';
export * from './batch.js';
export * from './params.js';
export * from './checkpoint/index.js';
