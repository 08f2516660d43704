import { describe, expect, it } from 'vitest';
import { runConfigFrom } from './coordinator.js';

describe('the run flags of coordinator, worker and train', () => {
  it('map to run-configuration fields, beat the environment, and name the flag a bad value came from', () => {
    const env = { M3AE_BACKEND: 'cpu', M3AE_STEPS: '7' };
    expect(runConfigFrom({}, env).compute.backend).toBe('cpu');
    const config = runConfigFrom({ backend: 'webgpu', steps: '3', globalBatch: '4', microBatch: '2' }, env);
    expect(config.compute.backend).toBe('webgpu');
    expect(config.training).toMatchObject({ steps: 3, globalBatch: 4, microBatch: 2 });
    expect(() => runConfigFrom({ steps: 'ten' }, {})).toThrow(/training\.steps = "?ten"? \(from --steps\)/);
  });
});
