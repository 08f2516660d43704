import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

export const M3AE_BIN = resolve(import.meta.dirname, '../bin/m3ae.js');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit. */
  ms: number;
}

export interface CliProcess {
  child: ChildProcess;
  /** Everything printed so far (stdout and stderr). */
  output(): string;
  /** Resolves when `text` (or a match of the pattern) has been printed; rejects at the deadline or on exit. */
  waitFor(text: string | RegExp, timeoutMs: number): Promise<void>;
  /** The exit; the process is SIGKILLed and this rejects when it outlives `timeoutMs` (so a hang fails the test). */
  exit(timeoutMs: number): Promise<CliResult>;
}

/** `m3ae ARGS` as a real process, with a deadline on everything one waits for. */
export function startCli(args: readonly string[], env: NodeJS.ProcessEnv = {}): CliProcess {
  const t0 = performance.now();
  const child = spawn(process.execPath, [M3AE_BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  const changed = (): void => listeners.forEach((l) => l());
  child.stdout?.on('data', (d: Buffer) => ((stdout += d.toString()), changed()));
  child.stderr?.on('data', (d: Buffer) => ((stderr += d.toString()), changed()));
  const exited = new Promise<CliResult>((r) => child.once('exit', (code, signal) => r({ code, signal, stdout, stderr, ms: performance.now() - t0 })));
  return {
    child,
    output: () => stdout + stderr,
    async waitFor(text, timeoutMs) {
      const seen = (): boolean => (typeof text === 'string' ? (stdout + stderr).includes(text) : text.test(stdout + stderr));
      if (seen()) return;
      await new Promise<void>((ok, fail) => {
        const timer = setTimeout(() => done(new Error(`not printed within ${timeoutMs} ms: ${String(text)}; output:\n${(stdout + stderr).slice(-2000)}`)), timeoutMs);
        const check = (): void => void (seen() && done());
        const done = (e?: Error): void => {
          clearTimeout(timer);
          listeners.delete(check);
          if (e) fail(e);
          else ok();
        };
        listeners.add(check);
        void exited.then(() => !seen() && done(new Error(`exited before printing ${String(text)}; output:\n${(stdout + stderr).slice(-2000)}`)));
      });
    },
    async exit(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      const r = await Promise.race([exited, new Promise<null>((ok) => (timer = setTimeout(() => ok(null), timeoutMs)))]);
      clearTimeout(timer);
      if (r) return r;
      child.kill('SIGKILL');
      throw new Error(`m3ae ${args.join(' ')} was still running after ${timeoutMs} ms; output:\n${(stdout + stderr).slice(-2000)}`);
    },
  };
}

/** Process ids of the children of `pid` (ps). */
export function childPids(pid: number): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .map((s) => Number(s.trim()))
      .filter((n) => n > 0);
  } catch {
    return [];
  }
}

/** True while `pid` runs; a zombie (exited, not yet reaped by its new parent) counts as dead. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // /proc/PID/stat: "pid (comm) state …"; the command may itself hold spaces and parentheses.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** How long `m3ae --version` takes here: the start-up every command pays before it can fail (a loaded CI machine is slow). */
export async function startupMs(): Promise<number> {
  return (await startCli(['--version']).exit(60_000)).ms;
}
