export * from './backend.js';
export * from './safetensors/index.js';
