// Internal (not in the barrel): the argument checks the metrics classes share; every message starts "metrics: ".

export function requireNonNegative(what: string, value: number): void {
  if (!(Number.isFinite(value) && value >= 0)) throw new Error(`metrics: ${what} is ${value}; expected a finite number ≥ 0`);
}

/** The given phases as (phase, seconds), every one checked (a name in `allowed`, seconds ≥ 0) before any is counted. */
export function checkedPhases(what: string, allowed: readonly string[], phases: Readonly<Record<string, number | undefined>> | undefined): [string, number][] {
  const entries = Object.entries(phases ?? {}).filter((e): e is [string, number] => e[1] !== undefined);
  for (const [phase, seconds] of entries) {
    if (!allowed.includes(phase)) throw new Error(`metrics: ${what}.${phase} is not one of ${allowed.join(', ')}`);
    requireNonNegative(`${what}.${phase}`, seconds);
  }
  return entries;
}
