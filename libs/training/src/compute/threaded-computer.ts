import type { Worker } from 'node:worker_threads';
import type { RunConfig } from '@m3ae/protocol';
import type { GradientComputer, MicroBatchResult } from './gradient-computer.js';
import type { ComputeJob } from '../gradient-source.js';
import { startThread, threadEntry } from '../thread-start.js';

export type ThreadRequest = { type: 'compute'; id: number; job: ComputeJob; params?: Float32Array };
export type ThreadReply =
  | { type: 'ready'; manifestHash: string; paramCount: number; backend: string }
  | { type: 'failed'; message: string }
  | { type: 'result'; id: number; result: MicroBatchResult }
  | { type: 'error'; id: number; message: string };

/** The compiled thread entry (`dist/compute/compute-thread.js`). */
export function computeThreadPath(): string {
  return threadEntry(import.meta.url, 'compute/compute-thread.js');
}

/**
 * A {@link GradientComputer} whose work runs in a persistent `worker_threads` thread that holds the model.
 * Parameters are shared, not copied: they live in a SharedArrayBuffer the thread reads, sent once per
 * version. Gradients come back as transferred buffers.
 */
export class ThreadedComputer implements GradientComputer {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: MicroBatchResult) => void; reject: (e: Error) => void }>();
  private sentParams: Float32Array | undefined;
  private sentVersion = -1;
  private exited: Error | undefined;

  private constructor(
    private readonly thread: Worker,
    readonly manifestHash: string,
    readonly paramCount: number,
    readonly backend: string,
  ) {
    thread.on('message', (msg: ThreadReply) => {
      if (msg.type !== 'result' && msg.type !== 'error') return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.type === 'result') p.resolve(msg.result);
      else p.reject(new Error(msg.message));
    });
    const fail = (e: Error): void => {
      this.exited = e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    thread.on('error', fail);
    thread.on('exit', (code) => fail(new Error(`compute thread exited with code ${code}`)));
  }

  /** Starts the thread and waits until it has built its computer (model, backend). */
  static async start(config: RunConfig, threadPath = computeThreadPath()): Promise<ThreadedComputer> {
    const { thread, ready } = await startThread<Omit<Extract<ThreadReply, { type: 'ready' }>, 'type'>>(threadPath, { config }, 'compute thread');
    return new ThreadedComputer(thread, ready.manifestHash, ready.paramCount, ready.backend);
  }

  async compute(job: ComputeJob, params: Float32Array): Promise<MicroBatchResult> {
    if (this.exited) throw this.exited;
    const id = this.nextId++;
    const fresh = params !== this.sentParams || job.version !== this.sentVersion;
    if (fresh) {
      this.sentParams = params;
      this.sentVersion = job.version;
    }
    const result = new Promise<MicroBatchResult>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    // A SharedArrayBuffer-backed array is shared with the thread; any other is copied once per version.
    this.thread.postMessage({ type: 'compute', id, job, ...(fresh ? { params } : {}) } satisfies ThreadRequest);
    return await result;
  }

  async dispose(): Promise<void> {
    await this.thread.terminate();
  }
}
