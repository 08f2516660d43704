/** A bench area's sizes: every key with its default (a number or a string), overridable by `--size key=value,…`. */
export type SizeDefaults = Readonly<Record<string, number | string>>;

export type Sizes<D extends SizeDefaults> = { -readonly [K in keyof D]: D[K] extends string ? string : number };

/**
 * `--size a=1,b=2` over the defaults (and, with `--quick`, the quick overrides): unknown keys and non-numbers where a
 * number is expected are errors naming them.
 */
export function parseSizeSpec<D extends SizeDefaults>(defaults: D, spec: string | undefined, quickOverrides?: Partial<Record<keyof D, number | string>>): Sizes<D> {
  const out: Record<string, number | string> = { ...defaults, ...(quickOverrides ?? {}) };
  for (const part of (spec ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const [k, v] = part.split('=') as [string, string | undefined];
    if (!(k in defaults) || v === undefined) throw new Error(`--size ${part}: expected key=value with key one of ${Object.keys(defaults).join(', ')}`);
    if (typeof defaults[k] === 'number') {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) throw new Error(`--size ${k}=${v}: expected a number >= 0`);
      out[k] = n;
    } else out[k] = v;
  }
  return out as Sizes<D>;
}
