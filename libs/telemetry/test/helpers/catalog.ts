import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { CoordinatorMetrics } from '../../src/coordinator-metrics.js';
import { WorkerMetrics } from '../../src/worker-metrics.js';
import { parseExposition, seriesNames } from './exposition.js';
import { SHARED_REDIS_URL } from './redis.js';

/**
 * Every series name the services really export, with the label names each carries — read from the
 * registries' own scrape output after every recording method has been called once, with a real BullMQ
 * queue merged in (so BullMQ's names are the ones it really produces, after our renaming).
 */
export async function exportedSeries(): Promise<Map<string, Set<string>>> {
  const coordinator = new CoordinatorMetrics({ run: 'catalog', tensorMemory: () => ({ numTensors: 1, numBytes: 1 }) });
  coordinator.setRunInfo({ totalSteps: 2, jobsPerStep: 1, globalBatchSize: 1, startStep: 0 });
  coordinator.observeStep({
    step: 1,
    durationSeconds: 1,
    losses: { total: 1, mlm: 1, mim: 1, itm: 1 },
    accuracy: { mlm: 1, itm: 1 },
    learningRate: 1,
    gradientNorm: 1,
    samples: 1,
    tokens: 1,
    phases: { publish: 1, enqueue: 1, idle: 1, reduction: 1, optimizer: 1, checkpoint: 1 },
    jobPhases: { fetch: 1, compute: 1, encode: 1, upload: 1 },
  });
  coordinator.jobEnqueued();
  coordinator.jobAccepted('w');
  coordinator.jobRetried();
  coordinator.jobRedelivered();
  coordinator.jobRejected('checksum');
  coordinator.jobDuplicated();
  coordinator.backupJobEnqueued();
  coordinator.backupJobWon();
  coordinator.setActiveWorkers(1);
  coordinator.bytesMoved('params', 'write', 1);
  coordinator.addSkips({ 'missing-image': 1 });
  coordinator.observeCheckpoint({ step: 1, durationSeconds: 1 });
  coordinator.observeCheckpoint({ step: 1, durationSeconds: 1, ok: false });
  coordinator.observeValidation({ step: 1, score: 0.5, best: { step: 1, score: 0.5 } });
  coordinator.observeEvaluation({ step: 1, loss: { mlm: 1, mim: 1, itm: 1 }, accuracy: { mlm: 0.5, itm: 0.5 }, baseline: { unigramEntropy: 1, unigramHeldOut: 1, itmChance: 0.5 } });

  const worker = new WorkerMetrics({ run: 'catalog', worker: 'w', backend: 'wasm', tensorMemory: () => ({ numTensors: 1, numBytes: 1 }) });
  worker.observeJob({ durationSeconds: 1, samples: 1, tokens: 1, step: 1, phases: { fetch: 1, compute: 1, encode: 1, upload: 1 } });
  worker.paramLookup(true);
  worker.setBusy(true);
  worker.bytesMoved('params', 'read', 1);
  worker.addSkips({ 'missing-image': 1 });

  const connection = new Redis(SHARED_REDIS_URL, { maxRetriesPerRequest: null });
  const queue = new Queue(`m3ae-catalog-${randomUUID()}`, { connection });
  try {
    coordinator.addQueue(queue);
    const series = new Map<string, Set<string>>();
    for (const text of [await coordinator.metrics(), await worker.metrics()]) {
      const exp = parseExposition(text);
      for (const [family, type] of exp.types) for (const name of seriesNames(family, type)) if (!series.has(name)) series.set(name, new Set());
      for (const s of exp.samples) {
        const labels = series.get(s.name) ?? new Set<string>();
        for (const l of Object.keys(s.labels)) labels.add(l);
        series.set(s.name, labels);
      }
    }
    if (!series.has('bullmq_jobs')) throw new Error('the BullMQ export did not reach the scrape');
    return series;
  } finally {
    await queue.obliterate({ force: true });
    await queue.close();
    connection.disconnect();
  }
}

/** Labels Prometheus itself attaches to every scraped series (job, instance, and the operator's target labels). */
export const TARGET_LABELS = new Set(['job', 'instance', 'namespace', 'pod', 'container', 'service', 'endpoint']);
