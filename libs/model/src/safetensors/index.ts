export * from './dtype.js';
export * from './errors.js';
export * from './convert.js';
export { MAX_HEADER_BYTES, METADATA_KEY, parseHeader, checkHeaderLength, type SafetensorsHeader, type TensorInfo } from './header.js';
export * from './reader.js';
export * from './writer.js';
