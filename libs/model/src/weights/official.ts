import { gridSize, type M3AEConfig } from '../config.js';
import { sincos2d } from '../params.js';
import { resizePositionEmbedding } from './bicubic.js';
import { officialMapping, unusedBlock, unusedReason, type WeightMapping } from './mapping.js';
import type { TensorSource } from './source.js';
import { sameShape, showShape, transpose2d } from './transforms.js';

export class WeightsError extends Error {
  override readonly name = 'WeightsError';
}

export interface ImportReport {
  /** Our parameter names that were filled, in canonical order. */
  readonly loaded: readonly string[];
  /** Our parameter names with no source tensor (shown with the source key that was looked for). */
  readonly missing: readonly { readonly name: string; readonly source: string }[];
  /** Source keys that are neither used nor known to be unused. */
  readonly unknown: readonly string[];
  /** Source keys deliberately not read, with the reason. */
  readonly ignored: readonly { readonly key: string; readonly reason: string }[];
  /** Tensors that needed more than a layout change (resized positions, truncated tables, recomputed sin-cos). */
  readonly adapted: readonly { readonly name: string; readonly how: string }[];
}

export interface WeightImport {
  /** Our names → values in our layout (`parameterSpecs` in params.ts), in canonical order. */
  readonly params: Map<string, Float32Array>;
  readonly report: ImportReport;
}

export interface ImportOptions {
  /** Accept parameters absent from the source (they are left out of `params`). @defaultValue false */
  readonly allowMissing?: boolean;
  /** Refuse source keys that are neither mapped nor known to be unused. @defaultValue false (reported only) */
  readonly rejectUnknown?: boolean;
}

interface Plan {
  readonly entries: readonly WeightMapping[];
  /** Source key for an official key (undefined: this source cannot hold it). */
  readonly sourceKey: (official: string) => string | undefined;
  /** Why a source key is deliberately not read (undefined: it should have been used). */
  readonly unused: (sourceKey: string) => string | undefined;
  readonly what: string;
}

/** Shape checks and layout conversion of one source tensor to ours; `adapted` notes what was not a plain read. */
async function convertTensor(
  source: TensorSource,
  key: string,
  m: WeightMapping,
  c: M3AEConfig,
  fused: Map<string, Float32Array>,
  adapted: { name: string; how: string }[],
  shapeError: (key: string, m: WeightMapping, got: readonly number[], expected: string) => WeightsError,
): Promise<Float32Array> {
  const shape = source.shapeOf(key);
  const t = m.transform;
  switch (t.kind) {
    case 'copy':
    case 'transpose': {
      if (!sameShape(shape, m.officialShape)) throw shapeError(key, m, shape, showShape(m.officialShape));
      const { data } = await source.readFloat32(key);
      return t.kind === 'copy' ? data : transpose2d(data, m.officialShape[0] as number, m.officialShape[1] as number);
    }
    case 'inProj': {
      if (!sameShape(shape, m.officialShape)) throw shapeError(key, m, shape, showShape(m.officialShape));
      let whole = fused.get(key);
      if (!whole) {
        whole = (await source.readFloat32(key)).data;
        fused.set(key, whole);
      }
      const d = m.shape[0] as number;
      const size = t.of === 'weight' ? d * d : d;
      const part = whole.subarray(t.part * size, (t.part + 1) * size);
      if (t.part === 2) fused.delete(key);
      return t.of === 'weight' ? transpose2d(part, d, d) : part.slice();
    }
    case 'conv1': {
      if (!sameShape(shape, m.officialShape)) throw shapeError(key, m, shape, showShape(m.officialShape));
      const { data } = await source.readFloat32(key);
      const D = m.officialShape[0] as number;
      return transpose2d(data, D, data.length / D);
    }
    case 'positions': {
      const D = m.shape[1] as number;
      const rows = shape[0] as number;
      const g = Math.round(Math.sqrt(rows - 1));
      if (shape.length !== 2 || shape[1] !== D || g * g + 1 !== rows) throw shapeError(key, m, shape, `[1 + g², ${D}] (a square grid plus the class row)`);
      const { data } = await source.readFloat32(key);
      if (g === t.grid) return data;
      adapted.push({ name: m.name, how: `bicubic resize of the ${g}×${g} grid to ${t.grid}×${t.grid}` });
      return resizePositionEmbedding(data, D, t.grid);
    }
    case 'sincos': {
      if (sameShape(shape, m.officialShape)) return (await source.readFloat32(key)).data;
      adapted.push({ name: m.name, how: `fixed 2-D sin-cos table recomputed for the ${t.grid}×${t.grid} grid (source ${showShape(shape)})` });
      return sincos2d(c.decoderHiddenSize, t.grid);
    }
    case 'rows': {
      const [R, D] = m.shape as [number, number];
      if (shape.length !== 2 || shape[1] !== D || (shape[0] as number) < R) throw shapeError(key, m, shape, `[≥ ${R}, ${D}] (config.maxTextLength + 2 rows)`);
      const { data } = await source.readFloat32(key);
      if ((shape[0] as number) === R) return data;
      adapted.push({ name: m.name, how: `first ${R} of ${shape[0] as number} position rows kept (config.maxTextLength = ${c.maxTextLength})` });
      return data.slice(0, R * D);
    }
  }
}

/** The source keys no mapping read: those the plan expects to leave (`ignored`, with why) and the rest (`unknown`). */
function leftoverKeys(available: ReadonlySet<string>, used: ReadonlySet<string>, plan: Plan): { ignored: { key: string; reason: string }[]; unknown: string[] } {
  const ignored: { key: string; reason: string }[] = [];
  const unknown: string[] = [];
  for (const key of available) {
    if (used.has(key)) continue;
    const reason = plan.unused(key);
    if (reason) ignored.push({ key, reason });
    else unknown.push(key);
  }
  return { ignored, unknown };
}

/** Reads the mapped tensors from a source, checks shapes, converts layouts, and reports the rest by name. */
async function runImport(source: TensorSource, c: M3AEConfig, plan: Plan, options: ImportOptions): Promise<WeightImport> {
  const params = new Map<string, Float32Array>();
  const loaded: string[] = [];
  const missing: { name: string; source: string }[] = [];
  const adapted: { name: string; how: string }[] = [];
  const available = new Set(source.names());
  const used = new Set<string>();
  const fused = new Map<string, Float32Array>(); // in_proj tensors, read once for q, k and v

  const shapeError = (key: string, m: WeightMapping, got: readonly number[], expected: string): WeightsError =>
    new WeightsError(`${plan.what} ${key}: shape ${showShape(got)}; expected ${expected} for ${m.name} (configuration mismatch?)`);

  for (const m of plan.entries) {
    const key = plan.sourceKey(m.official);
    if (key === undefined || !available.has(key)) {
      if (m.transform.kind === 'sincos') {
        // A fixed table the model recomputes; checkpoints may or may not carry it.
        params.set(m.name, sincos2d(c.decoderHiddenSize, gridSize(c)));
        adapted.push({ name: m.name, how: 'fixed 2-D sin-cos table recomputed (absent from the source)' });
        loaded.push(m.name);
      } else {
        missing.push({ name: m.name, source: key ?? m.official });
      }
      continue;
    }
    used.add(key);
    params.set(m.name, await convertTensor(source, key, m, c, fused, adapted, shapeError));
    loaded.push(m.name);
  }

  const { ignored, unknown } = leftoverKeys(available, used, plan);
  const report: ImportReport = { loaded, missing, unknown, ignored, adapted };
  if (missing.length > 0 && !options.allowMissing) {
    const list = missing.slice(0, 8).map((x) => `${x.source} (for ${x.name})`).join(', ');
    throw new WeightsError(`${plan.what}: ${missing.length} tensor(s) missing: ${list}${missing.length > 8 ? ', …' : ''}`);
  }
  if (unknown.length > 0 && options.rejectUnknown) {
    throw new WeightsError(`${plan.what}: ${unknown.length} unknown key(s): ${unknown.slice(0, 8).join(', ')}${unknown.length > 8 ? ', …' : ''}`);
  }
  return { params, report };
}

/**
 * Imports the official M3AE PyTorch state dict (converted to safetensors, official key names) into our names and
 * layouts: fused `in_proj` split into q/k/v, Linear weights transposed, `conv1` as the patch matrix, CLIP positions
 * resized bicubically when the image size differs. Keys the official model never reads are listed in
 * `report.ignored`, anything else unexpected in `report.unknown`; a missing parameter is an error by default.
 */
export function importOfficial(source: TensorSource, config: M3AEConfig, options: ImportOptions = {}): Promise<WeightImport> {
  return runImport(source, config, { entries: officialMapping(config), sourceKey: (k) => k, unused: (k) => unusedReason(k, config), what: 'official checkpoint' }, options);
}

const CLIP_UNUSED: readonly [RegExp, string][] = [
  [/^(transformer\.|token_embedding\.|ln_final\.)/, "CLIP's text tower (M3AE encodes text with RoBERTa)"],
  [/^(positional_embedding|text_projection|logit_scale)$/, "CLIP's text tower (M3AE encodes text with RoBERTa)"],
  [/^visual\.proj$/, "CLIP's projection to the joint space (M3AE uses every token, unprojected)"],
  [/^(input_resolution|context_length|vocab_size)$/, "CLIP's JIT scalars"],
];

/**
 * Initialises the vision encoder from OpenAI CLIP weights (`visual.*` keys, e.g. ViT-B/16 at 224 px, whose 14×14
 * position grid is resized to the configured grid). CLIP's blocks beyond `visionLayers` (the 12th for the paper's
 * model) and its text tower are ignored. Returns only `vision_encoder.*` parameters.
 */
export function initFromClip(source: TensorSource, config: M3AEConfig, options: ImportOptions = {}): Promise<WeightImport> {
  const entries = officialMapping(config).filter((m) => m.official.startsWith('vision_encoder.visual.'));
  return runImport(
    source,
    config,
    {
      entries,
      sourceKey: (k) => k.slice('vision_encoder.'.length),
      unused: (k) => CLIP_UNUSED.find(([re]) => re.test(k))?.[1] ?? unusedBlock(`vision_encoder.${k}`, config),
      what: 'CLIP checkpoint',
    },
    options,
  );
}

/**
 * Initialises the text encoder from RoBERTa-base weights (HF names, bare `embeddings.*` / `encoder.*` as saved by
 * RobertaModel or prefixed `roberta.` as by RobertaForMaskedLM). The position table keeps its first
 * `maxTextLength + 2` rows; the pooler and the LM head are ignored. Returns only `language_encoder.*` parameters.
 */
export function initFromRoberta(source: TensorSource, config: M3AEConfig, options: ImportOptions = {}): Promise<WeightImport> {
  const prefix = source.names().some((n) => n.startsWith('roberta.')) ? 'roberta.' : '';
  const entries = officialMapping(config).filter((m) => m.official.startsWith('language_encoder.'));
  return runImport(
    source,
    config,
    {
      entries,
      sourceKey: (k) => prefix + k.slice('language_encoder.'.length),
      unused: (k) => {
        if (/^lm_head\./.test(k)) return "RoBERTa's masked-LM head (M3AE trains its own, untied)";
        if (!k.startsWith(prefix)) return undefined;
        const bare = k.slice(prefix.length);
        if (/^pooler\.dense\.(weight|bias)$/.test(bare)) return "RoBERTa's pooler (never used)";
        if (/^embeddings\.(position_ids|token_type_ids)$/.test(bare)) return 'a HF buffer, not a parameter';
        return unusedBlock(`language_encoder.${bare}`, config);
      },
      what: 'RoBERTa checkpoint',
    },
    options,
  );
}

export interface OfficialTensor {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

export interface ExportOptions {
  /** Skip parameters absent from `params` (e.g. gradients have no entry for the fixed sin-cos table). @defaultValue false */
  readonly allowMissing?: boolean;
}

/**
 * Our names and layouts back to the official ones (the exact inverse of `importOfficial` at the configured
 * sizes): q/k/v fused into `in_proj_weight`/`in_proj_bias`, Linear weights transposed to [out, in], the patch
 * matrix as `conv1.weight` [D, 3, P, P]. Linear, so it also maps gradients. Official key order.
 */
export function exportOfficial(params: ReadonlyMap<string, Float32Array>, config: M3AEConfig, options: ExportOptions = {}): Map<string, OfficialTensor> {
  const out = new Map<string, OfficialTensor>();
  const known = new Set<string>();
  for (const m of officialMapping(config)) {
    known.add(m.name);
    const v = params.get(m.name);
    if (!v) {
      if (options.allowMissing) continue;
      throw new WeightsError(`export: parameter ${m.name} is missing`);
    }
    const size = m.shape.reduce((a, b) => a * b, 1);
    if (v.length !== size) throw new WeightsError(`export: ${m.name} has ${v.length} values; expected ${showShape(m.shape)} = ${size}`);
    const t = m.transform;
    switch (t.kind) {
      case 'copy':
      case 'positions':
      case 'sincos':
      case 'rows':
        out.set(m.official, { shape: m.shape, data: v });
        break;
      case 'transpose':
      case 'conv1':
        out.set(m.official, { shape: m.officialShape, data: transpose2d(v, m.shape[0] as number, m.shape[1] as number) });
        break;
      case 'inProj': {
        let whole = out.get(m.official);
        if (!whole) {
          whole = { shape: m.officialShape, data: new Float32Array(m.officialShape.reduce((a, b) => a * b, 1)) };
          out.set(m.official, whole);
        }
        const d = m.shape[0] as number;
        whole.data.set(t.of === 'weight' ? transpose2d(v, d, d) : v, t.part * size);
        break;
      }
    }
  }
  // A fused in_proj needs all three parts: with allowMissing a partial one would silently hold zeros.
  for (const m of officialMapping(config)) {
    if (m.transform.kind === 'inProj' && out.has(m.official) && !params.has(m.name)) {
      throw new WeightsError(`export: ${m.official} needs ${m.name}, which is missing`);
    }
  }
  const extra = [...params.keys()].filter((n) => !known.has(n));
  if (extra.length > 0) throw new WeightsError(`export: unknown parameter name(s) ${extra.slice(0, 8).join(', ')}`);
  return out;
}
