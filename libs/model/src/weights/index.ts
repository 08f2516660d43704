export * from './bicubic.js';
export * from './mapping.js';
export * from './official.js';
export * from './source.js';
export { transpose2d } from './transforms.js';
export * from './reference.js';
