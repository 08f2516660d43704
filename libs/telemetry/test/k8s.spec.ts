import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { ENV_OVERRIDES, jobsPerStep, loadRunConfig, pretrainTraining, type RunConfig } from '@m3ae/protocol';
import { parse as parseYaml } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { exportedSeries } from './helpers/catalog.js';
import { bytesOf, checkUnknownFields, K8S_DIR, kubectlVersion, kustomize, validateSchemas, type K8sObject } from './helpers/k8s.js';
import { analysePromql } from './helpers/promql.js';
import { freePort } from './helpers/redis.js';

/* The rendered manifests, read loosely: only the fields the checks look at. */
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } };
}
interface Probe {
  httpGet?: { path: string; port: string | number };
  exec?: { command: string[] };
  periodSeconds?: number;
  failureThreshold?: number;
}
interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: EnvVar[];
  ports?: { name?: string; containerPort: number }[];
  resources?: { requests?: Record<string, string | number>; limits?: Record<string, string | number> };
  securityContext?: { allowPrivilegeEscalation?: boolean; readOnlyRootFilesystem?: boolean; capabilities?: { drop?: string[] } };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
}
interface Volume {
  name: string;
  configMap?: { name: string };
  persistentVolumeClaim?: { claimName: string };
  emptyDir?: object;
}
interface PodSpec {
  containers: Container[];
  volumes?: Volume[];
  securityContext?: { runAsNonRoot?: boolean; seccompProfile?: { type: string } };
  terminationGracePeriodSeconds?: number;
  automountServiceAccountToken?: boolean;
  nodeSelector?: Record<string, string>;
  tolerations?: { key?: string; effect?: string }[];
}
interface Workload extends K8sObject {
  spec: {
    replicas?: number;
    strategy?: { type: string };
    selector?: { matchLabels: Record<string, string> };
    template: { metadata: { labels: Record<string, string> }; spec: PodSpec };
    volumeClaimTemplates?: { metadata: { name: string } }[];
  };
}

const OVERLAYS = ['gpu', 'webgpu', 'cpu', 'sharded-blobs'] as const;
type Overlay = (typeof OVERLAYS)[number];
const rendered = {} as Record<Overlay | 'base', K8sObject[]>;

function find<T extends K8sObject = K8sObject>(objs: readonly K8sObject[], kind: string, name: string): T {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name} in the rendered manifests`);
  return o as T;
}

function findByPrefix(objs: readonly K8sObject[], kind: string, prefix: string): K8sObject {
  const o = objs.find((x) => x.kind === kind && (x.metadata.name === prefix || x.metadata.name.startsWith(`${prefix}-`)));
  if (!o) throw new Error(`no ${kind} ${prefix}[-hash] in the rendered manifests`);
  return o;
}

function workloads(objs: readonly K8sObject[]): Workload[] {
  return objs.filter((o) => ['Deployment', 'StatefulSet', 'Job'].includes(o.kind)) as Workload[];
}

/**
 * A Redis NetworkPolicy of the rendered manifests, checked for its shape (one ingress rule, Ingress only, TCP 6379),
 * with the labels of a workload's pods and whether the rule admits pods with given labels.
 */
function redisPolicy(objs: readonly K8sObject[], name: string) {
  const policy = find(objs, 'NetworkPolicy', name) as K8sObject & {
    spec: {
      podSelector: { matchLabels: Record<string, string> };
      policyTypes: string[];
      ingress: { from: { podSelector: { matchExpressions: { key: string; operator: string; values: string[] }[] } }[]; ports: { protocol: string; port: number }[] }[];
    };
  };
  const podLabels = (kind: string, workload: string): Record<string, string> => find<Workload>(objs, kind, workload).spec.template.metadata.labels;
  expect(policy.spec.policyTypes).toEqual(['Ingress']);
  expect(policy.spec.ingress).toHaveLength(1);
  const rule = policy.spec.ingress[0] as (typeof policy.spec.ingress)[number];
  expect(rule.ports).toEqual([{ protocol: 'TCP', port: 6379 }]);
  const admits = (labels: Record<string, string>): boolean =>
    rule.from.some((f) => f.podSelector.matchExpressions.every((e) => e.operator === 'In' && e.values.includes(labels[e.key] ?? '')));
  return { policy, podLabels, admits };
}

function matches(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

function container(w: Workload, name: string): Container {
  const c = w.spec.template.spec.containers.find((x) => x.name === name);
  if (!c) throw new Error(`${w.metadata.name} has no container ${name}`);
  return c;
}

function runConfigOf(objs: readonly K8sObject[], env: Record<string, string> = {}): RunConfig {
  const cm = findByPrefix(objs, 'ConfigMap', 'm3ae-run') as K8sObject & { data: Record<string, string> };
  return loadRunConfig({ base: parseYaml(cm.data['run.yaml'] as string) as Record<string, unknown>, env });
}

/** The plain-value environment of a container, with secret references filled with a stand-in. */
function envOf(c: Container): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) env[e.name] = e.value ?? (e.valueFrom?.secretKeyRef ? 'from-secret' : 'from-field');
  return env;
}

beforeAll(() => {
  for (const overlay of [...OVERLAYS, 'base'] as const) {
    rendered[overlay] = kustomize(join(K8S_DIR, overlay === 'base' ? 'base' : `overlays/${overlay}`));
  }
});

/** A GPU overlay's worker: one NVIDIA GPU requested and limited, on GPU nodes (selector and toleration), its own image; the coordinator on the CPU image. */
function gpuWorker(objs: K8sObject[], image: RegExp): { worker: Workload; c: Container } {
  const worker = find<Workload>(objs, 'Deployment', 'm3ae-worker');
  const c = container(worker, 'worker');
  expect(c.resources?.limits?.['nvidia.com/gpu']).toBe(1);
  expect(c.resources?.requests?.['nvidia.com/gpu']).toBe(1);
  expect(worker.spec.template.spec.tolerations?.some((t) => t.key === 'nvidia.com/gpu' && t.effect === 'NoSchedule')).toBe(true);
  expect(Object.keys(worker.spec.template.spec.nodeSelector ?? {})).toContain('nvidia.com/gpu.present');
  expect(c.image).toMatch(image);
  expect(container(find<Workload>(objs, 'Deployment', 'm3ae-coordinator'), 'coordinator').image).not.toMatch(/gpu/);
  return { worker, c };
}

describe(`k8s/ rendered with kubectl kustomize (${kubectlVersion()})`, () => {
  it('renders the base and every overlay into the objects a run needs', () => {
    for (const overlay of OVERLAYS) {
      const kinds = rendered[overlay].map((o) => `${o.kind}/${o.metadata.name.replace(/-[a-z0-9]{10}$/, '')}`).sort();
      expect(kinds, overlay).toEqual(
        expect.arrayContaining([
          'Namespace/m3ae', 'ConfigMap/m3ae-run', 'ConfigMap/m3ae-redis-config', 'ConfigMap/m3ae-grafana-dashboard',
          'StatefulSet/m3ae-redis', 'Service/m3ae-redis', 'NetworkPolicy/m3ae-redis',
          'Deployment/m3ae-coordinator', 'Service/m3ae-coordinator', 'PersistentVolumeClaim/m3ae-checkpoints',
          'Deployment/m3ae-worker', 'PodDisruptionBudget/m3ae-worker', 'ScaledObject/m3ae-worker',
          'ServiceMonitor/m3ae-coordinator', 'PodMonitor/m3ae-worker', 'Job/m3ae-prepare', 'PersistentVolumeClaim/m3ae-data',
        ]),
      );
    }
  });

  it('validates every rendered object against its schema (core, Prometheus Operator and KEDA), unknown fields included', () => {
    const problems = [
      ...validateSchemas(rendered.base, 'base'),
      ...OVERLAYS.flatMap((o) => validateSchemas(rendered[o], o)),
      ...checkUnknownFields({ base: rendered.base, gpu: rendered.gpu, webgpu: rendered.webgpu, cpu: rendered.cpu }),
    ];
    expect(problems).toEqual([]);
  });

  it('the schema check rejects a wrong type, a bad quantity and a misspelt field', () => {
    const bad = structuredClone(find<Workload>(rendered.gpu, 'Deployment', 'm3ae-worker'));
    const c = bad.spec.template.spec.containers[0] as Container & Record<string, unknown>;
    c.resources = { limits: { memory: 'lots' } };
    c['livenessprobe'] = c.livenessProbe;
    (bad.spec as Record<string, unknown>)['replicas'] = 'two';
    const typed = validateSchemas([bad], 'mutated');
    expect(typed.join('\n')).toMatch(/limits\/memory must match format "quantity"/);
    expect(typed.join('\n')).toMatch(/replicas must be integer/);
    const unknown = checkUnknownFields({ mutated: [bad] });
    expect(unknown.join('\n')).toMatch(/'"?livenessprobe"?' does not exist in type 'IContainer'/);
  });

  it('puts everything in the m3ae namespace, which enforces the restricted pod security standard', () => {
    for (const overlay of OVERLAYS) {
      for (const o of rendered[overlay]) if (o.kind !== 'Namespace') expect(o.metadata.namespace, `${o.kind} ${o.metadata.name}`).toBe('m3ae');
      expect(find(rendered[overlay], 'Namespace', 'm3ae').metadata.labels?.['pod-security.kubernetes.io/enforce']).toBe('restricted');
    }
  });

  it('runs every container as non-root with a read-only root filesystem, no privilege escalation, and resources', () => {
    for (const overlay of OVERLAYS) {
      for (const w of workloads(rendered[overlay])) {
        const pod = w.spec.template.spec;
        const where = `${overlay} ${w.kind} ${w.metadata.name}`;
        expect(pod.securityContext?.runAsNonRoot, where).toBe(true);
        expect(pod.securityContext?.seccompProfile?.type, where).toBe('RuntimeDefault');
        expect(pod.automountServiceAccountToken, where).toBe(false);
        for (const c of pod.containers) {
          expect(c.securityContext, `${where}/${c.name}`).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
          expect(c.resources?.requests?.['cpu'], `${where}/${c.name}`).toBeDefined();
          expect(c.resources?.requests?.['memory'], `${where}/${c.name}`).toBeDefined();
          expect(c.resources?.limits?.['memory'], `${where}/${c.name}`).toBeDefined();
          // A read-only root needs a writable /tmp.
          const tmp = c.volumeMounts?.find((m) => m.mountPath === '/tmp' || m.mountPath === '/run/redis');
          expect(tmp, `${where}/${c.name}: writable scratch volume`).toBeDefined();
        }
      }
    }
  });

  it('refers only to objects it defines, except the Redis password Secret the operator creates', () => {
    for (const overlay of OVERLAYS) {
      const objs = rendered[overlay];
      const names = (kind: string) => new Set(objs.filter((o) => o.kind === kind).map((o) => o.metadata.name));
      const configMaps = names('ConfigMap');
      const claims = names('PersistentVolumeClaim');
      const secrets = new Set<string>();
      for (const w of workloads(objs)) {
        const templates = new Set((w.spec.volumeClaimTemplates ?? []).map((t) => t.metadata.name));
        for (const v of w.spec.template.spec.volumes ?? []) {
          if (v.configMap) expect(configMaps, `${overlay} ${w.metadata.name} volume ${v.name}`).toContain(v.configMap.name);
          if (v.persistentVolumeClaim) expect(claims, `${overlay} ${w.metadata.name} volume ${v.name}`).toContain(v.persistentVolumeClaim.claimName);
        }
        for (const c of w.spec.template.spec.containers) {
          const volumeNames = new Set([...(w.spec.template.spec.volumes ?? []).map((v) => v.name), ...templates]);
          for (const m of c.volumeMounts ?? []) expect(volumeNames, `${overlay} ${w.metadata.name}/${c.name} mount ${m.mountPath}`).toContain(m.name);
          for (const e of c.env ?? []) if (e.valueFrom?.secretKeyRef) secrets.add(`${e.valueFrom.secretKeyRef.name}/${e.valueFrom.secretKeyRef.key}`);
        }
      }
      expect([...secrets], overlay).toEqual(['m3ae-redis/password']);
    }
  });

  it('runs Redis from the official image with noeviction, the password from the Secret, its own volume and memory headroom', () => {
    for (const overlay of OVERLAYS) {
      const objs = rendered[overlay];
      const redis = find<Workload>(objs, 'StatefulSet', 'm3ae-redis');
      const c = container(redis, 'redis');
      expect(c.image).toMatch(/^redis:\d/);
      const conf = (findByPrefix(objs, 'ConfigMap', 'm3ae-redis-config') as K8sObject & { data: Record<string, string> }).data['redis.conf'] as string;
      expect(conf).toMatch(/^maxmemory-policy noeviction$/m);
      expect(conf).not.toMatch(/^requirepass/m);
      expect(c.env?.find((e) => e.name === 'REDIS_PASSWORD')?.valueFrom?.secretKeyRef).toEqual({ name: 'm3ae-redis', key: 'password' });
      // The password reaches redis-server through a file, never its command line.
      expect(c.args?.join(' ')).toContain('/run/redis/auth.conf');
      expect(c.args?.join(' ')).not.toMatch(/--requirepass/);
      expect(redis.spec.volumeClaimTemplates?.map((t) => t.metadata.name)).toEqual(['data']);
      expect(c.volumeMounts?.find((m) => m.name === 'data')?.mountPath).toBe('/data');
      const maxmemory = c.env?.find((e) => e.name === 'REDIS_MAXMEMORY')?.value as string;
      expect(bytesOf(maxmemory), overlay).toBeLessThan(0.9 * bytesOf(String(c.resources?.limits?.['memory'])));
    }
  });

  it('starts a real redis-server from the rendered command and redis.conf: password required, noeviction, maxmemory', async () => {
    const objs = rendered.gpu;
    const c = container(find<Workload>(objs, 'StatefulSet', 'm3ae-redis'), 'redis');
    const conf = (findByPrefix(objs, 'ConfigMap', 'm3ae-redis-config') as K8sObject & { data: Record<string, string> }).data['redis.conf'] as string;
    const dir = mkdtempSync(join(tmpdir(), 'm3ae-redis-'));
    try {
      // The pod's paths, moved into a scratch folder; the port moved to a free one.
      const port = await freePort();
      mkdirSync(join(dir, 'run'));
      mkdirSync(join(dir, 'data'));
      writeFileSync(join(dir, 'redis.conf'), conf.replaceAll('/run/redis', join(dir, 'run')).replace(/^dir \/data$/m, `dir ${join(dir, 'data')}`).replace(/^port 6379$/m, `port ${port}\nbind 127.0.0.1`));
      const script = (c.args?.[0] as string).replaceAll('/run/redis', join(dir, 'run')).replace('/etc/redis/redis.conf', join(dir, 'redis.conf'));
      const env = { PATH: process.env['PATH'] ?? '', REDIS_PASSWORD: 'pw-from-secret', REDIS_MAXMEMORY: c.env?.find((e) => e.name === 'REDIS_MAXMEMORY')?.value ?? '' };
      const child = spawn('sh', ['-c', script], { env, stdio: 'ignore' });
      const exited = new Promise((r) => child.once('exit', r));
      const client = (password?: string): Redis => {
        const r = new Redis({ port, lazyConnect: true, enableReadyCheck: false, maxRetriesPerRequest: 0, retryStrategy: () => null, ...(password ? { password } : {}) });
        r.on('error', () => undefined);
        return r;
      };
      let authed = client('pw-from-secret');
      const anonymous = client();
      try {
        // Until the server listens.
        for (let i = 0; ; i++) {
          try {
            await authed.connect();
            break;
          } catch (err) {
            authed.disconnect();
            if (i > 100) throw err;
            await new Promise((r) => setTimeout(r, 50));
            authed = client('pw-from-secret');
          }
        }
        expect(await authed.ping()).toBe('PONG');
        expect(await authed.config('GET', 'maxmemory-policy')).toEqual(['maxmemory-policy', 'noeviction']);
        const maxmemory = (await authed.config('GET', 'maxmemory')) as string[];
        expect(Number(maxmemory[1])).toBe(bytesOf(env.REDIS_MAXMEMORY));
        await anonymous.connect();
        await expect(anonymous.ping()).rejects.toThrow(/NOAUTH/);
        await authed.call('SHUTDOWN', 'NOSAVE').catch(() => undefined);
      } finally {
        authed.disconnect();
        anonymous.disconnect();
        child.kill('SIGKILL');
        await exited;
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lets only the coordinator and the workers reach Redis', () => {
    for (const overlay of OVERLAYS) {
      const objs = rendered[overlay];
      const { policy, podLabels, admits } = redisPolicy(objs, 'm3ae-redis');
      expect(matches(policy.spec.podSelector.matchLabels, podLabels('StatefulSet', 'm3ae-redis'))).toBe(true);
      expect(admits(podLabels('Deployment', 'm3ae-coordinator'))).toBe(true);
      expect(admits(podLabels('Deployment', 'm3ae-worker'))).toBe(true);
      expect(admits(podLabels('Job', 'm3ae-prepare'))).toBe(false);
      expect(admits({ 'app.kubernetes.io/name': 'grafana' })).toBe(false);
    }
  });

  it('runs one coordinator (Recreate) with checkpoints on its volume, probes on /healthz and /readyz, and the run file', () => {
    for (const overlay of OVERLAYS) {
      const objs = rendered[overlay];
      const coord = find<Workload>(objs, 'Deployment', 'm3ae-coordinator');
      expect(coord.spec.replicas).toBe(1);
      expect(coord.spec.strategy?.type).toBe('Recreate');
      const c = container(coord, 'coordinator');
      expect(c.args).toEqual(['coordinator', '--config', '/etc/m3ae/run.yaml', '--resume']);
      expect(c.livenessProbe?.httpGet?.path).toBe('/healthz');
      expect(c.readinessProbe?.httpGet?.path).toBe('/readyz');
      const config = runConfigOf(objs, envOf(c));
      const checkpoints = c.volumeMounts?.find((m) => m.name === 'checkpoints');
      expect(config.checkpoint.dir.startsWith(`${checkpoints?.mountPath}/`) || config.checkpoint.dir === checkpoints?.mountPath).toBe(true);
      const volume = coord.spec.template.spec.volumes?.find((v) => v.name === 'checkpoints');
      expect(volume?.persistentVolumeClaim?.claimName).toBe('m3ae-checkpoints');
      expect(c.volumeMounts?.find((m) => m.mountPath === '/etc/m3ae')?.name).toBe('config');
      // Checkpoint on SIGTERM needs time.
      expect(coord.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(120);
    }
  });

  it('configures coordinator and workers with a run file and environment that the run schema accepts', () => {
    const known = new Set(ENV_OVERRIDES.map((e) => e.env));
    for (const overlay of OVERLAYS) {
      const objs = rendered[overlay];
      for (const name of ['m3ae-coordinator', 'm3ae-worker']) {
        const w = find<Workload>(objs, 'Deployment', name);
        const c = w.spec.template.spec.containers[0] as Container;
        const env = envOf(c);
        // Every M3AE_* variable set is one the configuration reads (or the telemetry port).
        for (const k of Object.keys(env)) if (k.startsWith('M3AE_') && k !== 'M3AE_METRICS_PORT' && k !== 'M3AE_METRICS_HOST') expect(known, `${overlay} ${name} ${k}`).toContain(k);
        expect(env['M3AE_METRICS_PORT']).toBe(String(c.ports?.find((p) => p.name === 'metrics')?.containerPort));
        // Processes listen on loopback by default: a pod opens its endpoints to probes and Prometheus.
        expect(env['M3AE_METRICS_HOST']).toBe('0.0.0.0');
        const config = runConfigOf(objs, env);
        expect(config.redis.url).toBe('redis://m3ae-redis:6379');
        expect(config.redis.password).toBe('from-secret');
        const data = c.volumeMounts?.find((m) => m.name === 'data');
        expect(data?.readOnly).toBe(true);
        expect(config.data.dir?.startsWith(`${data?.mountPath}/`)).toBe(true);
      }
      // The prepare Job writes where the run reads.
      const prepare = container(find<Workload>(objs, 'Job', 'm3ae-prepare'), 'prepare');
      expect(prepare.args?.[0]).toBe('prepare');
      expect(prepare.args).toContain(`--output=${runConfigOf(objs).data.dir}`);
      expect(prepare.volumeMounts?.find((m) => m.name === 'data')?.readOnly).toBeFalsy();
    }
  });

  it('gives workers a grace period longer than a job may take to finish, and a patient startup probe', () => {
    for (const overlay of OVERLAYS) {
      const objs = rendered[overlay];
      const worker = find<Workload>(objs, 'Deployment', 'm3ae-worker');
      const c = container(worker, 'worker');
      const config = runConfigOf(objs, envOf(c));
      const grace = worker.spec.template.spec.terminationGracePeriodSeconds ?? 30;
      expect(grace, overlay).toBeGreaterThan(config.worker.shutdownGraceMs / 1000 + 30);
      const startup = c.startupProbe as Probe;
      expect(startup.httpGet?.path).toBe('/readyz');
      // Slow CUDA initialisation (PTX JIT on new GPUs) may take many minutes.
      expect((startup.periodSeconds ?? 10) * (startup.failureThreshold ?? 3), overlay).toBeGreaterThanOrEqual(1800);
      expect(c.livenessProbe?.httpGet?.path).toBe('/healthz');
      expect(c.readinessProbe?.httpGet?.path).toBe('/readyz');
    }
  });

  it('gpu overlay: one NVIDIA GPU per worker on GPU nodes, the GPU image, the CUDA cache on a volume', () => {
    const objs = rendered.gpu;
    const { worker, c } = gpuWorker(objs, /m3ae-gpu:/);
    const env = envOf(c);
    expect(env['M3AE_BACKEND']).toBe('node-gpu');
    const cache = c.volumeMounts?.find((m) => m.mountPath === env['CUDA_CACHE_PATH']);
    expect(cache, 'CUDA_CACHE_PATH is a mounted volume').toBeDefined();
    const volume = worker.spec.template.spec.volumes?.find((v) => v.name === cache?.name);
    expect(volume?.persistentVolumeClaim?.claimName).toBe('m3ae-cuda-cache');
  });

  it('webgpu overlay: one NVIDIA GPU per worker, the WebGPU image, the backend pinned, the driver\'s Vulkan mounted', () => {
    const objs = rendered.webgpu;
    const { c } = gpuWorker(objs, /m3ae-webgpu:/);
    const env = envOf(c);
    expect(env['M3AE_BACKEND']).toBe('webgpu');
    // Without the graphics capability the NVIDIA container runtime mounts no Vulkan ICD, and Dawn finds no adapter.
    expect(env['NVIDIA_DRIVER_CAPABILITIES']?.split(',')).toEqual(expect.arrayContaining(['compute', 'utility', 'graphics']));
    expect(JSON.stringify(objs)).not.toContain('CUDA_CACHE_PATH');
  });

  it('cpu overlay: no GPU anywhere, TensorFlow CPU kernels, a smaller Redis', () => {
    const objs = rendered.cpu;
    expect(JSON.stringify(objs)).not.toContain('nvidia.com/gpu');
    const c = container(find<Workload>(objs, 'Deployment', 'm3ae-worker'), 'worker');
    expect(envOf(c)['M3AE_BACKEND']).toBe('node');
    expect(runConfigOf(objs, envOf(c)).compute.backend).toBe('node');
    const redisCpu = container(find<Workload>(objs, 'StatefulSet', 'm3ae-redis'), 'redis').resources?.limits?.['memory'];
    const redisGpu = container(find<Workload>(rendered.gpu, 'StatefulSet', 'm3ae-redis'), 'redis').resources?.limits?.['memory'];
    expect(bytesOf(String(redisCpu))).toBeLessThan(bytesOf(String(redisGpu)));
  });

  it('sharded-blobs overlay: the gpu overlay plus one blob Redis per shard group, addressed pod by pod', () => {
    const objs = rendered['sharded-blobs'];
    gpuWorker(objs, /m3ae-gpu:/);
    const queue = find<Workload>(objs, 'StatefulSet', 'm3ae-redis');
    const blobs = find<Workload>(objs, 'StatefulSet', 'm3ae-redis-blobs');
    const groups = blobs.spec.replicas ?? 1;
    expect(groups).toBeGreaterThan(1);
    // Hardened, authenticated and configured exactly as the queue Redis: same command, config, probes, security.
    const qc = container(queue, 'redis');
    const bc = container(blobs, 'redis');
    for (const k of ['image', 'args', 'ports', 'readinessProbe', 'livenessProbe', 'securityContext', 'volumeMounts'] as const) expect(bc[k], k).toEqual(qc[k]);
    expect((bc as unknown as { command: string[] }).command).toEqual((qc as unknown as { command: string[] }).command);
    expect(bc.env?.find((e) => e.name === 'REDIS_PASSWORD')).toEqual(qc.env?.find((e) => e.name === 'REDIS_PASSWORD'));
    const { spec: qs } = queue.spec.template;
    const { spec: bs } = blobs.spec.template;
    expect(bs.securityContext).toEqual(qs.securityContext);
    expect(bs.automountServiceAccountToken).toBe(false);
    expect(bs.volumes).toEqual(qs.volumes);
    expect(blobs.spec.volumeClaimTemplates?.map((v) => v.metadata.name)).toEqual(['data']);
    // maxmemory below the memory limit.
    const maxmemory = bc.env?.find((e) => e.name === 'REDIS_MAXMEMORY')?.value ?? '';
    expect(bytesOf(maxmemory)).toBeLessThan(0.9 * bytesOf(String(bc.resources?.limits?.['memory'])));
    // The queue Service never selects a blob pod, the blob Service never a queue pod; the blob Service is headless.
    const svc = (name: string) => find(objs, 'Service', name) as K8sObject & { spec: { clusterIP?: string; selector: Record<string, string>; ports: { targetPort: string }[] } };
    expect(matches(svc('m3ae-redis').spec.selector, blobs.spec.template.metadata.labels)).toBe(false);
    expect(matches(svc('m3ae-redis-blobs').spec.selector, queue.spec.template.metadata.labels)).toBe(false);
    expect(matches(svc('m3ae-redis-blobs').spec.selector, blobs.spec.template.metadata.labels)).toBe(true);
    expect(svc('m3ae-redis-blobs').spec.clusterIP).toBe('None');
    expect((blobs.spec as { serviceName?: string }).serviceName).toBe('m3ae-redis-blobs');
    expect(svc('m3ae-redis-blobs').spec.ports.map((p) => p.targetPort)).toEqual(bc.ports?.map((p) => p.name));
    // Coordinator and workers: the same blob URLs, one per pod of the StatefulSet in order, and the same shards.
    const serviceName = (blobs.spec as { serviceName?: string }).serviceName;
    const port = svc(serviceName ?? '').spec.ports[0] as unknown as { port: number };
    // <statefulset>-<ordinal>.<headless service>: the stable DNS name of pod <ordinal>, one per group, in order.
    const pods = Array.from({ length: groups }, (_, i) => `redis://${blobs.metadata.name}-${i}.${serviceName}:${port.port}`);
    const configs = ['m3ae-coordinator', 'm3ae-worker'].map((name) => runConfigOf(objs, envOf(find<Workload>(objs, 'Deployment', name).spec.template.spec.containers[0] as Container)));
    for (const config of configs) {
      expect(config.redis.url).toBe('redis://m3ae-redis:6379');
      expect(config.redis.blobUrls).toEqual(pods);
      expect(config.training.shards).toBeGreaterThanOrEqual(groups);
      expect(config.redis.password).toBe('from-secret');
    }
    expect(configs[1]?.redis.blobUrls).toEqual(configs[0]?.redis.blobUrls);
    expect(configs[1]?.training.shards).toBe(configs[0]?.training.shards);
    // The other overlays keep everything on the one Redis.
    for (const overlay of ['gpu', 'webgpu', 'cpu'] as const) {
      expect(rendered[overlay].some((o) => o.metadata.name === 'm3ae-redis-blobs'), overlay).toBe(false);
      expect(runConfigOf(rendered[overlay]).redis.blobUrls).toEqual([]);
    }
  });

  it('sharded-blobs overlay: only the coordinator and the workers reach the blob Redis pods', () => {
    const objs = rendered['sharded-blobs'];
    const { policy, podLabels, admits } = redisPolicy(objs, 'm3ae-redis-blobs');
    expect(matches(policy.spec.podSelector.matchLabels, podLabels('StatefulSet', 'm3ae-redis-blobs'))).toBe(true);
    expect(matches(policy.spec.podSelector.matchLabels, podLabels('StatefulSet', 'm3ae-redis'))).toBe(false);
    expect(admits(podLabels('Deployment', 'm3ae-coordinator'))).toBe(true);
    expect(admits(podLabels('Deployment', 'm3ae-worker'))).toBe(true);
    expect(admits(podLabels('Job', 'm3ae-prepare'))).toBe(false);
    expect(admits(podLabels('StatefulSet', 'm3ae-redis'))).toBe(false);
    expect(admits({ 'app.kubernetes.io/name': 'grafana' })).toBe(false);
  });

  it('selects the right pods: Services, ServiceMonitor, PodMonitor, PodDisruptionBudget', () => {
    for (const overlay of OVERLAYS) {
      const objs = rendered[overlay];
      const podsOf = (kind: string, name: string) => find<Workload>(objs, kind, name).spec.template;
      for (const [svcName, kind, wl] of [['m3ae-redis', 'StatefulSet', 'm3ae-redis'], ['m3ae-coordinator', 'Deployment', 'm3ae-coordinator']] as const) {
        const svc = find(objs, 'Service', svcName) as K8sObject & { spec: { selector: Record<string, string>; ports: { name: string; targetPort: string }[] } };
        const template = podsOf(kind, wl);
        expect(matches(svc.spec.selector, template.metadata.labels), svcName).toBe(true);
        const portNames = template.spec.containers.flatMap((c) => (c.ports ?? []).map((p) => p.name));
        for (const p of svc.spec.ports) expect(portNames, svcName).toContain(p.targetPort);
      }
      const sm = find(objs, 'ServiceMonitor', 'm3ae-coordinator') as K8sObject & { spec: { selector: { matchLabels: Record<string, string> }; endpoints: { port: string; path: string }[] } };
      const coordSvc = find(objs, 'Service', 'm3ae-coordinator') as K8sObject & { spec: { ports: { name: string }[] } };
      expect(matches(sm.spec.selector.matchLabels, coordSvc.metadata.labels)).toBe(true);
      expect(matches(sm.spec.selector.matchLabels, find(objs, 'Service', 'm3ae-redis').metadata.labels)).toBe(false);
      expect(sm.spec.endpoints.map((e) => [e.port, e.path])).toEqual([[coordSvc.spec.ports[0]?.name, '/metrics']]);
      const pm = find(objs, 'PodMonitor', 'm3ae-worker') as K8sObject & { spec: { selector: { matchLabels: Record<string, string> }; podMetricsEndpoints: { port: string; path: string }[] } };
      const workerPods = podsOf('Deployment', 'm3ae-worker');
      expect(matches(pm.spec.selector.matchLabels, workerPods.metadata.labels)).toBe(true);
      expect(matches(pm.spec.selector.matchLabels, podsOf('Deployment', 'm3ae-coordinator').metadata.labels)).toBe(false);
      expect(workerPods.spec.containers[0]?.ports?.map((p) => p.name)).toContain(pm.spec.podMetricsEndpoints[0]?.port);
      const pdb = find(objs, 'PodDisruptionBudget', 'm3ae-worker') as K8sObject & { spec: { selector: { matchLabels: Record<string, string> }; maxUnavailable: number } };
      expect(matches(pdb.spec.selector.matchLabels, workerPods.metadata.labels)).toBe(true);
      expect(pdb.spec.maxUnavailable).toBe(1);
    }
  });

  it('ships the Grafana dashboard as a sidecar ConfigMap identical to the importable JSON', () => {
    const json = readFileSync(join(K8S_DIR, 'base/monitoring/m3ae-dashboard.json'), 'utf8');
    for (const overlay of OVERLAYS) {
      const cm = find(rendered[overlay], 'ConfigMap', 'm3ae-grafana-dashboard') as K8sObject & { data: Record<string, string> };
      expect(cm.metadata.labels?.['grafana_dashboard']).toBe('1');
      expect(cm.data['m3ae-dashboard.json']).toBe(json);
      // Only the dashboard carries the sidecar label.
      const labelled = rendered[overlay].filter((o) => o.metadata.labels?.['grafana_dashboard'] !== undefined).map((o) => o.metadata.name);
      expect(labelled).toEqual(['m3ae-grafana-dashboard']);
    }
  });

  describe('worker autoscaling', () => {
    let series: Map<string, Set<string>>;
    beforeAll(async () => {
      series = await exportedSeries();
    });

    it('scales the worker Deployment on exported run metrics for this overlay\u2019s run, never on the queue', () => {
      for (const overlay of OVERLAYS) {
        const objs = rendered[overlay];
        const so = find(objs, 'ScaledObject', 'm3ae-worker') as K8sObject & {
          spec: {
            scaleTargetRef: { name: string; kind: string };
            minReplicaCount: number;
            maxReplicaCount: number;
            triggers: { type: string; metadata: { query: string; threshold: string } }[];
            advanced: { horizontalPodAutoscalerConfig: { behavior: { scaleDown: { stabilizationWindowSeconds: number } } } };
          };
        };
        expect(so.spec.scaleTargetRef).toMatchObject({ kind: 'Deployment', name: 'm3ae-worker' });
        find(objs, 'Deployment', so.spec.scaleTargetRef.name);
        expect(so.spec.triggers).toHaveLength(1);
        const trigger = so.spec.triggers[0] as (typeof so.spec.triggers)[number];
        expect(trigger.type).toBe('prometheus');
        const a = analysePromql(trigger.metadata.query);
        expect(a.errors, trigger.metadata.query).toEqual([]);
        const metrics = a.selectors.map((s) => s.metric);
        expect(metrics.length).toBeGreaterThan(0);
        for (const m of metrics) expect(series.has(m), `${overlay}: ${m} is exported`).toBe(true);
        // Not the saw-tooth queue depth of synchronous steps.
        expect(metrics.some((m) => m.startsWith('bullmq_'))).toBe(false);
        // The run in the query is the run this overlay trains.
        const runs = [...trigger.metadata.query.matchAll(/run="([^"]+)"/g)].map((m) => m[1]);
        expect(new Set(runs), overlay).toEqual(new Set([runConfigOf(objs).runId]));
        expect(so.spec.maxReplicaCount).toBeGreaterThanOrEqual(1);
        expect(so.spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds).toBeGreaterThanOrEqual(300);
        // At most jobs-per-step workers are useful.
        const config = runConfigOf(objs);
        const training = pretrainTraining(config);
        expect(so.spec.maxReplicaCount).toBeLessThanOrEqual(jobsPerStep(training.globalBatch, training));
      }
    });
  });
});
