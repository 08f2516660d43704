import { createHash } from 'node:crypto';
import { fusionModule, textEncoderLayers, type BlockLeaves } from './blocks.js';
import { gridSize, numPatches, patchDim, type M3AEConfig } from './config.js';
import type { ParamLayout, ParamLayoutEntry } from '@m3ae/protocol';

/**
 * Parameter names, shapes and initialisers. Names are the official PyTorch state-dict names of
 * zhjohnchan/M3AE with these differences: CLIP's fused `attn.in_proj_weight/bias` split into `attn.q_proj`,
 * `attn.k_proj`, `attn.v_proj`; `visual.conv1.weight` [D,3,P,P] stored as `visual.patch_embed.weight` [3·P·P, D]
 * (row c·P·P + ky·P + kx); every Linear weight stored [in, out]. The order below is the canonical order.
 */
export type ParamInit =
  | { kind: 'normal'; std: number; zeroRow?: number } // zeroRow: HF embeddings zero their padding_idx row
  | { kind: 'uniform'; bound: number }
  | { kind: 'zeros' }
  | { kind: 'ones' }
  | { kind: 'sincos2d' };

export interface ParamSpec {
  readonly name: string;
  readonly shape: readonly number[];
  readonly init: ParamInit;
  /** false only for the fixed sin-cos `mim_head.decoder_pos_embed` (requires_grad=False). */
  readonly trainable: boolean;
}

export interface ManifestEntry extends ParamLayoutEntry {
  readonly dtype: 'float32';
}

/** The model's parameter layout (@m3ae/protocol's `ParamLayout`, with a dtype per entry). */
export interface ParamManifest extends ParamLayout {
  readonly entries: readonly ManifestEntry[];
}

const zeros: ParamInit = { kind: 'zeros' };
const ones: ParamInit = { kind: 'ones' };
const std02: ParamInit = { kind: 'normal', std: 0.02 };

/** The specs of every parameter in canonical order. */
export function parameterSpecs(c: M3AEConfig): ParamSpec[] {
  const specs: ParamSpec[] = [];
  const add = (name: string, shape: number[], init: ParamInit, trainable = true): void => {
    specs.push({ name, shape, init, trainable });
  };
  const D = c.hiddenSize;
  const layerNorm = (p: string, d: number): void => {
    add(`${p}.weight`, [d], ones);
    add(`${p}.bias`, [d], zeros);
  };
  const linear = (p: string, nIn: number, nOut: number, w: ParamInit = std02): void => {
    add(`${p}.weight`, [nIn, nOut], w);
    add(`${p}.bias`, [nOut], zeros);
  };
  // A CLIP ResidualAttentionBlock (vision encoder and MIM decoder).
  const clipBlock = (p: string, d: number, inits: { qkv: ParamInit; out: ParamInit; fc: ParamInit; proj: ParamInit }): void => {
    layerNorm(`${p}.ln_1`, d);
    for (const x of ['q', 'k', 'v']) linear(`${p}.attn.${x}_proj`, d, d, inits.qkv);
    linear(`${p}.attn.out_proj`, d, d, inits.out);
    layerNorm(`${p}.ln_2`, d);
    linear(`${p}.mlp.c_fc`, d, d * c.mlpRatio, inits.fc);
    linear(`${p}.mlp.c_proj`, d * c.mlpRatio, d, inits.proj);
  };
  const leaves: BlockLeaves = { layerNorm, linear: (p, nIn, nOut) => linear(p, nIn, nOut) };

  // Vision encoder: CLIP ViT. From-scratch initialisation as CLIP's own (`VisualTransformer.__init__`,
  // `CLIP.initialize_parameters`; the Transformer's nominal depth is visionLayers + 1); the paper loads CLIP weights.
  const v = 'vision_encoder.visual';
  const scale = D ** -0.5;
  const nominal = c.visionLayers + 1;
  const clipInits = {
    qkv: { kind: 'normal', std: D ** -0.5 },
    out: { kind: 'normal', std: D ** -0.5 * (2 * nominal) ** -0.5 },
    fc: { kind: 'normal', std: (2 * D) ** -0.5 },
    proj: { kind: 'normal', std: D ** -0.5 * (2 * nominal) ** -0.5 },
  } as const;
  add(`${v}.patch_embed.weight`, [patchDim(c), D], { kind: 'uniform', bound: 1 / Math.sqrt(patchDim(c)) }); // nn.Conv2d default
  add(`${v}.class_embedding`, [D], { kind: 'normal', std: scale });
  add(`${v}.positional_embedding`, [numPatches(c) + 1, D], { kind: 'normal', std: scale });
  layerNorm(`${v}.ln_pre`, D);
  for (let i = 0; i < c.visionLayers; i++) clipBlock(`${v}.transformer.resblocks.${i}`, D, clipInits);
  layerNorm(`${v}.ln_post`, D);

  // Language encoder: RoBERTa (HF init: normal 0.02, padding_idx rows zero).
  const t = 'language_encoder';
  add(`${t}.embeddings.word_embeddings.weight`, [c.vocabSize, D], { kind: 'normal', std: 0.02, zeroRow: c.padTokenId });
  add(`${t}.embeddings.position_embeddings.weight`, [c.maxTextLength + 2, D], { kind: 'normal', std: 0.02, zeroRow: c.padTokenId });
  add(`${t}.embeddings.token_type_embeddings.weight`, [1, D], std02);
  layerNorm(`${t}.embeddings.LayerNorm`, D);
  textEncoderLayers(leaves, c);

  // Fusion (METER co-attention), `init_weights`: normal 0.02, zero biases, LayerNorm 1/0.
  fusionModule(leaves, c, (name, shape) => add(name, shape, std02));

  // MLM head: transform (dense, GELU, LayerNorm) + untied decoder + separate bias.
  add('mlm_head.bias', [c.vocabSize], zeros);
  linear('mlm_head.transform.dense', D, D);
  layerNorm('mlm_head.transform.LayerNorm', D);
  add('mlm_head.decoder.weight', [D, c.vocabSize], std02);

  // MIM head (MAE decoder). q/k/v come from nn.MultiheadAttention's fused in_proj (xavier_uniform over [3Dd, Dd]);
  // every nn.Linear (out_proj, c_fc, c_proj, decoder_embed, decoder_pred) gets init_weights' normal 0.02.
  const Dd = c.decoderHiddenSize;
  add('mim_head.mask_token', [1, 1, Dd], std02);
  add('mim_head.decoder_pos_embed', [1, numPatches(c) + 1, Dd], { kind: 'sincos2d' }, false);
  linear('mim_head.decoder_embed', D, Dd);
  const xavier: ParamInit = { kind: 'uniform', bound: Math.sqrt(6 / (Dd + 3 * Dd)) };
  for (let i = 0; i < c.decoderLayers; i++) clipBlock(`mim_head.decoder.resblocks.${i}`, Dd, { qkv: xavier, out: std02, fc: std02, proj: std02 });
  layerNorm('mim_head.decoder_norm', Dd);
  linear('mim_head.decoder_pred', Dd, patchDim(c));

  // ITM head on the 2·hidden joint feature.
  linear('itm_head.fc', 2 * D, 2);
  return specs;
}

/** Manifest of a spec list: offsets into the flat trainable buffer and the stable hash. */
export function buildManifest(specs: readonly ParamSpec[]): ParamManifest {
  let offset = 0;
  const entries: ManifestEntry[] = specs.map((s) => {
    const size = s.shape.reduce((a, b) => a * b, 1);
    const e: ManifestEntry = { name: s.name, shape: [...s.shape], dtype: 'float32', offset: s.trainable ? offset : null, trainable: s.trainable };
    if (s.trainable) offset += size;
    return e;
  });
  const hash = createHash('sha256')
    .update(JSON.stringify(entries.map((e) => ({ name: e.name, shape: e.shape, dtype: e.dtype }))))
    .digest('hex');
  return { entries, size: offset, hash };
}

/** The manifest of a configuration (no tensors needed). */
export function modelManifest(c: M3AEConfig): ParamManifest {
  return buildManifest(parameterSpecs(c));
}

/** Official optimiser grouping (`set_schedule`): substring rules on the parameter name. */
const NO_DECAY = ['bias', 'LayerNorm.bias', 'LayerNorm.weight', 'norm.bias', 'norm.weight', 'norm1.bias', 'norm1.weight', 'norm2.bias', 'norm2.weight'];
const HEAD_NAMES = ['mlm_head', 'mim_head', 'itm_head', 'vqa_head', 'cls_head', 'irtr_head'];

/** True when the official optimiser applies weight decay to this parameter. */
export function hasWeightDecay(name: string): boolean {
  return !NO_DECAY.some((nd) => name.includes(nd));
}

/** The learning-rate group: encoders (×1; includes modality_type_embeddings), heads or multi_modal (×5 each). */
export function lrGroup(name: string): 'encoder' | 'head' | 'multiModal' {
  if (HEAD_NAMES.some((h) => name.includes(h))) return 'head';
  if (name.includes('multi_modal')) return 'multiModal';
  return 'encoder';
}

/** MAE's `get_2d_sincos_pos_embed(dim, grid, cls_token=True)`: [(grid²+1) · dim], first row zero. */
export function sincos2d(dim: number, grid: number): Float32Array {
  const out = new Float32Array((grid * grid + 1) * dim);
  const half = dim / 2;
  const quarter = half / 2;
  // The first half of each row encodes grid_w (the x coordinate), the second half grid_h (MAE's meshgrid(w, h)).
  for (let y = 0; y < grid; y++) {
    for (let x = 0; x < grid; x++) {
      const row = (1 + y * grid + x) * dim;
      for (const [part, pos] of [[0, x], [1, y]] as const) {
        for (let i = 0; i < quarter; i++) {
          const omega = 1 / 10000 ** (i / quarter);
          const a = pos * omega;
          out[row + part * half + i] = Math.sin(a);
          out[row + part * half + quarter + i] = Math.cos(a);
        }
      }
    }
  }
  return out;
}

/** Elements of a shape. */
export function shapeSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export { gridSize };

/** Module groups of the official model, for parameter counts. */
export const MODULE_GROUPS = [
  { module: 'vision_encoder', prefixes: ['vision_encoder.'] },
  { module: 'language_encoder', prefixes: ['language_encoder.'] },
  { module: 'fusion', prefixes: ['multi_modal_', 'modality_type_embeddings.'] },
  { module: 'mlm_head', prefixes: ['mlm_head.'] },
  { module: 'mim_head', prefixes: ['mim_head.'] },
  { module: 'itm_head', prefixes: ['itm_head.'] },
] as const;

export interface ModuleCount {
  module: string;
  /** Trainable parameters. */
  trainable: number;
  /** Fixed (non-trainable) parameters, e.g. the sin-cos decoder positions. */
  fixed: number;
}

/** Parameter counts per module (in MODULE_GROUPS order) and in total. */
export function parameterCounts(manifest: ParamManifest): { modules: ModuleCount[]; total: ModuleCount } {
  const modules: ModuleCount[] = MODULE_GROUPS.map((g) => ({ module: g.module, trainable: 0, fixed: 0 }));
  const total: ModuleCount = { module: 'total', trainable: 0, fixed: 0 };
  for (const e of manifest.entries) {
    const i = MODULE_GROUPS.findIndex((g) => g.prefixes.some((p) => e.name.startsWith(p)));
    const n = shapeSize(e.shape);
    const row = modules[i];
    if (!row) throw new Error(`parameter ${e.name} belongs to no module group`);
    if (e.trainable) {
      row.trainable += n;
      total.trainable += n;
    } else {
      row.fixed += n;
      total.fixed += n;
    }
  }
  return { modules, total };
}
