import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError, type Command } from 'commander';
import type { StepReport } from '@m3ae/protocol';
import type { RunSummary } from '@m3ae/training';
import type { RunConfig } from '@m3ae/protocol';
import { createLogger, WorkerRestartMetrics, type Logger } from '@m3ae/telemetry';
import { runCoordinator } from './coordinator.js';
import { signalExitCode } from '../signals.js';
import { PARENT_PID_ENV } from './worker.js';

/**
 * How the local cluster replaces a worker process that died (any exit code, any signal): at most `maxRestarts`
 * restarts per worker slot within `windowSeconds`, the n-th waiting `backoffMs · 2^(n-1)` (capped). A slot whose
 * budget is spent stays empty; when every slot is empty the run fails.
 */
export interface RestartPolicy {
  /** @defaultValue 5 (M3AE_MAX_RESTARTS, --max-restarts) */
  maxRestarts: number;
  /** @defaultValue 600 (M3AE_RESTART_WINDOW, --restart-window) */
  windowSeconds: number;
  /** @defaultValue 500 */
  backoffMs: number;
  /** @defaultValue 10000 */
  maxBackoffMs: number;
}

export const DEFAULT_RESTART_POLICY: Readonly<RestartPolicy> = { maxRestarts: 5, windowSeconds: 600, backoffMs: 500, maxBackoffMs: 10_000 };

function nonNegative(name: string, raw: string, integer: boolean): number {
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) {
    throw new InvalidArgumentError(`${name} must be a non-negative ${integer ? 'integer' : 'number'}, got ${JSON.stringify(raw)}`);
  }
  return n;
}

/** The restart policy from `--max-restarts` / `--restart-window`, else M3AE_MAX_RESTARTS / M3AE_RESTART_WINDOW, else the defaults. */
export function restartPolicyFrom(flags: { maxRestarts?: string | undefined; restartWindow?: string | undefined }, env: NodeJS.ProcessEnv = process.env): RestartPolicy {
  const pick = (flag: string | undefined, flagName: string, envName: string): [string, string] | undefined => {
    if (flag !== undefined) return [flag, flagName];
    const v = env[envName];
    return v !== undefined && v.trim() !== '' ? [v, envName] : undefined;
  };
  const max = pick(flags.maxRestarts, '--max-restarts', 'M3AE_MAX_RESTARTS');
  const window = pick(flags.restartWindow, '--restart-window', 'M3AE_RESTART_WINDOW');
  return {
    ...DEFAULT_RESTART_POLICY,
    ...(max ? { maxRestarts: nonNegative(max[1], max[0], true) } : {}),
    ...(window ? { windowSeconds: nonNegative(window[1], window[0], false) } : {}),
  };
}

/** `--max-restarts` and `--restart-window` (m3ae train --local). */
export function addRestartFlags(cmd: Command): Command {
  return cmd
    .option('--max-restarts <n>', `restarts of a dead worker per worker slot within the restart window (default M3AE_MAX_RESTARTS or ${DEFAULT_RESTART_POLICY.maxRestarts}; 0: never)`)
    .option('--restart-window <seconds>', `the window of --max-restarts (default M3AE_RESTART_WINDOW or ${DEFAULT_RESTART_POLICY.windowSeconds})`);
}

/** A stop (SIGINT, SIGTERM, SIGHUP) arrived before the run had anything to stop gracefully. */
export class RunStopped extends Error {
  override readonly name = 'RunStopped';
}



/**
 * The signals of a local run: the first SIGINT/SIGTERM/SIGHUP aborts `signal` (workers stop, the coordinator
 * writes its checkpoint, Redis stops last); a second one exits at once. Whatever happens, the processes registered
 * with {@link onExit} are killed when this process exits, so none outlives it.
 */
export class LocalRunSignals {
  private readonly controller = new AbortController();
  private readonly exitHooks: (() => void)[] = [];
  private received: NodeJS.Signals | undefined;

  constructor(private readonly log: Logger) {
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, this.onSignal);
    process.on('exit', this.onProcessExit);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** The first signal received (the run's exit code follows it: 130 for SIGINT, 143 for SIGTERM). */
  get stoppedBy(): NodeJS.Signals | undefined {
    return this.received;
  }

  get exitCode(): number {
    return signalExitCode(this.received ?? 'SIGINT');
  }

  /** Runs synchronously when this process exits, however it exits (short of SIGKILL): kill children here. */
  onExit(hook: () => void): void {
    this.exitHooks.push(hook);
  }

  /** `work`, or a {@link RunStopped} as soon as a signal arrives (for phases with nothing to save). */
  async guard<T>(work: Promise<T>): Promise<T> {
    if (this.signal.aborted) throw new RunStopped(`stopped by ${this.received ?? 'a signal'}`);
    let onAbort: (() => void) | undefined;
    try {
      return await Promise.race([
        work,
        new Promise<never>((_r, reject) => {
          onAbort = () => reject(new RunStopped(`stopped by ${this.received ?? 'a signal'}`));
          this.signal.addEventListener('abort', onAbort, { once: true });
        }),
      ]);
    } finally {
      if (onAbort) this.signal.removeEventListener('abort', onAbort);
    }
  }

  dispose(): void {
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(s, this.onSignal);
    process.off('exit', this.onProcessExit);
  }

  private readonly onSignal = (signal: NodeJS.Signals): void => {
    if (this.received) {
      this.log.warn({ signal }, 'second signal: killing the workers and Redis, exiting now');
      process.exit(signalExitCode(signal));
    }
    this.received = signal;
    this.log.warn({ signal }, 'stopping: workers first, then the coordinator (it writes a checkpoint), then Redis; a second signal forces it');
    this.controller.abort(signal);
  };

  private readonly onProcessExit = (): void => {
    for (const hook of this.exitHooks) hook();
  };
}

interface Slot {
  index: number;
  child: ChildProcess | undefined;
  /** When it was restarted (ms), within the window. */
  restarts: number[];
  dead: boolean;
  timer: NodeJS.Timeout | undefined;
}

export interface WorkerSupervisorOptions {
  count: number;
  /** Starts the process of a worker slot (again after a death). */
  spawn(slot: number): ChildProcess;
  /** The log file of a slot (its end is quoted when the run fails). */
  logFile(slot: number): string;
  policy: RestartPolicy;
  log: Logger;
  onRestart?(slot: number): void;
}

/**
 * Keeps `count` worker processes alive: a process that exits for any reason (an exit code or a signal — Node
 * reports `exitCode` null when `signalCode` is set) is started again after a back-off while its slot has restart
 * budget left. `failed` rejects once every slot is dead with its budget spent.
 */
export class WorkerSupervisor {
  readonly failed: Promise<never>;
  private readonly slots: Slot[];
  private stopping = false;
  private restartTotal = 0;
  private reject!: (e: Error) => void;

  constructor(private readonly o: WorkerSupervisorOptions) {
    this.slots = Array.from({ length: o.count }, (_, index) => ({ index, child: undefined, restarts: [], dead: false, timer: undefined }));
    this.failed = new Promise<never>((_r, reject) => (this.reject = reject));
    this.failed.catch(() => undefined); // observed by whoever races it
  }

  start(): void {
    for (const slot of this.slots) this.launch(slot);
  }

  /** Restarts so far, all slots. */
  get restarts(): number {
    return this.restartTotal;
  }

  /** Process ids of the live workers. */
  pids(): number[] {
    return this.slots.flatMap((s) => (s.child?.pid !== undefined ? [s.child.pid] : []));
  }

  /** No more restarts; SIGTERM (the current job finishes or is handed back), SIGKILL after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping = true;
    const live = this.slots.flatMap((s) => {
      clearTimeout(s.timer);
      return s.child ? [s.child] : [];
    });
    await Promise.all(
      live.map(async (child) => {
        const gone = new Promise<void>((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r())));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await gone;
        clearTimeout(timer);
      }),
    );
  }

  /** SIGKILL to every worker, synchronously (this process is exiting). */
  killNow(): void {
    this.stopping = true;
    for (const s of this.slots) {
      clearTimeout(s.timer);
      s.child?.kill('SIGKILL');
    }
  }

  private launch(slot: Slot): void {
    let child: ChildProcess;
    try {
      child = this.o.spawn(slot.index);
    } catch (e) {
      this.exited(slot, e instanceof Error ? e.message : String(e));
      return;
    }
    slot.child = child;
    let done = false;
    const once = (how: string): void => {
      if (done) return;
      done = true;
      if (slot.child === child) slot.child = undefined;
      this.exited(slot, how);
    };
    child.once('exit', (code, signal) => once(signal ? `signal ${signal}` : `exit code ${code ?? '?'}`));
    child.once('error', (e) => once(e.message));
  }

  private exited(slot: Slot, how: string): void {
    if (this.stopping) return;
    const { policy, log } = this.o;
    const now = Date.now();
    slot.restarts = slot.restarts.filter((t) => now - t < policy.windowSeconds * 1000);
    if (slot.restarts.length >= policy.maxRestarts) {
      slot.dead = true;
      log.error({ worker: slot.index, how, restarts: slot.restarts.length }, `worker ${slot.index} exited (${how}); its restart budget is spent (${policy.maxRestarts} in ${policy.windowSeconds} s): not replaced`);
      if (this.slots.every((s) => s.dead)) void this.fail(slot, how);
      return;
    }
    slot.restarts.push(now);
    this.restartTotal++;
    const delay = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** (slot.restarts.length - 1));
    log.warn(
      { worker: slot.index, how, restart: slot.restarts.length, of: policy.maxRestarts, delayMs: delay },
      `worker ${slot.index} exited (${how}); restarting it in ${(delay / 1000).toFixed(1)} s (restart ${slot.restarts.length} of ${policy.maxRestarts} in ${policy.windowSeconds} s)`,
    );
    this.o.onRestart?.(slot.index);
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      if (!this.stopping) this.launch(slot);
    }, delay);
  }

  private async fail(slot: Slot, how: string): Promise<void> {
    const file = this.o.logFile(slot.index);
    const tail = (await readFile(file, 'utf8').catch(() => '')).trim().split('\n').slice(-5).join('\n    ');
    const { maxRestarts, windowSeconds } = this.o.policy;
    this.reject(
      new Error(
        `every worker exited and none has restart budget left (at most ${maxRestarts} restarts per worker in ${windowSeconds} s: --max-restarts, --restart-window); ` +
          `the last, worker ${slot.index}, ended with ${how}${tail ? `; the end of ${file}:\n    ${tail}` : `; its log ${file} is empty`}`,
      ),
    );
  }
}

/** The `m3ae` entry script, to start worker processes with. */
function cliEntry(): string {
  return fileURLToPath(new URL('../../bin/m3ae.js', import.meta.url));
}

export interface LocalClusterOptions {
  workers: number;
  /** Run files and worker logs go under it. */
  workDir: string;
  redisUrl: string;
  resume: boolean;
  metricsPort: number | false;
  /** Address of the HTTP endpoints (coordinator and workers). @defaultValue M3AE_METRICS_HOST or 127.0.0.1 */
  metricsHost?: string | undefined;
  onStep?: (report: StepReport) => void;
  /** The coordinator's log level (default M3AE_LOG_LEVEL or info). */
  logLevel?: string | undefined;
  /** Passed to the coordinator's setup (a task's validation lines). */
  setupLog?: (line: string) => void;
  /** @defaultValue {@link restartPolicyFrom}({}) */
  restart?: RestartPolicy;
  /** The run's signals (SIGINT/SIGTERM stop it in order); without them only a failure stops it early. */
  signals?: LocalRunSignals;
}

/** What the local cluster adds to the coordinator's summary. */
export interface LocalClusterSummary extends RunSummary {
  /** Worker processes that died and were replaced. */
  workerRestarts: number;
}

/**
 * One run on this machine: `workers` worker processes (`m3ae worker` reading the run file), kept alive by a
 * {@link WorkerSupervisor}, and the coordinator in this process, against `redisUrl`. Ends with the run: when the
 * steps are done, when stopped (workers first, then the coordinator with its checkpoint), or with an error once
 * every worker is dead with no restart budget left.
 */
export async function runLocalCluster(config: RunConfig, o: LocalClusterOptions): Promise<LocalClusterSummary> {
  const { workDir, redisUrl, metricsPort } = o;
  const policy = o.restart ?? restartPolicyFrom({});
  const coordinatorLog = createLogger({ name: 'coordinator', bindings: { run: config.runId }, level: o.logLevel ?? process.env['M3AE_LOG_LEVEL'] ?? 'info', ...(process.stdout.isTTY ? {} : { format: 'json' as const }) });
  // Workers read the same configuration; the Redis URL (which may hold a password) goes by environment.
  const runFile = join(workDir, `run-${config.runId}.json`);
  await writeFile(runFile, JSON.stringify({ ...config, redis: { ...config.redis, url: undefined, password: undefined } }, null, 2));
  await mkdir(join(workDir, 'logs'), { recursive: true });
  const logFile = (i: number): string => join(workDir, 'logs', `${config.runId}-worker-${i}.log`);
  const env = { ...process.env, M3AE_REDIS_URL: redisUrl, ...(config.redis.password ? { M3AE_REDIS_PASSWORD: config.redis.password } : {}), M3AE_LOG_FORMAT: 'json', [PARENT_PID_ENV]: String(process.pid) };
  const restarts = new WorkerRestartMetrics(config.runId);
  const supervisor = new WorkerSupervisor({
    count: o.workers,
    policy,
    log: coordinatorLog,
    logFile,
    onRestart: (slot) => restarts.restarted(slot),
    spawn: (i) => {
      // Appended: a restarted worker's log follows its predecessor's.
      const out = openSync(logFile(i), 'a');
      try {
        const metricsArgs = metricsPort === false ? ['--no-metrics'] : ['--metrics-port', String(metricsPort === 0 ? 0 : metricsPort + 1 + i), ...(o.metricsHost ? ['--metrics-host', o.metricsHost] : [])];
        // Its own process group: a terminal's Ctrl-C reaches this process only, which stops the workers in order.
        return spawn(process.execPath, [cliEntry(), 'worker', '--config', runFile, '--id', `${config.runId}-w${i}`, ...metricsArgs], { stdio: ['ignore', out, out], env, detached: true });
      } finally {
        closeSync(out);
      }
    },
  });
  o.signals?.onExit(() => supervisor.killNow());
  // The coordinator stops on a signal, or when the run fails for want of workers.
  const failing = new AbortController();
  const stopSignal = o.signals ? AbortSignal.any([o.signals.signal, failing.signal]) : failing.signal;
  const stopWorkers = (): void => void supervisor.stop();
  o.signals?.signal.addEventListener('abort', stopWorkers, { once: true });
  supervisor.start();
  try {
    const coordinator = runCoordinator(config, {
      resume: o.resume,
      logger: coordinatorLog,
      events: o.onStep ? { onStep: o.onStep } : {},
      metricsPort,
      metricsHost: o.metricsHost,
      stopSignal,
      onMetrics: (m) => restarts.addTo(m.registry),
      ...(o.setupLog ? { setupLog: o.setupLog } : {}),
    });
    coordinator.catch(() => undefined); // raced below; its error is the run's unless the workers failed first
    let failure: unknown;
    const summary = await Promise.race([
      coordinator,
      supervisor.failed.catch(async (e: unknown) => {
        // Let the coordinator unwind (its checkpoint written, telemetry closed) for a few seconds, then fail.
        failure = e;
        failing.abort();
        await Promise.race([coordinator.catch(() => undefined), new Promise((r) => setTimeout(r, 10_000).unref())]);
        throw e;
      }),
    ]);
    if (failure !== undefined) throw failure;
    return { ...summary, workerRestarts: supervisor.restarts };
  } finally {
    o.signals?.signal.removeEventListener('abort', stopWorkers);
    await supervisor.stop();
  }
}
