import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { registerFinetune } from '../commands/finetune.js';
import { parseSizes, scratchCarve } from './learning.js';

describe('the carve of bench learning part (s) and m3ae finetune --carve-by', () => {
  it('keeps the image carve by default and carves by question with scratch-carve=question', () => {
    expect(parseSizes(undefined, false)['scratch-carve']).toBe('image');
    expect(scratchCarve(parseSizes(undefined, false))).toEqual({ seed: 0, valFraction: 0.1, testFraction: 0.15 });
    expect(scratchCarve(parseSizes('parts=s,scratch-carve=question', false))).toEqual({ seed: 0, valFraction: 0.1, testFraction: 0.15, groupBy: 'question' });
    expect(() => scratchCarve(parseSizes('scratch-carve=caption', false))).toThrow('--size scratch-carve=caption: expected one of image, question');
  });

  it('m3ae finetune takes --carve-by image|question and names the flag on anything else', () => {
    const program = new Command().exitOverride();
    registerFinetune(program);
    const finetune = program.commands.find((c) => c.name() === 'finetune');
    const option = finetune?.options.find((o) => o.long === '--carve-by');
    expect(option?.description).toMatch(/image, question/);
    expect(option?.parseArg?.('question', undefined)).toBe('question');
    expect(() => option?.parseArg?.('caption', undefined)).toThrow(/--carve-by/);
  });
});
