import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { RunConfig } from '@m3ae/protocol';
import type { GradientComputer, MicroBatchResult } from './gradient-computer.js';
import type { ComputeJob } from '../gradient-source.js';

export type ThreadRequest = { type: 'compute'; id: number; job: ComputeJob; params?: Float32Array };
export type ThreadReply =
  | { type: 'ready'; manifestHash: string; paramCount: number; backend: string }
  | { type: 'failed'; message: string }
  | { type: 'result'; id: number; result: MicroBatchResult }
  | { type: 'error'; id: number; message: string };

/**
 * The compiled thread entry (`dist/compute/compute-thread.js`): next to this module when it runs compiled, in the
 * library's `dist/` when it runs from TypeScript sources (tests; the library must be built).
 */
export function computeThreadPath(): string {
  const here = import.meta.url;
  return fileURLToPath(here.endsWith('.ts') ? new URL('../../dist/compute/compute-thread.js', here) : new URL('./compute-thread.js', here));
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
    if (!existsSync(threadPath)) throw new Error(`compute thread ${threadPath} does not exist (build @m3ae/training first: npx nx run @m3ae/training:build)`);
    // The thread runs compiled code: drop resolution conditions a test runner may have set (`@m3ae/source`
    // would point package imports at TypeScript sources).
    const execArgv = process.execArgv.filter((a, i, all) => !a.startsWith('--conditions') && all[i - 1] !== '--conditions' && !a.startsWith('-C'));
    const thread = new Worker(threadPath, { workerData: { config }, execArgv });
    let onMessage: ((msg: ThreadReply) => void) | undefined;
    let onError: ((e: Error) => void) | undefined;
    let onExit: ((code: number) => void) | undefined;
    try {
      const ready = await new Promise<Extract<ThreadReply, { type: 'ready' }>>((resolve, reject) => {
        onMessage = (msg: ThreadReply): void => {
          if (msg.type === 'ready') resolve(msg);
          else if (msg.type === 'failed') reject(new Error(msg.message));
        };
        onError = reject;
        onExit = (code: number): void => reject(new Error(`compute thread exited with code ${code} before it was ready`));
        thread.on('message', onMessage);
        thread.once('error', onError);
        thread.once('exit', onExit);
      });
      return new ThreadedComputer(thread, ready.manifestHash, ready.paramCount, ready.backend);
    } catch (e) {
      await thread.terminate();
      throw e;
    } finally {
      // Only our own listeners: Worker keeps internal ones (they ref its message port).
      if (onMessage) thread.off('message', onMessage);
      if (onError) thread.off('error', onError);
      if (onExit) thread.off('exit', onExit);
    }
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
