import { fusionModule, textEncoderLayers, type BlockLeaves } from '../blocks.js';
import { gridSize, numPatches, patchDim, type M3AEConfig } from '../config.js';

/**
 * How one of our parameters is obtained from the official PyTorch state dict (and written back to it):
 * - `copy`: same layout (biases, LayerNorms, embeddings, class token, mask token);
 * - `transpose`: an nn.Linear weight, stored [out, in] by PyTorch and [in, out] by us;
 * - `inProj`: one third (`part` 0 = q, 1 = k, 2 = v) of nn.MultiheadAttention's fused `in_proj_weight` [3D, D]
 *   (then transposed) or `in_proj_bias` [3D];
 * - `conv1`: the bias-free patch convolution [D, 3, P, P] as the patch matrix [3·P·P, D];
 * - `positions`: CLIP's learned positions, bicubically resized when the source grid differs;
 * - `sincos`: MAE's fixed 2-D sin-cos table, recomputed when the source grid differs;
 * - `rows`: RoBERTa's position table, whose first rows are taken when the source has more.
 */
export type WeightTransform =
  | { readonly kind: 'copy' }
  | { readonly kind: 'transpose' }
  | { readonly kind: 'inProj'; readonly part: 0 | 1 | 2; readonly of: 'weight' | 'bias' }
  | { readonly kind: 'conv1'; readonly patchSize: number }
  | { readonly kind: 'positions'; readonly grid: number }
  | { readonly kind: 'sincos'; readonly grid: number }
  | { readonly kind: 'rows' };

export interface WeightMapping {
  /** Our parameter name (`parameterSpecs` in params.ts). */
  readonly name: string;
  /** Our shape. */
  readonly shape: readonly number[];
  /** The official state-dict key it comes from (for `inProj`, the fused key shared by q, k and v). */
  readonly official: string;
  /** The official tensor's shape at this configuration's sizes. */
  readonly officialShape: readonly number[];
  readonly transform: WeightTransform;
}

const copy: WeightTransform = { kind: 'copy' };
const transpose: WeightTransform = { kind: 'transpose' };

/**
 * Our parameters and where each lives in the official checkpoint, in our canonical order, derived from the
 * configuration alone (mirrors `m3ae_module.py`, `clip_model.py`, HF RoBERTa and BertCrossLayer).
 */
export function officialMapping(c: M3AEConfig): WeightMapping[] {
  const out: WeightMapping[] = [];
  const D = c.hiddenSize;
  const push = (name: string, shape: number[], official: string, officialShape: number[], transform: WeightTransform): void => {
    out.push({ name, shape, official, officialShape, transform });
  };
  const same = (name: string, shape: number[]): void => push(name, shape, name, shape, copy);
  const layerNorm = (p: string, d: number): void => {
    same(`${p}.weight`, [d]);
    same(`${p}.bias`, [d]);
  };
  const linear = (p: string, nIn: number, nOut: number): void => {
    push(`${p}.weight`, [nIn, nOut], `${p}.weight`, [nOut, nIn], transpose);
    same(`${p}.bias`, [nOut]);
  };
  const clipBlock = (p: string, d: number): void => {
    layerNorm(`${p}.ln_1`, d);
    (['q', 'k', 'v'] as const).forEach((x, part) => {
      const idx = part as 0 | 1 | 2;
      push(`${p}.attn.${x}_proj.weight`, [d, d], `${p}.attn.in_proj_weight`, [3 * d, d], { kind: 'inProj', part: idx, of: 'weight' });
      push(`${p}.attn.${x}_proj.bias`, [d], `${p}.attn.in_proj_bias`, [3 * d], { kind: 'inProj', part: idx, of: 'bias' });
    });
    linear(`${p}.attn.out_proj`, d, d);
    layerNorm(`${p}.ln_2`, d);
    // CLIP's ResidualAttentionBlock hard-codes a 4× MLP; our config carries the ratio.
    linear(`${p}.mlp.c_fc`, d, d * c.mlpRatio);
    linear(`${p}.mlp.c_proj`, d * c.mlpRatio, d);
  };
  const leaves: BlockLeaves = { layerNorm, linear };

  const v = 'vision_encoder.visual';
  const P = c.patchSize;
  const N = numPatches(c);
  push(`${v}.patch_embed.weight`, [patchDim(c), D], `${v}.conv1.weight`, [D, 3, P, P], { kind: 'conv1', patchSize: P });
  same(`${v}.class_embedding`, [D]);
  push(`${v}.positional_embedding`, [N + 1, D], `${v}.positional_embedding`, [N + 1, D], { kind: 'positions', grid: gridSize(c) });
  layerNorm(`${v}.ln_pre`, D);
  for (let i = 0; i < c.visionLayers; i++) clipBlock(`${v}.transformer.resblocks.${i}`, D);
  layerNorm(`${v}.ln_post`, D);

  const t = 'language_encoder';
  same(`${t}.embeddings.word_embeddings.weight`, [c.vocabSize, D]);
  push(`${t}.embeddings.position_embeddings.weight`, [c.maxTextLength + 2, D], `${t}.embeddings.position_embeddings.weight`, [c.maxTextLength + 2, D], { kind: 'rows' });
  same(`${t}.embeddings.token_type_embeddings.weight`, [1, D]);
  layerNorm(`${t}.embeddings.LayerNorm`, D);
  textEncoderLayers(leaves, c);

  fusionModule(leaves, c, same);

  same('mlm_head.bias', [c.vocabSize]);
  linear('mlm_head.transform.dense', D, D);
  layerNorm('mlm_head.transform.LayerNorm', D);
  push('mlm_head.decoder.weight', [D, c.vocabSize], 'mlm_head.decoder.weight', [c.vocabSize, D], transpose);

  const Dd = c.decoderHiddenSize;
  same('mim_head.mask_token', [1, 1, Dd]);
  push('mim_head.decoder_pos_embed', [1, N + 1, Dd], 'mim_head.decoder_pos_embed', [1, N + 1, Dd], { kind: 'sincos', grid: gridSize(c) });
  linear('mim_head.decoder_embed', D, Dd);
  for (let i = 0; i < c.decoderLayers; i++) clipBlock(`mim_head.decoder.resblocks.${i}`, Dd);
  layerNorm('mim_head.decoder_norm', Dd);
  linear('mim_head.decoder_pred', Dd, patchDim(c));

  linear('itm_head.fc', 2 * D, 2);
  return out;
}

/**
 * Keys the official checkpoint carries that the pre-training model never reads, with the reason. Blocks beyond
 * the configured depth are handled separately (see `unusedBlock`).
 */
export const UNUSED_OFFICIAL_KEYS: readonly { readonly pattern: RegExp; readonly reason: string }[] = [
  { pattern: /^vision_encoder\.(token_embedding\.weight|positional_embedding|ln_final\.(weight|bias)|text_projection|logit_scale)$/, reason: "CLIP's text tower (never used)" },
  { pattern: /^vision_encoder\.transformer\./, reason: "CLIP's text transformer (never used)" },
  { pattern: /^vision_encoder\.visual\.proj$/, reason: "CLIP's projection to the joint space (M3AE uses every token, unprojected)" },
  { pattern: /^vision_encoder\.(input_resolution|context_length|vocab_size)$/, reason: "CLIP's JIT scalars" },
  { pattern: /^language_encoder\.pooler\.dense\.(weight|bias)$/, reason: "RoBERTa's pooler (never used)" },
  { pattern: /^language_encoder\.embeddings\.(position_ids|token_type_ids)$/, reason: 'a HF buffer, not a parameter' },
  { pattern: /^(vqa_head|cls_head|irtr_head)\./, reason: 'a fine-tuning head (not part of pre-training)' },
];

const BLOCK_RE = /^(vision_encoder\.visual\.transformer\.resblocks|language_encoder\.encoder\.layer|mim_head\.decoder\.resblocks|multi_modal_(?:vision|language)_layers)\.(\d+)\./;

/**
 * A key of a block the configuration does not build: CLIP's 12th block (the official vision Transformer builds
 * `layers − 1` of them), or deeper stacks than configured. Returns the reason, or undefined.
 */
export function unusedBlock(key: string, c: M3AEConfig): string | undefined {
  const m = BLOCK_RE.exec(key);
  if (!m) return undefined;
  const index = Number(m[2]);
  const limits: Record<string, [number, string]> = {
    'vision_encoder.visual.transformer.resblocks': [c.visionLayers, 'visionLayers'],
    'language_encoder.encoder.layer': [c.textLayers, 'textLayers'],
    'mim_head.decoder.resblocks': [c.decoderLayers, 'decoderLayers'],
    multi_modal_vision_layers: [c.fusionLayers, 'fusionLayers'],
    multi_modal_language_layers: [c.fusionLayers, 'fusionLayers'],
  };
  const [limit, field] = limits[m[1] as string] ?? [Infinity, ''];
  if (index < limit) return undefined;
  return `block ${index} is beyond config.${field} = ${limit} (the official model builds only these)`;
}

/** Why the official model never reads this key, or undefined when it should be used. */
export function unusedReason(key: string, c: M3AEConfig): string | undefined {
  return UNUSED_OFFICIAL_KEYS.find((u) => u.pattern.test(key))?.reason ?? unusedBlock(key, c);
}
