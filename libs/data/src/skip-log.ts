/**
 * Why a reader (or `m3ae prepare`) left a record out. Only problems are skipped and counted; records left out on
 * purpose by a selection option (another split, non-radiology, another language) are not skips.
 */
export const SKIP_REASONS = [
  'missing-image',
  'unreadable-image',
  'empty-text',
  'too-short-text',
  'malformed-line',
  'duplicate-id',
] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

export interface SkipEntry {
  reason: SkipReason;
  /** The file that held the record (the annotation file, or the image for image problems). */
  file: string;
  /** 1-based line of the record in `file`; for JSON-array files, the 1-based element number. 0 when unknown. */
  line: number;
  detail: string;
}

export interface SkipLogJson {
  counts: Partial<Record<SkipReason, number>>;
  entries: SkipEntry[];
  /** Entries left out because of the cap (counts stay exact). */
  droppedEntries: number;
}

export interface SkipLogOptions {
  /**
   * How many entries to keep; counts are exact regardless.
   * @defaultValue 1000
   */
  maxEntries?: number;
}

/** Counts every skip by reason (exact) and keeps the first `maxEntries` entries with file, line and detail. */
export class SkipLog {
  readonly maxEntries: number;
  private readonly byReason = new Map<SkipReason, number>();
  private readonly kept: SkipEntry[] = [];
  private dropped = 0;

  constructor(options: SkipLogOptions = {}) {
    const maxEntries = options.maxEntries ?? 1000;
    if (!Number.isInteger(maxEntries) || maxEntries < 0) {
      throw new RangeError(`SkipLog: maxEntries must be an integer >= 0, got ${String(maxEntries)}`);
    }
    this.maxEntries = maxEntries;
  }

  skip(reason: SkipReason, file: string, line: number, detail = ''): void {
    this.byReason.set(reason, (this.byReason.get(reason) ?? 0) + 1);
    if (this.kept.length < this.maxEntries) this.kept.push({ reason, file, line, detail });
    else this.dropped++;
  }

  /** Skips per reason; reasons never seen are absent (so the object prints only what happened). */
  counts(): Partial<Record<SkipReason, number>> {
    const out: Partial<Record<SkipReason, number>> = {};
    for (const reason of SKIP_REASONS) {
      const n = this.byReason.get(reason);
      if (n) out[reason] = n;
    }
    return out;
  }

  get total(): number {
    let n = 0;
    for (const v of this.byReason.values()) n += v;
    return n;
  }

  get entries(): readonly SkipEntry[] {
    return this.kept;
  }

  get droppedEntries(): number {
    return this.dropped;
  }

  /** Adds another log's counts and entries (e.g. from a worker thread, via `toJSON`). */
  merge(other: SkipLog | SkipLogJson): void {
    const json = other instanceof SkipLog ? other.toJSON() : other;
    for (const [reason, n] of Object.entries(json.counts) as [SkipReason, number][]) {
      this.byReason.set(reason, (this.byReason.get(reason) ?? 0) + n);
    }
    for (const e of json.entries) {
      if (this.kept.length < this.maxEntries) this.kept.push({ ...e });
      else this.dropped++;
    }
    this.dropped += json.droppedEntries;
  }

  toJSON(): SkipLogJson {
    return { counts: this.counts(), entries: this.kept.map((e) => ({ ...e })), droppedEntries: this.dropped };
  }

  static fromJSON(json: SkipLogJson, options: SkipLogOptions = {}): SkipLog {
    const log = new SkipLog(options);
    log.merge(json);
    return log;
  }
}
