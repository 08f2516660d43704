import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { mergeExpositions } from './exposition.js';
import { scrubSecrets } from './redact.js';

/** What `tf.memory()` reports; read by a callback the caller supplies, so telemetry never imports tfjs. */
export interface TensorMemory {
  numTensors: number;
  numBytes: number;
  numDataBuffers?: number;
}

/** Anything with BullMQ's `Queue#exportPrometheusMetrics` (BullMQ ≥ 5.37). */
export interface PrometheusQueue {
  readonly name: string;
  exportPrometheusMetrics(globalVariables?: Record<string, string>): Promise<string>;
}

/** Blob traffic: parameters and gradients, read from or written to Redis. */
export type BlobKind = 'params' | 'gradients';
export type BlobDirection = 'read' | 'write';

/** Something `/metrics` can serve. */
export interface MetricsSource {
  readonly contentType: string;
  metrics(): Promise<string>;
}

export interface BaseMetricsOptions {
  /** Labels put on every series of this process (`run`, and `worker`/`backend` where they apply). */
  labels: Record<string, string>;
  /** Node's default metrics (event-loop lag, heap, GC, CPU, RSS). @defaultValue true */
  defaultMetrics?: boolean;
  /** Reads `tf.memory()` at scrape time, e.g. `() => tf.memory()`. */
  tensorMemory?: () => TensorMemory;
  /** How long a BullMQ export may take before the scrape goes on without it. @defaultValue 2000 */
  queueExportTimeoutMs?: number;
}

const NON_COUNTER_TOTALS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/**
 * BullMQ names its job-count gauge `bullmq_job_count`; `_count` is reserved for histograms and summaries
 * (promtool rejects it), so it is served as `bullmq_jobs{queue, state}`. Its counters keep their names.
 */
export const QUEUE_METRIC_RENAMES: Readonly<Record<string, string>> = { bullmq_job_count: 'bullmq_jobs' };

export function renameQueueMetrics(text: string): string {
  let out = text;
  for (const [from, to] of Object.entries(QUEUE_METRIC_RENAMES)) {
    out = out.replace(new RegExp(`(^|\\n)(# (?:HELP|TYPE) )?${from}(?=[\\s{])`, 'g'), `$1$2${to}`);
  }
  return out;
}

/** Label names must be Prometheus label names; values are free text but never secrets. */
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * What the coordinator's and the workers' registries share: process labels, Node's default metrics,
 * blob bytes, skipped samples, live tensors, and BullMQ's queue export merged into the scrape.
 */
export abstract class BaseMetrics implements MetricsSource {
  readonly registry = new Registry();
  protected readonly labels: Record<string, string>;
  private readonly queues = new Map<string, PrometheusQueue>();
  private readonly queueExportTimeoutMs: number;
  private tensorMemorySource: (() => TensorMemory) | undefined;
  private pushedTensorMemory: TensorMemory | undefined;
  private readonly skipTotals = new Map<string, number>();

  private readonly blobBytes: Counter<'blob' | 'direction'>;
  private readonly samplesSkipped: Counter<'reason'>;
  private readonly queueExportErrors: Counter;

  protected constructor(options: BaseMetricsOptions) {
    for (const [name, value] of Object.entries(options.labels)) {
      if (!LABEL_NAME.test(name)) throw new Error(`metrics: label name ${JSON.stringify(name)} is not a Prometheus label name`);
      if (typeof value !== 'string' || value === '') {
        throw new Error(`metrics: label ${name} is ${JSON.stringify(value)}; expected a non-empty string`);
      }
    }
    this.labels = { ...options.labels };
    this.registry.setDefaultLabels(this.labels);
    this.queueExportTimeoutMs = options.queueExportTimeoutMs ?? 2000;
    this.tensorMemorySource = options.tensorMemory;
    if (options.defaultMetrics ?? true) {
      collectDefaultMetrics({ register: this.registry });
      // prom-client names these gauges `_total`, a suffix Prometheus reserves for counters (promtool rejects
      // it); the per-type gauges without the suffix carry the same numbers (sum them).
      for (const name of NON_COUNTER_TOTALS) this.registry.removeSingleMetric(name);
    }

    const registers = [this.registry];
    this.blobBytes = new Counter({
      name: 'm3ae_blob_bytes_total',
      help: 'Bytes of parameter and gradient blobs moved through Redis, by blob kind and direction (read, write).',
      labelNames: ['blob', 'direction'],
      registers,
    });
    this.samplesSkipped = new Counter({
      name: 'm3ae_samples_skipped_total',
      help: 'Dataset samples skipped instead of trained on, by reason (missing-image, unreadable-image, …).',
      labelNames: ['reason'],
      registers,
    });
    this.queueExportErrors = new Counter({
      name: 'm3ae_queue_export_errors_total',
      help: 'Scrapes in which the BullMQ queue export failed or timed out (queue metrics missing from that scrape).',
      registers,
    });
    const readMemory = (): TensorMemory | undefined => this.readTensorMemory();
    new Gauge({
      name: 'm3ae_tensors',
      help: 'Live tfjs tensors in this process (tf.memory().numTensors); flat over steps unless something leaks.',
      registers,
      collect() {
        const mem = readMemory();
        if (mem) this.set(mem.numTensors);
      },
    });
    new Gauge({
      name: 'm3ae_tensor_memory_bytes',
      help: 'Bytes held by live tfjs tensors in this process (tf.memory().numBytes).',
      registers,
      collect() {
        const mem = readMemory();
        if (mem) this.set(mem.numBytes);
      },
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Changes one process label (e.g. `backend` once the compute thread has chosen it); applies to every series. */
  protected setLabel(name: string, value: string): void {
    if (value === '') throw new Error(`metrics: label ${name} must not be empty`);
    this.labels[name] = value;
    this.registry.setDefaultLabels({ ...this.labels });
  }

  /** Counts blob traffic (`bytes` ≥ 0). */
  bytesMoved(blob: BlobKind, direction: BlobDirection, bytes: number): void {
    if (!(bytes >= 0)) throw new Error(`metrics: bytesMoved bytes is ${bytes}; expected a number ≥ 0`);
    this.blobBytes.inc({ blob, direction }, bytes);
  }

  /** Adds skipped samples by reason (deltas, e.g. from one batch). */
  addSkips(counts: Readonly<Record<string, number>>): void {
    for (const [reason, n] of Object.entries(counts)) {
      if (n > 0) {
        this.samplesSkipped.inc({ reason }, n);
        this.skipTotals.set(reason, (this.skipTotals.get(reason) ?? 0) + n);
      }
    }
  }

  /**
   * Sets skipped samples from cumulative totals (a `SkipLog.counts()`): only the growth since the last call is
   * added, so calling it after every batch with the same log is right.
   */
  setSkipTotals(totals: Readonly<Record<string, number>>): void {
    const deltas: Record<string, number> = {};
    for (const [reason, total] of Object.entries(totals)) {
      const seen = this.skipTotals.get(reason) ?? 0;
      if (total > seen) deltas[reason] = total - seen;
    }
    this.addSkips(deltas);
  }

  /** Pushes a `tf.memory()` reading taken elsewhere (e.g. inside the compute thread, returned with a job). */
  setTensorMemory(memory: TensorMemory): void {
    this.pushedTensorMemory = { ...memory };
  }

  /** Merges this queue's `exportPrometheusMetrics()` into every scrape (labelled with this process's labels). */
  addQueue(queue: PrometheusQueue): void {
    this.queues.set(queue.name, queue);
  }

  removeQueue(queue: PrometheusQueue): void {
    this.queues.delete(queue.name);
  }

  /** The Prometheus text of this registry with the queues' exports merged in. */
  async metrics(): Promise<string> {
    // Queue exports first, so a failure is already counted in this very scrape.
    const queueTexts = await Promise.all([...this.queues.values()].map((q) => this.exportQueue(q)));
    const own = await this.registry.metrics();
    const extra = queueTexts.filter((t): t is string => t !== undefined);
    return extra.length ? mergeExpositions([own, ...extra]) : own;
  }

  private async exportQueue(queue: PrometheusQueue): Promise<string | undefined> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const text = await Promise.race([
        queue.exportPrometheusMetrics({ ...this.labels }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`queue ${queue.name}: export timed out`)), this.queueExportTimeoutMs);
        }),
      ]);
      return renameQueueMetrics(text);
    } catch (err) {
      this.queueExportErrors.inc();
      this.lastQueueExportError = scrubSecrets(err instanceof Error ? err.message : String(err));
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The last queue-export failure (scrubbed), for logs and `/status`. */
  lastQueueExportError: string | undefined;

  private readTensorMemory(): TensorMemory | undefined {
    if (!this.tensorMemorySource) return this.pushedTensorMemory;
    try {
      return this.tensorMemorySource();
    } catch {
      // A disposed backend must not fail the whole scrape; the gauges keep their last value.
      return undefined;
    }
  }
}
