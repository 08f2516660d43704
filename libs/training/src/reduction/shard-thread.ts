/**
 * A shard thread of the coordinator: one shard's reducer (its gradient sum, its range of the AdamW update, its Redis
 * connections), answering the requests of a {@link ThreadShardHost} in the order they arrive.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { buildShard, serve, toFailure, type ShardInit, type ShardReply, type ShardRequest } from './shard-host.js';

if (!parentPort) throw new Error('shard-thread.js must run in a worker thread');
const port = parentPort;
try {
  const { reducer } = buildShard(workerData as ShardInit);
  port.on('message', (r: ShardRequest) => {
    serve(reducer, r).then(
      (value) => port.postMessage({ type: 'done', id: r.id, value } satisfies ShardReply),
      (e: unknown) => port.postMessage({ type: 'error', id: r.id, error: toFailure(e) } satisfies ShardReply),
    );
  });
  port.postMessage({ type: 'ready' } satisfies ShardReply);
} catch (e) {
  port.postMessage({ type: 'failed', message: e instanceof Error ? e.message : String(e) } satisfies ShardReply);
}
