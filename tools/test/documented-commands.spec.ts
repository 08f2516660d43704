import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../src/cli.js';

const root = resolve(import.meta.dirname, '../..');

/** The project's own documentation: the README files of the root, apps, libs, tools and k8s, docs/ and BENCHMARKS.md. */
function docs(): string[] {
  const files = ['README.md', 'BENCHMARKS.md', 'tools/README.md', 'tools/reference/README.md', 'k8s/README.md'].map((f) => join(root, f));
  for (const dir of ['apps', 'libs']) for (const d of readdirSync(join(root, dir))) files.push(join(root, dir, d, 'README.md'));
  for (const f of readdirSync(join(root, 'docs'))) if (f.endsWith('.md')) files.push(join(root, 'docs', f));
  return files.filter((f) => {
    try {
      readFileSync(f);
      return true;
    } catch {
      return false;
    }
  });
}

/** `m3ae` as the program (not kubectl's namespace: `-n m3ae`, `create namespace m3ae`). */
const PROGRAM = /(?<![-\w/.:]|-n |--namespace[ =]|namespace )m3ae /;

/** Every `m3ae …` command line written in a file: in inline code, or on a line of a code block. */
function commandsIn(text: string): string[] {
  const out: string[] = [];
  for (const span of text.match(/`[^`\n]*`/g) ?? []) if (PROGRAM.test(span)) out.push(span.slice(1, -1));
  let inBlock = false;
  for (const line of text.split('\n')) {
    if (line.trimStart().startsWith('```')) inBlock = !inBlock;
    else if (inBlock && PROGRAM.test(line)) out.push(line);
  }
  return out.map((c) => c.slice(c.search(PROGRAM) + 'm3ae '.length));
}

/** The command a line names (subcommands followed as far as they go) and the long flags it uses. */
function resolveLine(program: Command, line: string): { command: Command; path: string; flags: string[] } {
  const tokens = line.replace(/[[\]|]/g, ' ').split(/\s+/).filter(Boolean);
  let command = program;
  const path: string[] = [];
  for (const t of tokens) {
    if (t.startsWith('-')) break;
    const sub = command.commands.find((c) => c.name() === t);
    if (!sub) break;
    command = sub;
    path.push(t);
  }
  const flags = tokens.filter((t) => /^--[a-z]/.test(t)).map((t) => t.replace(/[=,.;:)].*$/, ''));
  return { command, path: path.join(' '), flags };
}

describe('the commands the documentation shows', () => {
  it('use only flags that their command has', () => {
    const program = buildProgram();
    const problems: string[] = [];
    let checked = 0;
    for (const file of docs()) {
      for (const line of commandsIn(readFileSync(file, 'utf8'))) {
        const { command, path, flags } = resolveLine(program, line);
        const known = new Set(['--help', ...command.options.flatMap((o) => [o.long ?? '', ...(o.negate ? [] : [`--no-${(o.long ?? '').slice(2)}`])])]);
        if (command === program) known.add('--version');
        for (const f of flags) {
          checked++;
          if (!known.has(f)) problems.push(`${relative(root, file)}: m3ae ${path || '(no subcommand)'} has no ${f} (in: m3ae ${line.trim().slice(0, 120)})`);
        }
      }
    }
    expect(checked).toBeGreaterThan(100);
    expect(problems).toEqual([]);
  });
});
