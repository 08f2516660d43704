import { Session } from 'node:inspector/promises';

/** The part of V8's CPU profile (`Profiler.stop`) read here. */
interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

export interface JsProfile {
  /** Sampled milliseconds of the main thread per call of `work`. */
  msPerCall: number;
  /** Self time per call by package (`node_modules/<package>`, the project's libs, Node.js, GC, native). */
  byPackage: [string, number][];
  /** Self time per call by function (native calls such as Dawn's count in the JavaScript function that makes them). */
  byFunction: [string, number][];
}

/** Where a frame's code lives: a package, one of the project's libs, Node.js itself, or V8's own entries. */
function home(url: string, name: string): string {
  if (url === '') return name || '(native)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (pkg) return pkg[1] as string;
  const lib = /\/(libs|apps|tools)\/([^/]+)\//.exec(url);
  if (lib) return `${lib[1]}/${lib[2]}`;
  return url.startsWith('node:') ? 'node' : url;
}

/**
 * Runs `work` `calls` times under V8's sampling profiler (the main thread only: what bounds a step that the device
 * waits on) and returns its self time by package and by function, per call. The profile is taken apart from any
 * timed run: sampling slows the code it samples.
 */
export async function profileJs(work: () => Promise<unknown>, calls: number, intervalMicros = 200): Promise<JsProfile> {
  const session = new Session();
  session.connect();
  try {
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: intervalMicros });
    await session.post('Profiler.start');
    for (let i = 0; i < calls; i++) await work();
    const { profile } = (await session.post('Profiler.stop')) as unknown as { profile: CpuProfile };
    const frames = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
    const parent = new Map<number, number>();
    for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    const byPackage = new Map<string, number>();
    const byFunction = new Map<string, number>();
    let total = 0;
    profile.samples.forEach((id, i) => {
      let f = frames.get(id);
      const up = frames.get(parent.get(id) ?? -1);
      const us = profile.timeDeltas[i] ?? 0;
      // Idle is the device's (or a timer's) time, not the thread's; the inspector's own work is the profiler's.
      if (!f || f.functionName === '(idle)' || f.url.startsWith('node:inspector') || up?.url.startsWith('node:inspector')) return;
      // A native function without a name (a binding such as Dawn's) counts in the JavaScript function that called it.
      const native = f.url === '' && f.functionName === '' && up !== undefined;
      if (native) f = up;
      total += us;
      const where = home(f.url, f.functionName);
      byPackage.set(where, (byPackage.get(where) ?? 0) + us);
      const fn = f.url === '' ? where : `${f.functionName || '(anonymous)'} (${where}:${f.lineNumber + 1})`;
      byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
    });
    const perCall = (m: Map<string, number>): [string, number][] => [...m].map(([k, us]): [string, number] => [k, us / 1000 / calls]).sort((a, b) => b[1] - a[1]);
    return { msPerCall: total / 1000 / calls, byPackage: perCall(byPackage), byFunction: perCall(byFunction) };
  } finally {
    await session.post('Profiler.disable').catch(() => undefined);
    session.disconnect();
  }
}

/** Two note lines: the busiest packages and functions, in ms per call and share. */
export function describeJsProfile(p: JsProfile, what: string, top = 10): string[] {
  const list = (rows: [string, number][]): string => rows.slice(0, top).map(([k, ms]) => `${k} ${ms.toFixed(1)} ms (${((100 * ms) / p.msPerCall).toFixed(0)} %)`).join(', ');
  return [
    `JavaScript profile of ${what} (main thread, sampled, ${p.msPerCall.toFixed(0)} ms a step; idle excluded), by package: ${list(p.byPackage)}`,
    `by function (native calls count in their caller): ${list(p.byFunction)}`,
  ];
}
