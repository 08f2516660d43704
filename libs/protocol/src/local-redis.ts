import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer, Socket } from 'node:net';
import { ProtocolError } from './errors.js';

/** The one command that installs what `m3ae train --local` and the tests need, printed when it is missing. */
export const REDIS_INSTALL_COMMAND = 'sudo apt-get install -y redis-server';

/** A TCP port nobody listens on right now. */
export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new ProtocolError('no free port'))));
    });
  });
}

export function redisServerOnPath(): boolean {
  const r = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
  return r.status === 0;
}

export interface LocalRedisOptions {
  port?: number;
  /** Extra `redis-server` arguments (e.g. TLS, `--requirepass`). */
  args?: readonly string[];
  /** Port to wait on when the plain port is disabled (`--port 0` with `--tls-port`). */
  readyPort?: number;
  /**
   * Its own process group: a Ctrl-C in the terminal reaches only the parent, which stops its Redis last (after
   * the processes that use it). @defaultValue false
   */
  detached?: boolean;
}

/**
 * A private `redis-server` (no persistence, `noeviction`, loopback only) for `m3ae train --local` and for
 * tests that must restart Redis. `restart()` kills it and starts an empty one on the same port: a Redis
 * that lost everything.
 */
export class LocalRedis {
  private child: ChildProcess | undefined;
  private constructor(
    readonly port: number,
    private readonly args: readonly string[],
    private readonly readyPort: number,
    private readonly detached: boolean,
  ) {}

  static async start(options: LocalRedisOptions = {}): Promise<LocalRedis> {
    if (!redisServerOnPath()) {
      throw new ProtocolError(`redis-server is not installed (needed for a private Redis); install it with: ${REDIS_INSTALL_COMMAND}`);
    }
    const port = options.port ?? (await freePort());
    const r = new LocalRedis(port, options.args ?? [], options.readyPort ?? port, options.detached ?? false);
    await r.spawn();
    return r;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  private async spawn(): Promise<void> {
    const child = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction', ...this.args],
      { stdio: ['ignore', 'ignore', 'pipe'], detached: this.detached },
    );
    this.child = child;
    liveServers.add(child);
    child.once('exit', () => liveServers.delete(child));
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new ProtocolError(`redis-server on port ${this.port} exited with ${child.exitCode}: ${stderr.trim().slice(0, 500)}`);
      if (await accepts(this.readyPort)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGKILL');
    throw new ProtocolError(`redis-server on port ${this.port} did not accept connections within 10 s`);
  }

  /** Stops the server (SIGKILL: nothing is saved anyway) and waits for it to exit. */
  async stop(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill(signal);
    });
  }

  /** Kills the server and starts an empty one on the same port. */
  async restart(downMillis = 0): Promise<void> {
    await this.stop();
    if (downMillis > 0) await new Promise((r) => setTimeout(r, downMillis));
    await this.spawn();
  }
}

/**
 * The private servers still running: killed when this process exits, however it exits short of SIGKILL (an uncaught
 * error, `process.exit` at a signal), so that none outlives the process that started it.
 */
const liveServers = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of liveServers) child.kill('SIGKILL');
});

async function accepts(port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const s = new Socket();
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.connect(port, '127.0.0.1');
  });
}
