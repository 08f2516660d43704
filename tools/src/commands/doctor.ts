import { execFileSync } from 'node:child_process';
import { freemem, totalmem, cpus } from 'node:os';
import { chooseBackend, describeBackend, describeWebGpuAdapter, webGpuAdapter, type BackendAttempt, type WebGpuAdapterReport } from '@m3ae/model';
import { connectionCause, connectOnce, loadRunConfig, queueEndpoint, redactRedisUrl, type RedisEndpoint } from '@m3ae/protocol';

export interface DoctorReport {
  node: { version: string; ok: boolean; expected: string };
  backend: { chosen: string | null; attempts: readonly BackendAttempt[]; summary: string };
  webgpu: WebGpuAdapterReport;
  redis: { url: string; answers: boolean; version?: string; maxmemoryPolicy?: string; error?: string };
  redisServer: { onPath: boolean; path?: string; install?: string };
  memory: { freeBytes: number; totalBytes: number };
  cpus: number;
}

/** The Redis the apps would use: `M3AE_REDIS_URL` / `REDIS_URL`, password, user, CA file (the run configuration's rules). */
function redisEndpointFromEnv(env: NodeJS.ProcessEnv): RedisEndpoint {
  const redisEnv = Object.fromEntries(Object.entries(env).filter(([k]) => k.includes('REDIS')));
  return queueEndpoint(loadRunConfig({ env: redisEnv }));
}

async function probeRedis(env: NodeJS.ProcessEnv): Promise<DoctorReport['redis']> {
  let endpoint: RedisEndpoint;
  try {
    endpoint = redisEndpointFromEnv(env);
  } catch (e) {
    return { url: '(invalid settings)', answers: false, error: e instanceof Error ? e.message : String(e) };
  }
  const shown = redactRedisUrl(endpoint.url);
  let redis: Awaited<ReturnType<typeof connectOnce>> | undefined;
  try {
    redis = await connectOnce(endpoint, { timeoutMs: 2000, connectionName: 'm3ae-doctor' });
    const info = await redis.info('server');
    const version = /redis_version:(\S+)/.exec(info)?.[1];
    let maxmemoryPolicy: string | undefined;
    try {
      const reply = (await redis.config('GET', 'maxmemory-policy')) as unknown;
      if (Array.isArray(reply)) maxmemoryPolicy = String(reply[1]);
    } catch {
      maxmemoryPolicy = undefined; // CONFIG may be disabled on managed Redis
    }
    return { url: shown, answers: true, ...(version ? { version } : {}), ...(maxmemoryPolicy ? { maxmemoryPolicy } : {}) };
  } catch (e) {
    return { url: shown, answers: false, error: connectionCause(e) };
  } finally {
    redis?.disconnect();
  }
}

function findOnPath(cmd: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

export async function doctor(env: NodeJS.ProcessEnv = process.env, backend?: string): Promise<DoctorReport> {
  const major = Number(process.versions.node.split('.')[0]);
  let chosen: DoctorReport['backend'];
  try {
    const choice = await chooseBackend({ backend, env });
    chosen = { chosen: choice.name, attempts: choice.attempts, summary: describeBackend(choice) };
  } catch (e) {
    chosen = { chosen: null, attempts: [], summary: e instanceof Error ? e.message : String(e) };
  }
  const serverPath = findOnPath('redis-server');
  return {
    node: { version: process.versions.node, ok: major >= 20, expected: '>=20' },
    backend: chosen,
    webgpu: await webGpuAdapter(),
    redis: await probeRedis(env),
    redisServer: serverPath ? { onPath: true, path: serverPath } : { onPath: false, install: 'sudo apt-get install -y redis-server' },
    memory: { freeBytes: freemem(), totalBytes: totalmem() },
    cpus: cpus().length,
  };
}

/** True when every check passed (`m3ae doctor` exits 1 otherwise). */
export function doctorOk(r: DoctorReport): boolean {
  return r.node.ok && r.backend.chosen !== null && r.redis.answers && r.redisServer.onPath;
}

const gib = (n: number): string => `${(n / 2 ** 30).toFixed(1)} GiB`;

export function formatDoctor(r: DoctorReport): string {
  const mark = (ok: boolean): string => (ok ? 'ok  ' : 'FAIL');
  const lines = [
    `${mark(r.node.ok)} node ${r.node.version} (expected ${r.node.expected})`,
    `${mark(r.backend.chosen !== null)} ${r.backend.summary}`,
    `${r.webgpu.ok ? 'ok  ' : '-   '} ${describeWebGpuAdapter(r.webgpu)}`,
    `${mark(r.redis.answers)} redis at ${r.redis.url}: ` +
      (r.redis.answers ? `answers (version ${r.redis.version ?? '?'}, maxmemory-policy ${r.redis.maxmemoryPolicy ?? 'unknown'})` : `no answer (${r.redis.error ?? 'unknown error'})`),
    `${mark(r.redisServer.onPath)} redis-server ` + (r.redisServer.onPath ? `on PATH at ${r.redisServer.path ?? ''}` : `not on PATH; install it with: ${r.redisServer.install ?? ''}`),
    `ok   memory ${gib(r.memory.freeBytes)} free of ${gib(r.memory.totalBytes)}, ${r.cpus} cpus`,
  ];
  return lines.join('\n');
}
