import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { sameTotals, type RunConfig } from '@m3ae/protocol';
import { createComputer, type GradientComputer } from './compute/gradient-computer.js';
import { computeContribution, type JobContribution } from './compute/job-contribution.js';
import { ThreadedComputer } from './compute/threaded-computer.js';
import { StopRequested, type GatherStats, type GradientSource, type StepWork } from './gradient-source.js';
import type { TrainingSetup } from './setup/training-setup.js';
import type { StepReduction } from './reduction/sharded-reduction.js';
import { Trainer, type RunSummary, type TrainerEvents } from './trainer.js';

export class InProcessError extends Error {
  override readonly name = 'InProcessError';
}

export interface InProcessOptions {
  /**
   * Computers working on a step's jobs side by side: 1 computes in this thread; n > 1 starts n compute threads
   * (`worker_threads`, each holding the model), job k going to thread k mod n. Same parameters either way.
   * @defaultValue 1
   */
  threads?: number | undefined;
}

/**
 * The {@link GradientSource} of a run in one process (`m3ae finetune` without workers, `m3ae bench learning`): the
 * same gradient computers the workers use, fed the trainer's jobs directly, their gradients encoded as the run's
 * `training.gradEncoding` puts them on the wire — so the sum, and the parameters, equal a cluster's.
 */
export class InProcessSource implements GradientSource {
  private params: Float32Array | undefined;
  private closed = false;

  private constructor(
    private readonly computers: GradientComputer[],
    private readonly incarnation: string,
  ) {}

  static async create(config: RunConfig, incarnation: string, options: InProcessOptions = {}): Promise<InProcessSource> {
    const threads = Math.max(1, Math.floor(options.threads ?? 1));
    const computers: GradientComputer[] = [];
    try {
      if (threads === 1) computers.push(await createComputer(config));
      else for (let t = 0; t < threads; t++) computers.push(await ThreadedComputer.start(config));
    } catch (e) {
      await Promise.all(computers.map((c) => c.dispose()));
      throw e;
    }
    return new InProcessSource(computers, incarnation);
  }

  /** The computers' backend (`wasm`, `cpu`, …, or `synthetic`). */
  get backend(): string {
    return (this.computers[0] as GradientComputer).backend;
  }

  async start(): Promise<void> {
    // Nothing to set up: the computers exist.
  }

  async gather(work: StepWork, reducer: StepReduction, shouldStop: () => boolean): Promise<GatherStats> {
    if (this.closed) throw new InProcessError('the in-process source is closed');
    const t0 = performance.now();
    const shared = this.sharedParams(reducer.params);
    const n = this.computers.length;
    const timings = { computeMs: 0, encodeMs: 0 };
    let failed = false;
    await Promise.all(
      this.computers.map(async (computer, c) => {
        for (let k = c; k < work.jobs.length && !failed; k += n) {
          if (shouldStop()) throw new StopRequested('stop requested');
          try {
            const job = { ...(work.jobs[k] as StepWork['jobs'][number]), copy: 0, params: [{ checksum: `${this.incarnation}:${work.version}` }] };
            const r = await computeContribution(computer, job, shared);
            this.check(work, k, r);
            timings.computeMs += r.computeMs;
            timings.encodeMs += r.encodeMs;
            await reducer.add(k, { gradient: { bytes: r.bytes, encoding: r.encoding }, sums: r.sums, counts: r.counts, correct: r.correct, tokens: r.tokens });
          } catch (e) {
            failed = true;
            throw e;
          }
        }
      }),
    );
    if (!reducer.complete) throw new InProcessError(`step ${work.step}: ${reducer.missing().length} job(s) were not computed`);
    const jobs = work.jobs.length;
    return {
      phases: { publishMs: 0, enqueueMs: 0, idleMs: 0, reduceMs: performance.now() - t0 },
      worker: { fetchMs: 0, computeMs: timings.computeMs / jobs, encodeMs: timings.encodeMs / jobs, uploadMs: 0, totalMs: (timings.computeMs + timings.encodeMs) / jobs },
      bytes: { params: 0, grads: 0 },
      jobs: { enqueued: jobs, rejected: 0, duplicates: 0, backups: 0, retried: 0 },
      workers: this.computers.map((_, c) => `in-process-${c}`),
      recoveries: 0,
    };
  }

  async finishStep(): Promise<void> {
    // Nothing left in transport.
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.computers.map((c) => c.dispose()));
  }

  /** With threads, the parameters go through one shared buffer (the threads read it, nothing is copied per job). */
  private sharedParams(params: Float32Array): Float32Array {
    if (this.computers.length === 1 || params.buffer instanceof SharedArrayBuffer) return params;
    this.params ??= new Float32Array(new SharedArrayBuffer(params.byteLength));
    this.params.set(params);
    return this.params;
  }

  /** A computer must count what the trainer planned (as the coordinator checks a worker's contribution). */
  private check(work: StepWork, k: number, r: JobContribution): void {
    const want = work.expected[k] ?? {};
    if (!sameTotals(r.counts, want)) throw new InProcessError(`step ${work.step} job ${k}: counts ${JSON.stringify(r.counts)}; expected ${JSON.stringify(want)} (different data or masking?)`);
  }
}

export interface TrainInProcessOptions extends InProcessOptions {
  /** Continue from the latest checkpoint of `checkpoint.dir`. */
  resume?: boolean | undefined;
  /** Stops after the current step (a checkpoint of it is written). */
  signal?: AbortSignal | undefined;
  logger?: Logger | undefined;
  events?: TrainerEvents | undefined;
}

/** Trains `setup` in this process: the {@link Trainer} fed by an {@link InProcessSource}. The caller closes `setup`. */
export async function trainInProcess(config: RunConfig, setup: TrainingSetup, o: TrainInProcessOptions = {}): Promise<RunSummary> {
  const incarnation = randomUUID();
  const source = await InProcessSource.create(config, incarnation, { threads: o.threads });
  const trainer = new Trainer({ config, setup, source, incarnation, resume: o.resume, logger: o.logger, events: o.events });
  const stop = (): void => trainer.stop();
  o.signal?.addEventListener('abort', stop);
  try {
    if (o.signal?.aborted) trainer.stop();
    return await trainer.run();
  } finally {
    o.signal?.removeEventListener('abort', stop);
    await source.close();
  }
}
