import { readdirSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { registerWebGpuKernels } from './kernels/device.js';

/**
 * The one place that chooses the TensorFlow.js backend.
 *
 * Preference order: CUDA (`@tensorflow/tfjs-node-gpu`) → WebGPU (`@tensorflow/tfjs-backend-webgpu` on Dawn, the
 * npm package `webgpu`; a hardware adapter only) → native CPU (`@tensorflow/tfjs-node`) → WebAssembly
 * (`@tensorflow/tfjs-backend-wasm`, SIMD, single thread) → pure JavaScript (`cpu`). The two native packages are
 * optional dependencies: their install downloads libtensorflow and fails without access to Google's storage, in
 * which case npm leaves them out and we fall through, recording why. WebGPU runs on today's GPUs through Vulkan;
 * asked for explicitly (`--backend webgpu`, `M3AE_BACKEND=webgpu`) it also accepts a CPU adapter (Mesa's lavapipe:
 * slow but exact, how the tests run it without a GPU).
 */
export const BACKEND_NAMES = ['node-gpu', 'webgpu', 'node', 'wasm', 'cpu'] as const;
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
  /** The name tfjs registered it under (`tensorflow`, `webgpu`, `wasm`, `cpu`). */
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

async function activate(name: BackendName, explicit: boolean): Promise<string> {
  switch (name) {
    case 'webgpu': {
      // Auto: without a GPU device node no hardware adapter can exist; do not start Dawn (it loads a large
      // library and prints Vulkan warnings on CPU-only machines).
      if (!explicit && gpuDeviceNodes().length === 0) throw new BackendError('no GPU device (/dev/nvidia*, /dev/dri/renderD*, /dev/dxg)');
      const adapter = await webGpuAdapter();
      if (!adapter.ok) throw new BackendError(adapter.reason);
      if (adapter.info.cpu && !explicit) {
        throw new BackendError(`only a CPU adapter (${adapterName(adapter.info)}); it is used when asked for with --backend webgpu or M3AE_BACKEND=webgpu`);
      }
      const { webgpu_util } = await import('@tensorflow/tfjs-backend-webgpu');
      if (!(await tf.setBackend('webgpu'))) throw new BackendError(`the webgpu backend failed to initialise on ${adapterName(adapter.info)}`);
      // Reproducible results: tfjs-backend-webgpu would split the inner dimension of long products (the weight
      // gradients) over workgroups that add into the output with float atomics, in whatever order they finish.
      // The packed program computes each output element in one invocation, in a fixed order.
      tf.env().set('WEBGPU_MATMUL_PROGRAM_TYPE', webgpu_util.MatMulProgramType.MatMulPackedProgram);
      registerWebGpuKernels();
      return 'webgpu';
    }
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

// ---- WebGPU through Dawn (npm `webgpu`): the only place that sets up `navigator.gpu` ----

/** The little of the WebGPU API used here (the compiler options carry no DOM typings). */
interface GpuAdapterInfoLike {
  readonly vendor?: string;
  readonly architecture?: string;
  readonly device?: string;
  readonly description?: string;
  readonly isFallbackAdapter?: boolean;
}
interface GpuAdapterLike {
  readonly info?: GpuAdapterInfoLike;
  readonly isFallbackAdapter?: boolean;
  readonly features: Iterable<string>;
  readonly limits: object;
}
interface GpuLike {
  requestAdapter(options?: { powerPreference?: 'high-performance' | 'low-power' }): Promise<GpuAdapterLike | null>;
}

/** The adapter limits `m3ae doctor` reports (those that bound the model's buffers and kernels). */
export const WEBGPU_LIMIT_NAMES = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
] as const;

export interface WebGpuAdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A CPU (software) adapter such as Mesa's lavapipe: used only when WebGPU is asked for explicitly. */
  cpu: boolean;
  limits: Partial<Record<(typeof WEBGPU_LIMIT_NAMES)[number], number>>;
  features: string[];
}

export type WebGpuAdapterReport = { ok: true; info: WebGpuAdapterInfo } | { ok: false; reason: string };

/** Dawn reports lavapipe/llvmpipe/SwiftShader as ordinary adapters on some versions: recognise them by name too. */
const CPU_ADAPTER = /llvmpipe|lavapipe|swiftshader|software/i;

let gpu: GpuLike | undefined;

/** The device nodes a Vulkan GPU driver talks to (NVIDIA, DRM render nodes of Mesa's drivers, WSL). */
export function gpuDeviceNodes(): string[] {
  const list = (dir: string, pattern: RegExp): string[] => {
    try {
      return readdirSync(dir)
        .filter((n) => pattern.test(n))
        .map((n) => `${dir}/${n}`);
    } catch {
      return [];
    }
  };
  return [...list('/dev', /^(nvidia\d+|dxg)$/), ...list('/dev/dri', /^renderD\d+$/)];
}

/**
 * Dawn's `navigator.gpu`, made once. `DAWN_FLAGS` (comma-separated dawn.node flags, e.g. `backend=vulkan`) is
 * passed through. Must run before `@tensorflow/tfjs-backend-webgpu` is imported: it registers its backend only
 * when `navigator.gpu` exists, and asks it for a high-performance adapter as `webGpuAdapter` does.
 */
async function dawn(): Promise<GpuLike> {
  if (gpu) return gpu;
  const { create, globals } = (await import('webgpu')) as unknown as { create: (flags: string[]) => GpuLike; globals: object };
  Object.assign(globalThis, globals);
  const flags = (process.env['DAWN_FLAGS'] ?? '')
    .split(',')
    .map((f) => f.trim())
    .filter(Boolean);
  const made = create(flags);
  // Node ≥ 21 has a read-only `navigator` getter: define the property instead of assigning it.
  const nav = (globalThis as { navigator?: object }).navigator ?? {};
  Object.defineProperty(globalThis, 'navigator', { value: { ...nav, gpu: made, userAgent: 'node' }, configurable: true, writable: true });
  gpu = made;
  return made;
}

function adapterName(info: WebGpuAdapterInfo): string {
  const parts = [info.vendor, info.device || info.architecture, info.description].filter((x) => x !== '');
  return parts.length > 0 ? parts.join(', ') : 'an unnamed adapter';
}

/**
 * The WebGPU adapter TensorFlow.js would run on (high-performance preference), or why there is none: no
 * `webgpu` package, no Vulkan loader, no driver. Never throws.
 */
export async function webGpuAdapter(): Promise<WebGpuAdapterReport> {
  let adapter: GpuAdapterLike | null;
  try {
    adapter = await (await dawn()).requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    return { ok: false, reason: `WebGPU (Dawn, npm webgpu) could not start: ${errorText(e)}` };
  }
  if (!adapter) {
    return {
      ok: false,
      reason: 'Dawn found no WebGPU adapter (needs the Vulkan loader libvulkan1 and a Vulkan driver: the GPU vendor\'s, or Mesa ≥ 24 lavapipe with VK_DRIVER_FILES pointing at its ICD json)',
    };
  }
  const i = adapter.info ?? {};
  const limits: WebGpuAdapterInfo['limits'] = {};
  const all = adapter.limits as Record<string, unknown>;
  for (const k of WEBGPU_LIMIT_NAMES) {
    const v = all[k];
    if (typeof v === 'number') limits[k] = v;
  }
  const info: WebGpuAdapterInfo = {
    vendor: i.vendor ?? '',
    architecture: i.architecture ?? '',
    device: i.device ?? '',
    description: i.description ?? '',
    cpu: (i.isFallbackAdapter ?? adapter.isFallbackAdapter ?? false) || CPU_ADAPTER.test(`${i.vendor ?? ''} ${i.architecture ?? ''} ${i.device ?? ''} ${i.description ?? ''}`),
    limits,
    features: [...adapter.features].sort(),
  };
  return { ok: true, info };
}

/** One human-readable line for `m3ae doctor`: the adapter, its driver, key limits and features, or why none. */
export function describeWebGpuAdapter(report: WebGpuAdapterReport): string {
  if (!report.ok) return `webgpu: no adapter: ${report.reason}`;
  const a = report.info;
  const gib = (n: number | undefined): string => (n === undefined ? '?' : n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${Math.round(n / 2 ** 20)} MiB`);
  return (
    `webgpu: ${a.cpu ? 'CPU adapter (used only when forced)' : 'hardware adapter'} vendor ${a.vendor || '?'}, ` +
    `architecture ${a.architecture || '?'}, device ${a.device || '?'}, driver ${a.description || '?'}; ` +
    `max buffer ${gib(a.limits.maxBufferSize)}, max storage binding ${gib(a.limits.maxStorageBufferBindingSize)}, ` +
    `workgroup ${a.limits.maxComputeInvocationsPerWorkgroup ?? '?'} invocations / ${a.limits.maxComputeWorkgroupStorageSize ?? '?'} B shared; ` +
    `features ${a.features.length > 0 ? a.features.join(' ') : 'none'}`
  );
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
      const tfBackend = await activate(backend, requested !== 'auto');
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

/**
 * Whether the active backend multiplies transposed operands in place: webgpu's matmul programs index them, so
 * an explicit transpose is a wasted dispatch there. tfjs-wasm runs transposed products in a scalar loop (10–15×
 * slower than XNNPACK), so on the CPU backends the model's gradients transpose explicitly.
 */
export function nativeTransposedProducts(): boolean {
  return tf.getBackend() === 'webgpu';
}

/** The command-queue part of tfjs-backend-webgpu's backend (an asynchronous device). */
interface QueuedBackend {
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
  queue: { onSubmittedWorkDone(): Promise<void> };
}

function isQueued(b: object): b is QueuedBackend {
  const q = b as Partial<QueuedBackend>;
  return typeof q.submitQueue === 'function' && typeof q.ensureCommandEncoderReady === 'function' && q.queue !== undefined;
}

/**
 * Resolves when the device has finished every kernel enqueued so far: on an asynchronous device (webgpu) the
 * pending commands are submitted and the queue awaited; the CPU backends compute as they dispatch, so there is
 * nothing to wait for. For timing (`computeGradients`' `timing`), never needed for correctness.
 */
export async function deviceIdle(): Promise<void> {
  const b = tf.backend();
  if (!isQueued(b)) return;
  b.ensureCommandEncoderReady();
  b.endComputePassEncoder();
  b.submitQueue();
  await b.queue.onSubmittedWorkDone();
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
