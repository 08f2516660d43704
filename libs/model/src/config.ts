import { z } from 'zod';

/**
 * The M3AE model configuration. Field names are part of the interface (config files, checkpoints, CLI).
 * Official names in brackets refer to `m3ae/config.py` of zhjohnchan/M3AE.
 */
const objectiveSchema = z.strictObject({
  enabled: z.boolean(),
  /** Weight w_o of the objective in L = Σ w_o · S_o / N_o. */
  weight: z.number().finite().nonnegative(),
});

const positiveInt = z.number().int().positive();

export const m3aeConfigSchema = z
  .strictObject({
    /** Square input image side in pixels [image_size]. */
    imageSize: positiveInt,
    /** Patch side [patch_size]; must divide imageSize. */
    patchSize: positiveInt,
    /** Width of every encoder and the fusion module [hidden_size, input_*_embed_size]. */
    hiddenSize: positiveInt,
    /** Attention heads of encoders and fusion [num_heads]. */
    numHeads: positiveInt,
    /** FFN width = hiddenSize · mlpRatio in every block (vision, text, fusion, MIM decoder) [mlp_ratio]. */
    mlpRatio: positiveInt,
    /** Vision (CLIP) blocks actually built (the official model builds 11 of CLIP's 12). */
    visionLayers: positiveInt,
    /** RoBERTa layers. */
    textLayers: positiveInt,
    /** Co-attention layers per modality [num_top_layer]. */
    fusionLayers: positiveInt,
    /** Vocabulary size (word embeddings rows, MLM decoder outputs) [vocab_size]. */
    vocabSize: positiveInt,
    /** Text position capacity; the position table has maxTextLength + 2 rows (RoBERTa: 512 → 514). */
    maxTextLength: positiveInt,
    /**
     * The length pre-training pads text to (≤ maxTextLength; absent: maxTextLength). The official pre-training
     * pads to 64 [max_text_len] while keeping RoBERTa's 514 position rows.
     */
    textLength: positiveInt.optional(),
    /** Padding token id; RoBERTa position ids start at padTokenId + 1. */
    padTokenId: z.number().int().nonnegative(),
    /** Fusion layers applied before the MIM read-out (k); -1 = after the last [mim_layer]. */
    mimLayer: z.number().int().min(-1),
    /** Fraction of patches removed in the MIM pass [mim_prob]. */
    mimMaskRatio: z.number().min(0).lt(1),
    /** Fraction of text tokens chosen for MLM (used by the data lib) [mlm_prob]. */
    mlmMaskRatio: z.number().gt(0).lt(1),
    /** MIM decoder width [mim_decoder_hidden_size]; divisible by 4 (2-D sin-cos) and by decoderHeads. */
    decoderHiddenSize: positiveInt,
    /** MIM decoder blocks actually built (official config 4 → Transformer(…, 4 + 1) → 4 blocks). */
    decoderLayers: positiveInt,
    /** MIM decoder heads [mim_decoder_num_heads]. */
    decoderHeads: positiveInt,
    /** Per-patch normalised MIM targets [norm_pix_loss]. */
    normPixLoss: z.boolean(),
    /** LayerNorm eps of the text encoder (pretrained RoBERTa: 1e-5). */
    textLayerNormEps: z.number().positive(),
    /** LayerNorm eps of fusion layers and the MLM transform (fresh BERT config: 1e-12). */
    fusionLayerNormEps: z.number().positive(),
    /** Dropout probability in the text encoder and the fusion layers (hidden and attention) [drop_rate]. */
    dropout: z.number().min(0).lt(1),
    /** Which pre-training objectives run, and their weights. */
    objectives: z.strictObject({ mlm: objectiveSchema, mim: objectiveSchema, itm: objectiveSchema }),
  })
  .superRefine((c, ctx) => {
    const bad = (path: string, message: string): void => {
      ctx.addIssue({ code: 'custom', path: [path], message });
    };
    if (c.imageSize % c.patchSize !== 0) bad('imageSize', `expected a multiple of patchSize (${c.patchSize})`);
    if (c.hiddenSize % c.numHeads !== 0) bad('hiddenSize', `expected a multiple of numHeads (${c.numHeads})`);
    if (c.decoderHiddenSize % c.decoderHeads !== 0) bad('decoderHiddenSize', `expected a multiple of decoderHeads (${c.decoderHeads})`);
    if (c.decoderHiddenSize % 4 !== 0) bad('decoderHiddenSize', 'expected a multiple of 4 (2-D sin-cos position embedding)');
    if (c.mimLayer > c.fusionLayers) bad('mimLayer', `expected -1 or an integer in [0, fusionLayers=${c.fusionLayers}]`);
    if (c.padTokenId >= c.vocabSize) bad('padTokenId', `expected an id below vocabSize (${c.vocabSize})`);
    if (c.textLength !== undefined && c.textLength > c.maxTextLength) bad('textLength', `expected at most maxTextLength (${c.maxTextLength})`);
    // RoBERTa positions run padTokenId+1 … padTokenId+L and must fit the maxTextLength+2 rows.
    if (c.padTokenId > 1) bad('padTokenId', 'expected 0 or 1 (RoBERTa position ids padTokenId+1…padTokenId+maxTextLength must fit maxTextLength+2 rows)');
    const grid = c.imageSize / c.patchSize;
    if (Number.isInteger(grid) && Math.floor(grid * grid * (1 - c.mimMaskRatio)) < 1) bad('mimMaskRatio', 'expected a ratio that keeps at least one patch');
    if (!c.objectives.mlm.enabled && !c.objectives.mim.enabled && !c.objectives.itm.enabled) bad('objectives', 'expected at least one enabled objective');
  });

export type M3AEConfig = z.infer<typeof m3aeConfigSchema>;
export type ObjectiveName = 'mlm' | 'mim' | 'itm';
export const OBJECTIVE_NAMES: readonly ObjectiveName[] = ['mlm', 'mim', 'itm'];

/** The text length pre-training pads to: `textLength`, or the whole position capacity when it is absent. */
export function trainingTextLength(c: M3AEConfig): number {
  return c.textLength ?? c.maxTextLength;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

const allObjectives = { mlm: { enabled: true, weight: 1 }, mim: { enabled: true, weight: 1 }, itm: { enabled: true, weight: 1 } };

/** For tests: a step takes about a second on the wasm backend. */
const tiny: M3AEConfig = {
  imageSize: 32,
  patchSize: 8,
  hiddenSize: 32,
  numHeads: 2,
  mlpRatio: 4,
  visionLayers: 2,
  textLayers: 1,
  fusionLayers: 2,
  vocabSize: 1000,
  maxTextLength: 16,
  padTokenId: 1,
  mimLayer: 1,
  mimMaskRatio: 0.75,
  mlmMaskRatio: 0.15,
  decoderHiddenSize: 16,
  decoderLayers: 1,
  decoderHeads: 2,
  normPixLoss: true,
  textLayerNormEps: 1e-5,
  fusionLayerNormEps: 1e-12,
  dropout: 0.1,
  objectives: allObjectives,
};

/** For CPU runs and benchmarks: 128 px, width 256, a vocabulary trained on the corpus. */
const small: M3AEConfig = {
  imageSize: 128,
  patchSize: 16,
  hiddenSize: 256,
  numHeads: 4,
  mlpRatio: 4,
  visionLayers: 4,
  textLayers: 4,
  fusionLayers: 2,
  vocabSize: 8192,
  maxTextLength: 64,
  padTokenId: 1,
  mimLayer: 1,
  mimMaskRatio: 0.75,
  mlmMaskRatio: 0.15,
  decoderHiddenSize: 128,
  decoderLayers: 2,
  decoderHeads: 4,
  normPixLoss: true,
  textLayerNormEps: 1e-5,
  fusionLayerNormEps: 1e-12,
  dropout: 0.1,
  objectives: allObjectives,
};

/** The paper's model exactly (CLIP ViT-B/16 at 288 px with 11 blocks, RoBERTa-base, 6+6 fusion layers). */
const base: M3AEConfig = {
  imageSize: 288,
  patchSize: 16,
  hiddenSize: 768,
  numHeads: 12,
  mlpRatio: 4,
  visionLayers: 11,
  textLayers: 12,
  fusionLayers: 6,
  vocabSize: 50265,
  maxTextLength: 512,
  textLength: 64,
  padTokenId: 1,
  mimLayer: 3,
  mimMaskRatio: 0.75,
  mlmMaskRatio: 0.15,
  decoderHiddenSize: 384,
  decoderLayers: 4,
  decoderHeads: 6,
  normPixLoss: true,
  textLayerNormEps: 1e-5,
  fusionLayerNormEps: 1e-12,
  dropout: 0.1,
  objectives: allObjectives,
};

export const PRESETS = { tiny, small, base } as const;
export type PresetName = keyof typeof PRESETS;
export const PRESET_NAMES = Object.keys(PRESETS) as PresetName[];

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = input;
  for (const key of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Validates a full configuration; the error names each bad field, its value and what was expected. */
export function parseConfig(input: unknown, source = 'config'): M3AEConfig {
  const r = m3aeConfigSchema.safeParse(input);
  if (r.success) return r.data;
  const lines = r.error.issues.map((issue) => {
    const path = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      return `${source}${path ? '.' + path : ''}: unknown field(s) ${issue.keys.join(', ')}; expected only the M3AE config fields`;
    }
    const value = valueAt(input, issue.path);
    return `${source}.${path}: got ${show(value)}; ${issue.message.replace(/^Invalid input: /, '')}`;
  });
  throw new ConfigError(lines.join('\n'));
}

/** A preset by name (a copy), optionally with fields overridden; the result is validated. */
export function presetConfig(name: string, overrides: Partial<M3AEConfig> = {}): M3AEConfig {
  if (!(name in PRESETS)) throw new ConfigError(`preset: got ${JSON.stringify(name)}; expected one of ${PRESET_NAMES.join(', ')}`);
  const p = structuredClone(PRESETS[name as PresetName]);
  return parseConfig({ ...p, ...overrides, objectives: { ...p.objectives, ...(overrides.objectives ?? {}) } }, `preset ${name}`);
}

/**
 * Reads a configuration object as found in a config file: either a full configuration, or
 * `{ "preset": "small", …overrides }`.
 */
export function resolveConfig(input: unknown, source = 'config'): M3AEConfig {
  if (input !== null && typeof input === 'object' && 'preset' in input) {
    const { preset, ...rest } = input as Record<string, unknown>;
    if (typeof preset !== 'string' || !(preset in PRESETS)) {
      throw new ConfigError(`${source}.preset: got ${show(preset)}; expected one of ${PRESET_NAMES.join(', ')}`);
    }
    const p = structuredClone(PRESETS[preset as PresetName]);
    const objectives = rest['objectives'];
    const merged = { ...p, ...rest, objectives: objectives && typeof objectives === 'object' ? { ...p.objectives, ...objectives } : (objectives ?? p.objectives) };
    return parseConfig(merged, source);
  }
  return parseConfig(input, source);
}

/** Patches per side. */
export function gridSize(c: M3AEConfig): number {
  return c.imageSize / c.patchSize;
}

/** Patches per image (N). */
export function numPatches(c: M3AEConfig): number {
  return gridSize(c) ** 2;
}

/** The longest token sequence any attention of the model sees: the text's position table or the image's tokens. */
export function attentionSpan(c: M3AEConfig): number {
  return Math.max(c.maxTextLength, numPatches(c) + 1);
}

/** Patches kept by MAE masking: int(N · (1 − ratio)) as the official `random_masking`. */
export function mimKeepCount(c: M3AEConfig): number {
  return Math.floor(numPatches(c) * (1 - c.mimMaskRatio));
}

/** Values per patch (3·P·P). */
export function patchDim(c: M3AEConfig): number {
  return 3 * c.patchSize * c.patchSize;
}

/** The number of fusion layers applied before the MIM read-out. */
export function mimReadoutLayer(c: M3AEConfig): number {
  return c.mimLayer === -1 ? c.fusionLayers : c.mimLayer;
}
