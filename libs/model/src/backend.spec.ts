import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { BACKEND_NAMES, chooseBackend, describeBackend } from './backend.js';
import { useLavapipe } from './lavapipe.js';

describe('chooseBackend', () => {
  it('takes the first backend of the preference order that starts, and says why each one before it did not', async () => {
    // The rule, not this machine: here the native packages are absent and wasm is chosen; on a GPU node, node-gpu.
    const choice = await chooseBackend({ env: {} });
    const tried = choice.attempts.map((a) => a.backend);
    expect(tried).toEqual(BACKEND_NAMES.slice(0, tried.length));
    expect(tried[tried.length - 1]).toBe(choice.name);
    expect(choice.attempts[choice.attempts.length - 1]?.ok).toBe(true);
    expect(choice.attempts.slice(0, -1).every((a) => !a.ok && (a.reason ?? '').length > 0)).toBe(true);
    const tfjsName: Record<string, string> = { 'node-gpu': 'tensorflow', webgpu: 'webgpu', node: 'tensorflow', wasm: 'wasm', cpu: 'cpu' };
    // webgpu is passed over without a hardware adapter (none, or only a CPU one such as lavapipe), and says so.
    const webgpu = choice.attempts.find((a) => a.backend === 'webgpu');
    if (webgpu && !webgpu.ok) expect(webgpu.reason).toMatch(/no GPU device|no WebGPU adapter|only a CPU adapter|could not start/);
    expect(tf.getBackend()).toBe(tfjsName[choice.name]);
    const passedOver = choice.attempts[0]?.ok ? '' : `; ${tried[0]} unavailable`;
    expect(describeBackend(choice).startsWith(`backend ${choice.name} [auto]${passedOver}`)).toBe(true);
  });

  it('honours a forced cpu backend from the flag and from M3AE_BACKEND, and computes on it', async () => {
    const forced = await chooseBackend({ backend: 'cpu' });
    expect(forced).toMatchObject({ name: 'cpu', requestedBy: 'flag' });
    expect(tf.getBackend()).toBe('cpu');
    expect(Array.from(tf.tidy(() => tf.matMul(tf.tensor2d([[1, 2]]), tf.tensor2d([[3], [4]]))).dataSync())).toEqual([11]);
    const fromEnv = await chooseBackend({ env: { M3AE_BACKEND: 'wasm' } });
    expect(fromEnv).toMatchObject({ name: 'wasm', requestedBy: 'env' });
  });

  it('rejects an unknown backend naming the field, the value and the choices', async () => {
    await expect(chooseBackend({ env: { M3AE_BACKEND: 'tpu' } })).rejects.toThrow(
      'M3AE_BACKEND: unknown backend "tpu"; expected one of auto, node-gpu, webgpu, node, wasm, cpu',
    );
  });
});

describe('useLavapipe (the webgpu tests\' CPU adapter)', () => {
  it('fails under CI=true when the driver is missing, and lets the test skip elsewhere', () => {
    expect(() => useLavapipe({ CI: 'true' }, ['/nonexistent/lvp_icd.json'])).toThrow(/lavapipe .* is missing: none of \/nonexistent\/lvp_icd\.json exists; run scripts\/test-prerequisites\.sh/);
    expect(useLavapipe({}, ['/nonexistent/lvp_icd.json'])).toBeUndefined();
    const env: NodeJS.ProcessEnv = {};
    expect(useLavapipe(env, [import.meta.filename])).toBe(import.meta.filename);
    expect(env['VK_DRIVER_FILES']).toBe(import.meta.filename);
  });
});
