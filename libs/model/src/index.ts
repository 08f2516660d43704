export * from './backend.js';
export * from './lavapipe.js';
export * from './safetensors/index.js';
export * from './config.js';
export * from './batch.js';
export * from './params.js';
export * from './checkpoint/index.js';
export * from './model.js';
export * from './pretrain.js';
export * from './synthetic.js';
export * from './adamw.js';
export * from './flops.js';
export * from './weights/index.js';
export * from './downstream/index.js';
// patchRowStarts stays internal: its tables are shared and must not be written to.
export { NORM_PIX_EPS, normalizePatches, patchify, patchStats, unnormalizePatches, unpatchify } from './patches.js';
export * from './reconstruct.js';
export * from './model-from-checkpoint.js';
export * from './fill.js';
