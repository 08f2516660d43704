import { execFileSync } from 'node:child_process';
import { freemem, totalmem, cpus } from 'node:os';
import { Redis } from 'ioredis';
import { chooseBackend, describeBackend, describeWebGpuAdapter, webGpuAdapter, type BackendAttempt, type WebGpuAdapterReport } from '@m3ae/model';
import { DEFAULT_REDIS_URL, redactRedisUrl } from '@m3ae/protocol';

export interface DoctorReport {
  node: { version: string; ok: boolean; expected: string };
  backend: { chosen: string | null; attempts: readonly BackendAttempt[]; summary: string };
  webgpu: WebGpuAdapterReport;
  redis: { url: string; answers: boolean; version?: string; maxmemoryPolicy?: string; error?: string };
  redisServer: { onPath: boolean; path?: string; install?: string };
  memory: { freeBytes: number; totalBytes: number };
  cpus: number;
}

async function probeRedis(url: string): Promise<DoctorReport['redis']> {
  const shown = redactRedisUrl(url);
  const redis = new Redis(url, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
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
    return { url: shown, answers: false, error: e instanceof Error ? e.message : String(e) };
  } finally {
    redis.disconnect();
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
    redis: await probeRedis(env['REDIS_URL'] ?? DEFAULT_REDIS_URL),
    redisServer: serverPath ? { onPath: true, path: serverPath } : { onPath: false, install: 'sudo apt-get install -y redis-server' },
    memory: { freeBytes: freemem(), totalBytes: totalmem() },
    cpus: cpus().length,
  };
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
