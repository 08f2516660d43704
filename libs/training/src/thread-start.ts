import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

/**
 * The compiled entry `relative` (to the library's source root, e.g. `compute/compute-thread.js`) for a caller one
 * directory below that root (`from`: its `import.meta.url`): next to the caller when it runs compiled, in the
 * library's `dist/` when it runs from TypeScript sources (tests; the library must be built).
 */
export function threadEntry(from: string, relative: string): string {
  return fileURLToPath(new URL(from.endsWith('.ts') ? `../../dist/${relative}` : `../${relative}`, from));
}

/** Refuses a compiled entry that is not there, saying how to build it. */
export function requireEntry(path: string, what: string): void {
  if (!existsSync(path)) throw new Error(`${what} ${path} does not exist (build @m3ae/training first: npx nx run @m3ae/training:build)`);
}

/**
 * This process's Node options for a thread or child running compiled code: without the resolution conditions a test
 * runner may have set (`@m3ae/source` would point package imports at TypeScript sources).
 */
export function compiledExecArgv(): string[] {
  return process.execArgv.filter((a, i, all) => !a.startsWith('--conditions') && all[i - 1] !== '--conditions' && !a.startsWith('-C'));
}

/** The first message a thread of this library posts: ready (with what it reports), or failed with the cause. */
type Hello<R> = ({ type: 'ready' } & R) | { type: 'failed'; message: string } | { type: string };

/**
 * Starts a `worker_threads` thread on a compiled entry and waits until it says it is ready (resolving with that
 * message) — or failed, errored or exited (rejecting with the cause; the thread is terminated). `what` names the
 * thread in errors.
 */
export async function startThread<R extends object>(path: string, workerData: unknown, what: string): Promise<{ thread: Worker; ready: { type: 'ready' } & R }> {
  requireEntry(path, what);
  const thread = new Worker(path, { workerData, execArgv: compiledExecArgv() });
  let onMessage: ((msg: Hello<R>) => void) | undefined;
  let onError: ((e: Error) => void) | undefined;
  let onExit: ((code: number) => void) | undefined;
  try {
    const ready = await new Promise<{ type: 'ready' } & R>((resolve, reject) => {
      onMessage = (msg: Hello<R>): void => {
        if (msg.type === 'ready') resolve(msg as { type: 'ready' } & R);
        else if (msg.type === 'failed') reject(new Error(`${what}: ${(msg as { message: string }).message}`));
      };
      onError = reject;
      onExit = (code: number): void => reject(new Error(`${what} exited with code ${code} before it was ready`));
      thread.on('message', onMessage);
      thread.once('error', onError);
      thread.once('exit', onExit);
    });
    return { thread, ready };
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
