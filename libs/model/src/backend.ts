import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';

/**
 * The one place that chooses the TensorFlow.js backend.
 *
 * Preference order: CUDA (`@tensorflow/tfjs-node-gpu`) → native CPU (`@tensorflow/tfjs-node`) → WebAssembly
 * (`@tensorflow/tfjs-backend-wasm`, SIMD, single thread) → pure JavaScript (`cpu`). The two native packages are
 * optional dependencies: their install downloads libtensorflow and fails without access to Google's storage, in
 * which case npm leaves them out and we fall through, recording why.
 */
export const BACKEND_NAMES = ['node-gpu', 'node', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

export interface BackendAttempt {
  readonly backend: BackendName;
  readonly ok: boolean;
  /** Why this backend was not used (absent when it was chosen). */
  readonly reason?: string;
}

export interface BackendChoice {
  /** Our name for the chosen backend. */
  readonly name: BackendName;
  /** The name tfjs registered it under (`tensorflow`, `wasm`, `cpu`). */
  readonly tfBackend: string;
  /** How the choice was made: `auto`, or the source of an override. */
  readonly requestedBy: 'auto' | 'flag' | 'env';
  /** Every candidate tried, in order, with the reason it was passed over. */
  readonly attempts: readonly BackendAttempt[];
}

export interface ChooseBackendOptions {
  /** An explicit backend (`--backend`); beats `M3AE_BACKEND`. `auto` or undefined: the preference order. */
  readonly backend?: string | undefined;
  /** Environment to read `M3AE_BACKEND` from. @defaultValue process.env */
  readonly env?: NodeJS.ProcessEnv;
}

export class BackendError extends Error {
  override readonly name = 'BackendError';
}

function errorText(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split('\n')[0] ?? msg;
}

async function activate(name: BackendName): Promise<string> {
  switch (name) {
    case 'node-gpu': {
      await import('@tensorflow/tfjs-node-gpu' as string);
      if (!(await tf.setBackend('tensorflow'))) throw new BackendError('tfjs-node-gpu loaded but the tensorflow backend failed to initialise');
      return 'tensorflow';
    }
    case 'node': {
      await import('@tensorflow/tfjs-node' as string);
      if (!(await tf.setBackend('tensorflow'))) throw new BackendError('tfjs-node loaded but the tensorflow backend failed to initialise');
      return 'tensorflow';
    }
    case 'wasm': {
      await import('@tensorflow/tfjs-backend-wasm');
      if (!(await tf.setBackend('wasm'))) throw new BackendError('the wasm backend failed to initialise');
      return 'wasm';
    }
    case 'cpu': {
      if (!(await tf.setBackend('cpu'))) throw new BackendError('the cpu backend failed to initialise');
      return 'cpu';
    }
  }
}

function parseRequest(value: string, field: string): BackendName | 'auto' {
  const v = value.trim().toLowerCase();
  if (v === 'auto' || v === '') return 'auto';
  if ((BACKEND_NAMES as readonly string[]).includes(v)) return v as BackendName;
  throw new BackendError(`${field}: unknown backend ${JSON.stringify(value)}; expected one of auto, ${BACKEND_NAMES.join(', ')}`);
}

let current: BackendChoice | undefined;

/**
 * Chooses and activates a backend once per process (later calls return the first choice unless a different
 * explicit backend is asked for). A forced backend that cannot start is an error, never a silent fallback.
 */
export async function chooseBackend(options: ChooseBackendOptions = {}): Promise<BackendChoice> {
  const env = options.env ?? process.env;
  let requested: BackendName | 'auto' = 'auto';
  let requestedBy: BackendChoice['requestedBy'] = 'auto';
  if (options.backend !== undefined && options.backend !== 'auto') {
    requested = parseRequest(options.backend, '--backend');
    requestedBy = 'flag';
  } else if (env['M3AE_BACKEND'] !== undefined && env['M3AE_BACKEND'] !== '') {
    requested = parseRequest(env['M3AE_BACKEND'], 'M3AE_BACKEND');
    requestedBy = requested === 'auto' ? 'auto' : 'env';
  }
  if (current && (requested === 'auto' || requested === current.name)) return current;

  const candidates: readonly BackendName[] = requested === 'auto' ? BACKEND_NAMES : [requested];
  const attempts: BackendAttempt[] = [];
  for (const backend of candidates) {
    try {
      const tfBackend = await activate(backend);
      attempts.push({ backend, ok: true });
      current = { name: backend, tfBackend, requestedBy, attempts };
      return current;
    } catch (e) {
      attempts.push({ backend, ok: false, reason: errorText(e) });
    }
  }
  const detail = attempts.map((a) => `${a.backend}: ${a.reason ?? 'ok'}`).join('; ');
  throw new BackendError(`no TensorFlow.js backend could be started (${detail})`);
}

/** The backend chosen so far in this process, if any. */
export function currentBackend(): BackendChoice | undefined {
  return current;
}

/** One human-readable line: the choice and why the faster ones were passed over. */
export function describeBackend(choice: BackendChoice): string {
  const skipped = choice.attempts.filter((a) => !a.ok).map((a) => `${a.backend} unavailable (${a.reason ?? 'unknown'})`);
  const how = choice.requestedBy === 'auto' ? 'auto' : `forced by ${choice.requestedBy === 'flag' ? '--backend' : 'M3AE_BACKEND'}`;
  return `backend ${choice.name} [${how}]` + (skipped.length ? `; ${skipped.join('; ')}` : '');
}
