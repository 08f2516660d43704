/**
 * Merging Prometheus text expositions (format 0.0.4). BullMQ renders its queue metrics as text of its own;
 * two queues, or one queue added twice, would repeat `# HELP`/`# TYPE` lines, which Prometheus rejects
 * ("second TYPE line for metric name"). Samples are grouped by family, the first HELP and TYPE kept, exact
 * duplicate samples dropped, and families already present in the registry's own text are never repeated.
 */
interface Family {
  help?: string;
  type?: string;
  samples: string[];
}

export function mergeExpositions(texts: readonly string[]): string {
  const families = new Map<string, Family>();
  for (const text of texts) {
    let current: string | undefined;
    for (const raw of text.split('\n')) {
      const line = raw.trimEnd();
      if (line === '') continue;
      const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*)(?: (.*))?$/.exec(line);
      if (meta) {
        const [, kind, name] = meta as unknown as [string, 'HELP' | 'TYPE', string];
        current = name;
        const family = familyOf(families, name);
        if (kind === 'HELP') family.help ??= line;
        else family.type ??= line;
        continue;
      }
      if (line.startsWith('#')) continue;
      const sampleName = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)?.[0];
      if (!sampleName) continue;
      const owner = current !== undefined && belongsTo(sampleName, current) ? current : sampleName;
      const family = familyOf(families, owner);
      if (!family.samples.includes(line)) family.samples.push(line);
    }
  }
  const out: string[] = [];
  for (const family of families.values()) {
    if (family.help) out.push(family.help);
    if (family.type) out.push(family.type);
    out.push(...family.samples);
  }
  return out.length ? `${out.join('\n')}\n` : '';
}

function familyOf(families: Map<string, Family>, name: string): Family {
  let family = families.get(name);
  if (!family) {
    family = { samples: [] };
    families.set(name, family);
  }
  return family;
}

const SUFFIXES = ['_bucket', '_sum', '_count', '_total', '_created', '_info'];

function belongsTo(sampleName: string, family: string): boolean {
  if (sampleName === family) return true;
  return SUFFIXES.some((s) => sampleName === family + s);
}
