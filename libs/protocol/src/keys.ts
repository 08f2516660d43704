import { ProtocolError } from './errors.js';

/** A run id is part of every Redis key and queue name: letters, digits, `_`, `.`, `-` (no `:`, `*`, braces). */
export const RUN_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function assertRunId(runId: string): void {
  if (!RUN_ID_PATTERN.test(runId)) {
    throw new ProtocolError(`runId ${JSON.stringify(runId)} is not valid; expected 1–64 characters of letters, digits, "_", "." or "-", starting with a letter or digit`);
  }
}

/** The BullMQ queue name of micro-batch jobs; its keys live under {@link RunKeys.bullPrefix}. */
export const JOB_QUEUE_NAME = 'microbatches';

/**
 * The Redis key layout. Everything a run writes lives under `m3ae:<runId>:`, so runs share a Redis safely
 * and one `SCAN MATCH m3ae:<runId>:*` finds (and clears) all of it:
 *
 * | key | what |
 * |---|---|
 * | `m3ae:<run>:coordinator` | hash: incarnation, step, version, manifestHash (also the "Redis still has our data" sentinel), backendKind (the first worker's backend; others are refused) |
 * | `m3ae:<run>:results` | list of contribution messages (JSON), pushed by workers, popped by the coordinator |
 * | `m3ae:<run>:params:v<version>:<chunk>` | parameter blob chunks (f32) |
 * | `m3ae:<run>:grads:s<step>:j<job>:<worker>:<nonce>:<chunk>` | gradient blob chunks, one blob per computation |
 * | `m3ae:<run>:workers:<worker>` | worker heartbeat (expires) |
 * | `m3ae:<run>:bull:microbatches:*` | the BullMQ queue |
 */
export class RunKeys {
  readonly prefix: string;
  constructor(readonly runId: string) {
    assertRunId(runId);
    this.prefix = `m3ae:${runId}`;
  }
  /** BullMQ `prefix` option: queue keys become `m3ae:<run>:bull:<queue>:…`. */
  get bullPrefix(): string {
    return `${this.prefix}:bull`;
  }
  get coordinator(): string {
    return `${this.prefix}:coordinator`;
  }
  get results(): string {
    return `${this.prefix}:results`;
  }
  params(version: number): string {
    return `${this.prefix}:params:v${version}`;
  }
  get paramsPattern(): string {
    return `${this.prefix}:params:*`;
  }
  grad(step: number, jobIndex: number, workerId: string, nonce: string): string {
    return `${this.prefix}:grads:s${step}:j${jobIndex}:${workerId.replace(/[^A-Za-z0-9_.-]/g, '_')}:${nonce}`;
  }
  get gradsPattern(): string {
    return `${this.prefix}:grads:*`;
  }
  worker(workerId: string): string {
    return `${this.prefix}:workers:${workerId.replace(/[^A-Za-z0-9_.-]/g, '_')}`;
  }
  get workersPattern(): string {
    return `${this.prefix}:workers:*`;
  }
  /** Every key of the run. */
  get allPattern(): string {
    return `${this.prefix}:*`;
  }
  /** Whether a key belongs to this run's blob space (used to refuse blob refs pointing elsewhere). */
  ownsBlob(key: string): boolean {
    return key.startsWith(`${this.prefix}:params:`) || key.startsWith(`${this.prefix}:grads:`);
  }
}
