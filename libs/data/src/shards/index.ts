export * from './format.js';
export * from './writer.js';
export * from './reader.js';
export * from './validation-samples.js';
export * from './shard-tokenizer.js';
