import { describe, expect, it } from 'vitest';
import { JOB_QUEUE_NAME, RunKeys } from './keys.js';

describe('RunKeys', () => {
  it('puts every key of a run under m3ae:<runId>:', () => {
    const k = new RunKeys('exp-7');
    const all = [k.coordinator, k.results, k.params(3), k.grad(2, 5, 'pod-a/1', 'x1'), k.worker('pod-a'), `${k.bullPrefix}:${JOB_QUEUE_NAME}:wait`];
    for (const key of all) expect(key.startsWith('m3ae:exp-7:')).toBe(true);
    expect(k.grad(2, 5, 'pod-a/1', 'x1')).toBe('m3ae:exp-7:grads:s2:j5:pod-a_1:x1');
    expect(k.ownsBlob(k.params(3))).toBe(true);
    expect(k.ownsBlob('m3ae:other:params:v3')).toBe(false);
    expect(new RunKeys('other').allPattern).toBe('m3ae:other:*');
  });

  it('refuses run ids that would escape the namespace', () => {
    for (const bad of ['', 'a:b', 'a*', '{x}', '-lead', 'a b', 'x'.repeat(65)]) {
      expect(() => new RunKeys(bad)).toThrow(`runId ${JSON.stringify(bad)} is not valid`);
    }
  });
});
