import type { RunSnapshot } from './run-snapshot.js';

/** What the run page averages of one step. */
export interface StepWindowEntry {
  durationMs: number;
  samples: number;
  tokens: number | null;
  /** Workers counted in the step. */
  workers: readonly string[];
  /** Coordinator milliseconds by phase. */
  phases: Record<string, number>;
  /** Mean worker milliseconds by phase. */
  worker: Record<string, number>;
}

/** The last `size` steps, and the run page's means over them: throughput, the time breakdown, each worker's share. */
export class RecentSteps {
  private readonly entries: StepWindowEntry[] = [];

  constructor(private readonly size: number) {}

  push(entry: StepWindowEntry): void {
    this.entries.push(entry);
    if (this.entries.length > this.size) this.entries.shift();
  }

  /** Wall milliseconds of the window's steps together. */
  durationMs(): number {
    return this.entries.reduce((a, r) => a + r.durationMs, 0);
  }

  throughput(): { secondsPerStep: number; samplesPerSecond: number; tokensPerSecond: number | null } | undefined {
    if (this.entries.length === 0) return undefined;
    let ms = 0;
    let samples = 0;
    let tokens = 0;
    let haveTokens = true;
    for (const r of this.entries) {
      ms += r.durationMs;
      samples += r.samples;
      if (r.tokens === null) haveTokens = false;
      else tokens += r.tokens;
    }
    if (ms <= 0) return undefined;
    return { secondsPerStep: ms / 1000 / this.entries.length, samplesPerSecond: samples / (ms / 1000), tokensPerSecond: haveTokens ? tokens / (ms / 1000) : null };
  }

  /** Mean milliseconds per phase: the coordinator's and the workers'. */
  breakdown(): RunSnapshot['breakdown'] {
    const mean = (pick: (r: StepWindowEntry) => Record<string, number>): Record<string, number> => {
      const sums: Record<string, number> = {};
      for (const r of this.entries) for (const [k, v] of Object.entries(pick(r))) sums[k] = (sums[k] ?? 0) + v;
      for (const k of Object.keys(sums)) sums[k] = (sums[k] as number) / this.entries.length;
      return sums;
    };
    return { steps: this.entries.length, coordinator: mean((r) => r.phases), worker: mean((r) => r.worker) };
  }

  /** Samples each worker accounted for: a step's samples shared evenly among the workers counted in it. */
  workerSamples(): Map<string, number> {
    const share = new Map<string, number>();
    for (const r of this.entries) {
      if (r.workers.length === 0) continue;
      for (const id of r.workers) share.set(id, (share.get(id) ?? 0) + r.samples / r.workers.length);
    }
    return share;
  }
}
