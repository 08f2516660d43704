import type { BenchReport } from './report.js';

/** Options every bench area receives (parsed from the command line). */
export interface BenchOptions {
  readonly backend?: string | undefined;
  readonly quick: boolean;
  readonly extra: Readonly<Record<string, string | undefined>>;
}

export interface BenchArea {
  readonly description: string;
  run(options: BenchOptions): Promise<Omit<BenchReport, 'command' | 'date'>>;
}

const areas = new Map<string, BenchArea>();

/** Later issues add areas (`model`, `data`, `training`, `scaling`, `learning`) by registering them here. */
export function registerBenchArea(name: string, area: BenchArea): void {
  areas.set(name, area);
}

export function benchArea(name: string): BenchArea {
  const area = areas.get(name);
  if (!area) throw new Error(`bench area ${JSON.stringify(name)} is unknown; expected one of ${[...areas.keys()].join(', ')}`);
  return area;
}

export function benchAreaNames(): string[] {
  return [...areas.keys()];
}
