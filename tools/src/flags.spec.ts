import { InvalidArgumentError } from 'commander';
import { describe, expect, it } from 'vitest';
import { collect, fraction, intInRange, nonNegativeInt, nonNegativeNumber, oneOf, positiveInt, positiveNumber } from './flags.js';

describe('flag parsers', () => {
  it('parse good values and name the flag, the rule and the value otherwise', () => {
    expect(positiveInt('--n')('3')).toBe(3);
    expect(() => positiveInt('--n')('0')).toThrow(new InvalidArgumentError('--n must be a positive integer, got "0"'));
    expect(() => positiveInt('--n')('1.5')).toThrow(/positive integer/);
    expect(nonNegativeInt('--seed')('0')).toBe(0);
    expect(() => nonNegativeInt('--seed')('-1')).toThrow('--seed must be an integer >= 0, got "-1"');
    expect(intInRange('--scale', 1, 64)('64')).toBe(64);
    expect(() => intInRange('--scale', 1, 64)('65')).toThrow('--scale must be an integer in 1..64, got "65"');
    for (const bad of ['', '1.5', 'ten', '-1']) expect(() => intInRange('--seed', 0)(bad)).toThrow(/--seed must be an integer in 0\.\./);
    expect(positiveNumber('--lr')('5e-6')).toBe(5e-6);
    expect(() => positiveNumber('--lr')('0')).toThrow('--lr must be a positive number, got "0"');
    expect(nonNegativeNumber('--weight-decay')('0')).toBe(0);
    expect(() => nonNegativeNumber('--weight-decay')('-1')).toThrow('--weight-decay must be a number >= 0, got "-1"');
    expect(fraction('--mask-ratio')('0.75')).toBe(0.75);
    for (const bad of ['1', '-0.1', '', ' ', 'x']) expect(() => fraction('--mask-ratio')(bad)).toThrow(/--mask-ratio must be a number in \[0, 1\)/);
    expect(oneOf('--f', ['raw', 'jpeg'] as const)('jpeg')).toBe('jpeg');
    expect(() => oneOf('--f', ['raw', 'jpeg'])('png')).toThrow('--f must be one of raw, jpeg, got "png"');
    expect(collect('b', collect('a'))).toEqual(['a', 'b']);
  });
});
