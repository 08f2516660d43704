import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sharedDataDir } from './shared-data.js';

describe('sharedDataDir', () => {
  it('prefers M3AE_SHARED_DATA and reports a missing folder as undefined', () => {
    const dir = mkdtempSync(join(tmpdir(), 'm3ae-shared-'));
    expect(sharedDataDir('/nonexistent', { M3AE_SHARED_DATA: dir })).toBe(dir);
    expect(sharedDataDir('/nonexistent', { M3AE_SHARED_DATA: join(dir, 'missing') })).toBeUndefined();
    expect(sharedDataDir('/nonexistent/ws', {})).toBeUndefined();
  });
});
