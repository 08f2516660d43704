/**
 * A reducer process of the coordinator (`coordinator.reducers: processes`): one shard's reducer holding its range of
 * the parameters and moments, answering a {@link ProcessShardHost} over IPC. It exits when its coordinator does.
 */
import { buildShard, serve, toFailure, type ShardInit, type ShardReply, type ShardRequest } from './shard-host.js';
import type { ShardReducer } from './shard-reducer.js';

if (!process.send) throw new Error('shard-process.js must run as a forked child with an IPC channel');
const send = (msg: ShardReply): void => void process.send?.(msg);
let reducer: ShardReducer | undefined;
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
process.on('message', (msg: { type: 'init'; init: ShardInit } | ShardRequest) => {
  if (msg.type === 'init') {
    try {
      reducer = buildShard(msg.init).reducer;
      send({ type: 'ready' });
    } catch (e) {
      send({ type: 'failed', message: e instanceof Error ? e.message : String(e) });
    }
    return;
  }
  const r = msg;
  if (!reducer) return send({ type: 'error', id: r.id, error: { message: 'the reducer process was not initialised' } });
  serve(reducer, r).then(
    (value) => send({ type: 'done', id: r.id, value }),
    (e: unknown) => send({ type: 'error', id: r.id, error: toFailure(e) }),
  );
});
