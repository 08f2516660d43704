import { ProtocolError } from './errors.js';

/**
 * Elements per gradient block: the gradient norm is summed block by block (each block's squares in element order,
 * then the blocks in order), and shard boundaries fall on block boundaries. So the norm — and every parameter bit —
 * is the same whatever the number of shards that computed it. 2^16 values: 256 KiB of f32, small next to any shard.
 */
export const GRADIENT_BLOCK = 65_536;

/** Most shards a run may cut its parameter vector into (one reducer thread each). */
export const MAX_SHARDS = 64;

/** One shard: elements [start, end) of the flat parameter (and gradient) vector. */
export interface ShardRange {
  readonly index: number;
  readonly start: number;
  readonly end: number;
}

/**
 * The `shards` contiguous ranges of a vector of `elements` values (`training.shards`): whole gradient blocks, spread as
 * evenly as the blocks allow (the first shards take one block more), the last shard ending at `elements`. Workers
 * cut their gradients and read the parameters by these ranges; each shard is reduced and updated on its own.
 */
export function shardRanges(elements: number, shards: number): ShardRange[] {
  if (!(Number.isInteger(elements) && elements > 0)) throw new ProtocolError(`shardRanges: elements = ${elements}; expected a positive integer`);
  if (!(Number.isInteger(shards) && shards >= 1 && shards <= MAX_SHARDS)) throw new ProtocolError(`training.shards = ${shards}: expected an integer from 1 to ${MAX_SHARDS}`);
  const blocks = Math.ceil(elements / GRADIENT_BLOCK);
  if (shards > blocks) {
    throw new ProtocolError(`training.shards = ${shards}: the model has ${elements} parameters, ${blocks} block(s) of ${GRADIENT_BLOCK}; expected at most ${blocks} shard(s)`);
  }
  const base = Math.floor(blocks / shards);
  const extra = blocks % shards;
  const out: ShardRange[] = [];
  let block = 0;
  for (let s = 0; s < shards; s++) {
    const n = base + (s < extra ? 1 : 0);
    out.push({ index: s, start: block * GRADIENT_BLOCK, end: Math.min(elements, (block + n) * GRADIENT_BLOCK) });
    block += n;
  }
  return out;
}
