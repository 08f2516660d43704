import { describe, expect, it } from 'vitest';
import { workerId } from './identity.js';

describe('workerId', () => {
  it('uses the pod name on Kubernetes and always includes the pid', () => {
    expect(workerId({ POD_NAME: 'm3ae-worker-7c9f' })).toBe(`m3ae-worker-7c9f-${process.pid}`);
    expect(workerId({})).toMatch(new RegExp(`-${process.pid}$`));
  });
});
