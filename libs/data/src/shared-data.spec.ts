import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sharedDataDir, sharedDataForTests } from './shared-data.js';

describe('sharedDataDir', () => {
  it('prefers M3AE_SHARED_DATA and reports a missing folder as undefined', () => {
    const dir = mkdtempSync(join(tmpdir(), 'm3ae-shared-'));
    expect(sharedDataDir('/nonexistent', { M3AE_SHARED_DATA: dir })).toBe(dir);
    expect(sharedDataDir('/nonexistent', { M3AE_SHARED_DATA: join(dir, 'missing') })).toBeUndefined();
    expect(sharedDataDir('/nonexistent/ws', {})).toBeUndefined();
  });

  it('fails in CI when the data is absent, naming what needs it; skips with a reason elsewhere', () => {
    expect(() => sharedDataForTests('/nonexistent/ws', 'MedPix tests', { CI: 'true' })).toThrow('MedPix tests need the real datasets, and /nonexistent/shared/data (or M3AE_SHARED_DATA) is absent; CI must provide them');
    expect(sharedDataForTests('/nonexistent/ws', 'MedPix tests', {})).toBeUndefined();
    const dir = mkdtempSync(join(tmpdir(), 'm3ae-shared-'));
    expect(sharedDataForTests('/nonexistent/ws', 'MedPix tests', { CI: 'true', M3AE_SHARED_DATA: dir })).toBe(dir);
  });
});
