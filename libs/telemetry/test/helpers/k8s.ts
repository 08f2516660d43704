import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Service } from 'kubernetes-models/v1/Service';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { Job } from 'kubernetes-models/batch/v1/Job';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject';

export const WORKSPACE = join(import.meta.dirname, '../../../..');
export const K8S_DIR = join(WORKSPACE, 'k8s');

/** A rendered Kubernetes object (only what the checks read is typed). */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

const KUBECTL_INSTALL = 'apt-get install -y kubernetes-client   (Debian\u2019s package; .ci/run installs it when kubectl is missing)';

/** Warnings newer kustomize prints for the v2-compatible fields the manifests use on purpose. */
const ALLOWED_STDERR = /^# Warning: '(bases|patchesStrategicMerge)' is deprecated\./;

/** `kubectl kustomize DIR`, failing on any error or unexpected warning. */
export function kustomize(dir: string): K8sObject[] {
  const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
  if (r.error) throw new Error(`kubectl is not on PATH, so the k8s/ overlays cannot be rendered. Install it: ${KUBECTL_INSTALL}`);
  if (r.status !== 0) throw new Error(`kubectl kustomize ${dir} failed (exit ${r.status}):\n${r.stderr}`);
  const unexpected = r.stderr.split('\n').filter((l) => l.trim() !== '' && !ALLOWED_STDERR.test(l));
  if (unexpected.length) throw new Error(`kubectl kustomize ${dir} printed:\n${unexpected.join('\n')}`);
  const docs = parseAllDocuments(r.stdout);
  for (const d of docs) if (d.errors.length) throw new Error(`kubectl kustomize ${dir}: bad YAML: ${d.errors[0]?.message}`);
  return docs.map((d) => d.toJS() as K8sObject).filter((o) => o !== null);
}

export function kubectlVersion(): string {
  const r = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
  return (r.stdout || r.stderr).split('\n')[0] ?? '';
}

interface KindModel {
  /** Runtime validation (the generated JSON-schema validators of kubernetes-models). */
  validate(obj: K8sObject): void;
  /** Module and interface for the strict compile-time check. */
  module: string;
  iface: string;
}

function model(ctor: new (data: never) => { validate(): void }, module: string, iface: string): KindModel {
  return { validate: (obj) => new ctor(obj as never).validate(), module, iface };
}

/** Every kind the manifests may contain, with its schema; anything else is an error. */
export const KINDS: Record<string, KindModel> = {
  'v1/Namespace': model(Namespace, 'kubernetes-models/v1/Namespace', 'INamespace'),
  'v1/ConfigMap': model(ConfigMap, 'kubernetes-models/v1/ConfigMap', 'IConfigMap'),
  'v1/Service': model(Service, 'kubernetes-models/v1/Service', 'IService'),
  'v1/PersistentVolumeClaim': model(PersistentVolumeClaim, 'kubernetes-models/v1/PersistentVolumeClaim', 'IPersistentVolumeClaim'),
  'apps/v1/Deployment': model(Deployment, 'kubernetes-models/apps/v1/Deployment', 'IDeployment'),
  'apps/v1/StatefulSet': model(StatefulSet, 'kubernetes-models/apps/v1/StatefulSet', 'IStatefulSet'),
  'batch/v1/Job': model(Job, 'kubernetes-models/batch/v1/Job', 'IJob'),
  'policy/v1/PodDisruptionBudget': model(PodDisruptionBudget, 'kubernetes-models/policy/v1/PodDisruptionBudget', 'IPodDisruptionBudget'),
  'networking.k8s.io/v1/NetworkPolicy': model(NetworkPolicy, 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy', 'INetworkPolicy'),
  'monitoring.coreos.com/v1/ServiceMonitor': model(
    ServiceMonitor,
    '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor',
    'IServiceMonitor',
  ),
  'monitoring.coreos.com/v1/PodMonitor': model(PodMonitor, '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor', 'IPodMonitor'),
  'keda.sh/v1alpha1/ScaledObject': model(ScaledObject, '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject', 'IScaledObject'),
};

export function kindKey(obj: K8sObject): string {
  return `${obj.apiVersion}/${obj.kind}`;
}

/**
 * Schema validation, part 1: each object through the validator generated from its OpenAPI schema
 * (types, formats such as quantities, enums, required fields). Returns one line per problem.
 */
export function validateSchemas(objects: readonly K8sObject[], where: string): string[] {
  const problems: string[] = [];
  for (const obj of objects) {
    const kind = KINDS[kindKey(obj)];
    if (!kind) {
      problems.push(`${where}: ${kindKey(obj)} ${obj.metadata?.name}: no schema for this kind (add it to KINDS)`);
      continue;
    }
    try {
      kind.validate(obj);
    } catch (err) {
      problems.push(`${where}: ${obj.kind} ${obj.metadata.name}: ${(err as Error).message}`);
    }
  }
  return problems;
}

/**
 * Schema validation, part 2: unknown fields. The OpenAPI schemas allow any extra property, so a misspelt
 * field (`livenessprobe`, `replcas`) would pass part 1 and be dropped by the API server. Each object is
 * type-checked as an object literal of its kubernetes-models interface, where TypeScript rejects every
 * property the schema does not define (kubeconform's `-strict`, offline).
 */
export function checkUnknownFields(sets: Record<string, readonly K8sObject[]>): string[] {
  const files = new Map<string, { text: string; objects: K8sObject[] }>();
  for (const [where, objects] of Object.entries(sets)) {
    const imports = new Set<string>();
    const lines: string[] = [];
    for (const obj of objects) {
      const kind = KINDS[kindKey(obj)];
      if (!kind) continue;
      imports.add(`import type { ${kind.iface} } from '${kind.module}';`);
      lines.push(`export const o${lines.length}: ${kind.iface} = ${JSON.stringify(obj)};`);
    }
    const name = join(WORKSPACE, 'libs/telemetry/test', `__k8s_${where.replace(/[^a-z0-9]+/gi, '_')}.ts`);
    const kept = objects.filter((o) => KINDS[kindKey(o)]);
    files.set(name, { text: `${[...imports].join('\n')}\n${lines.join('\n')}\n`, objects: kept });
  }
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  const readFile = host.readFile.bind(host);
  // The files exist only in memory: nothing is written into the repository.
  host.getSourceFile = (fileName, languageVersion, ...rest) => {
    const f = files.get(fileName);
    return f ? ts.createSourceFile(fileName, f.text, languageVersion) : getSourceFile(fileName, languageVersion, ...rest);
  };
  host.fileExists = (fileName) => files.has(fileName) || fileExists(fileName);
  host.readFile = (fileName) => files.get(fileName)?.text ?? readFile(fileName);
  const program = ts.createProgram([...files.keys()], options, host);
  const problems: string[] = [];
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(d.messageText, ' ');
    const file = d.file ? files.get(d.file.fileName) : undefined;
    if (!d.file || !file || d.start === undefined) {
      problems.push(message);
      continue;
    }
    const importLines = file.text.split('\n').findIndex((l) => l.startsWith('export const'));
    const line = d.file.getLineAndCharacterOfPosition(d.start).line - importLines;
    const obj = file.objects[line];
    const where = [...files.entries()].find(([, v]) => v === file)?.[0] ?? '';
    problems.push(`${where.split('__k8s_')[1]?.replace(/\.ts$/, '')}: ${obj ? `${obj.kind} ${obj.metadata.name}` : `line ${line}`}: ${message}`);
  }
  return problems;
}

/** Bytes of a Kubernetes quantity (`16Gi`, `512Mi`, `1G`) or of a Redis memory size (`12gb`, `3g`). */
export function bytesOf(size: string): number {
  const m = /^(\d+(?:\.\d+)?)([A-Za-z]*)$/.exec(size.trim());
  if (!m) throw new Error(`not a size: ${size}`);
  const units: Record<string, number> = {
    '': 1, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12,
    // Redis: "1gb" is 1024^3, "1g" is 1000^3 (redis.conf documentation)
    kb: 2 ** 10, mb: 2 ** 20, gb: 2 ** 30, m: 1e6, g: 1e9,
  };
  const unit = units[m[2] as string];
  if (unit === undefined) throw new Error(`unknown unit in ${size}`);
  return Number(m[1]) * unit;
}
