/**
 * The worker's compute thread: holds the model (or the synthetic workload) and runs forward/backward off
 * the main event loop, so BullMQ keeps renewing job locks however long a micro-batch takes.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { RunConfig } from '@m3ae/protocol';
import { createComputer } from './gradient-computer.js';
import type { ThreadReply, ThreadRequest } from './threaded-computer.js';
import type { ComputeJob } from '../gradient-source.js';

if (!parentPort) throw new Error('compute-thread.js must run in a worker thread');
const port = parentPort;
const computer = await createComputer((workerData as { config: RunConfig }).config).catch((e: unknown) => {
  port.postMessage({ type: 'failed', message: e instanceof Error ? e.message : String(e) } satisfies ThreadReply);
  return undefined;
});
if (computer) {
  let params: Float32Array | undefined;
  port.on('message', (msg: ThreadRequest) => {
    if (msg.type !== 'compute') return;
    if (msg.params) params = msg.params;
    const job: ComputeJob = msg.job;
    const current = params;
    if (!current) {
      port.postMessage({ type: 'error', id: msg.id, message: 'no parameters were sent for this version' } satisfies ThreadReply);
      return;
    }
    computer.compute(job, current).then(
      (r) => port.postMessage({ type: 'result', id: msg.id, result: r } satisfies ThreadReply, [r.grads.buffer as ArrayBuffer]),
      (e: unknown) => port.postMessage({ type: 'error', id: msg.id, message: e instanceof Error ? `${e.message}` : String(e) } satisfies ThreadReply),
    );
  });
  port.postMessage({ type: 'ready', manifestHash: computer.manifestHash, paramCount: computer.paramCount, backend: computer.backend } satisfies ThreadReply);
}
