import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { cpus, totalmem, platform, arch } from 'node:os';

/** What a benchmark row holds: a label column and figures. */
export type BenchRow = Record<string, string | number>;

/** The mean of some figures (0 for none). */
export const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

export interface MachineInfo {
  cpu: string;
  cpus: number;
  memoryGiB: number;
  node: string;
  platform: string;
  backend?: string;
}

/** The JSON every `m3ae bench <area> --json FILE` writes. */
export interface BenchReport {
  area: string;
  command: string;
  date: string;
  machine: MachineInfo;
  /** The table as printed. */
  rows: BenchRow[];
  /** Headline figures (ratios against an in-run baseline where there is one). */
  figures: Record<string, number | string | boolean>;
  notes: string[];
}

export function machineInfo(backend?: string): MachineInfo {
  const c = cpus();
  return {
    cpu: c[0]?.model.trim() ?? 'unknown',
    cpus: c.length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.versions.node,
    platform: `${platform()}-${arch()}`,
    ...(backend ? { backend } : {}),
  };
}

/** CPU time of the whole machine so far, all cores together (ms): busy (user, nice, sys, irq) and in all. */
export interface MachineCpuTimes {
  busyMs: number;
  totalMs: number;
}

export function machineCpuTimes(): MachineCpuTimes {
  let busyMs = 0;
  let totalMs = 0;
  for (const c of cpus()) {
    const { user, nice, sys, idle, irq } = c.times;
    busyMs += user + nice + sys + irq;
    totalMs += user + nice + sys + idle + irq;
  }
  return { busyMs, totalMs };
}

/**
 * How busy the machine's cores were between two readings: the fraction of core time that was not idle, and the busy
 * core-milliseconds — every process's, this bench's and anyone else's.
 */
export function machineBusy(before: MachineCpuTimes, after: MachineCpuTimes): { fraction: number; busyMs: number } {
  const busyMs = after.busyMs - before.busyMs;
  const totalMs = after.totalMs - before.totalMs;
  return { fraction: totalMs > 0 ? busyMs / totalMs : 0, busyMs };
}

function cell(v: string | number): string {
  if (typeof v === 'string') return v;
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toPrecision(3);
}

/** A plain aligned text table (first column left-aligned, figures right-aligned). */
export function formatTable(rows: readonly BenchRow[]): string {
  if (rows.length === 0) return '(no rows)';
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const text = rows.map((r) => cols.map((c) => (r[c] === undefined ? '' : cell(r[c] as string | number))));
  const widths = cols.map((c, i) => Math.max(c.length, ...text.map((t) => (t[i] ?? '').length)));
  const line = (vals: string[]): string => vals.map((v, i) => (i === 0 ? v.padEnd(widths[i] ?? 0) : v.padStart(widths[i] ?? 0))).join('  ');
  return [line(cols), widths.map((w) => '-'.repeat(w)).join('  '), ...text.map(line)].join('\n');
}

export function formatReport(r: BenchReport): string {
  const figs = Object.entries(r.figures).map(([k, v]) => `  ${k}: ${typeof v === 'number' ? cell(v) : String(v)}`);
  return [
    `m3ae bench ${r.area} — ${r.machine.cpus}× ${r.machine.cpu}, node ${r.machine.node}${r.machine.backend ? `, backend ${r.machine.backend}` : ''}`,
    '',
    formatTable(r.rows),
    '',
    ...(figs.length ? ['figures:', ...figs] : []),
    ...r.notes.map((n) => `note: ${n}`),
  ].join('\n');
}

export function writeReport(file: string, r: BenchReport): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(r, null, 2) + '\n');
}
