import * as tf from '@tensorflow/tfjs-core';
import { attentionSpan, type M3AEConfig } from './config.js';
import type { Dropout } from './dropout.js';
import { attentionProjections, dense, gatherRows, gelu, layerNorm, layerNormAndInput, linear, multiHeadAttention, projections, quickGelu, residualAdd, type Params } from './ops.js';

/**
 * The M3AE network as functions of (params, inputs), named after the official modules
 * (`vision_encoder.visual`, `language_encoder`, `multi_modal_*`, `*_head`). Activations are [B·T, D].
 */
export interface Ctx {
  readonly p: Params;
  readonly c: M3AEConfig;
  /** Samples in this (micro-)batch. */
  readonly batch: number;
  readonly drop: Dropout;
}

const CLIP_LN_EPS = 1e-5;

/** CLIP ResidualAttentionBlock (pre-LN, QuickGELU), used by the vision encoder and the MIM decoder. */
export function clipBlock(ctx: Ctx, prefix: string, x: tf.Tensor2D, tokens: number, heads: number): tf.Tensor2D {
  const { p, batch } = ctx;
  // x and x1 again from their LayerNorms (layerNormAndInput): each gradient in one program with its residual's.
  const { y: h1, input: x0 } = layerNormAndInput(p, `${prefix}.ln_1`, x, CLIP_LN_EPS);
  const names = { query: `${prefix}.attn.q_proj`, key: `${prefix}.attn.k_proj`, value: `${prefix}.attn.v_proj` };
  const { query, k, v } = attentionProjections(p, names, h1, undefined, (x.shape[1] / heads) ** -0.5);
  const x1 = residualAdd(x0, linear(p, `${prefix}.attn.out_proj`, multiHeadAttention(query, k, v, { batch, tq: tokens, tk: tokens, heads })));
  const { y: h2, input: x1again } = layerNormAndInput(p, `${prefix}.ln_2`, x1, CLIP_LN_EPS);
  return residualAdd(x1again, linear(p, `${prefix}.mlp.c_proj`, quickGelu(linear(p, `${prefix}.mlp.c_fc`, h2))));
}

/**
 * CLIP visual tower. `patches` [B·K, 3·P·P] in (c, ky, kx) order; `patchIndex` [B·K] gives each patch's grid
 * index when only some patches are present (MAE masking: positions are added before the tokens are dropped,
 * which for a per-patch linear embedding equals embedding only the kept patches). Returns ln_post of every
 * token, [B·(1+K), D] (class token first).
 */
export function visionEncoder(ctx: Ctx, patches: tf.Tensor2D, patchIndex?: tf.Tensor1D): tf.Tensor2D {
  const { p, c, batch } = ctx;
  const v = 'vision_encoder.visual';
  const D = c.hiddenSize;
  const K = patches.shape[0] / batch;
  const pos = p.get(`${v}.positional_embedding`) as tf.Tensor2D;
  const emb = dense(patches, p.get(`${v}.patch_embed.weight`) as tf.Tensor2D, undefined, false);
  // Full grid: one [N, D] slice broadcast over the batch (its gradient is a sum, not B slices as tile's).
  const patchPos = patchIndex ? tf.reshape(gatherRows(pos, patchIndex), [batch, K, D]) : tf.slice(pos, [1, 0], [K, D]);
  const tokens = tf.add(tf.reshape(emb, [batch, K, D]), patchPos);
  const cls = tf.add(p.get(`${v}.class_embedding`), tf.slice(pos, [0, 0], [1, D]));
  const clsTokens = tf.broadcastTo(tf.reshape(cls, [1, 1, D]), [batch, 1, D]);
  let x: tf.Tensor2D = tf.reshape(tf.concat([clsTokens, tokens], 1), [batch * (K + 1), D]);
  x = layerNorm(p, `${v}.ln_pre`, x, CLIP_LN_EPS);
  for (let i = 0; i < c.visionLayers; i++) x = clipBlock(ctx, `${v}.transformer.resblocks.${i}`, x, K + 1, c.numHeads);
  return layerNorm(p, `${v}.ln_post`, x, CLIP_LN_EPS);
}

/**
 * HF BertAttention: self-attention when `kv` is undefined, else cross-attention (queries from x, keys and
 * values from kv). `keyBias` [B,1,1,Tk] masks padding keys. Dropout on probabilities and on the output.
 */
export function bertAttention(ctx: Ctx, prefix: string, x: tf.Tensor2D, tq: number, kv: { x: tf.Tensor2D; tokens: number } | undefined, keyBias: tf.Tensor | undefined, eps: number): tf.Tensor2D {
  const { p, c, batch, drop } = ctx;
  const heads = c.numHeads;
  const tk = kv ? kv.tokens : tq;
  const names = { query: `${prefix}.self.query`, key: `${prefix}.self.key`, value: `${prefix}.self.value` };
  // x again from its projections (`input`): x's gradient in one chain with the residual's.
  const { query, k, v, input } = attentionProjections(p, names, x, kv?.x, (c.hiddenSize / heads) ** -0.5, true);
  // Indexed in the model's longest [span, span] so the mask of a (query, key) pair does not depend on the lengths.
  const span = attentionSpan(c);
  const probsMask = drop.lazyMask([heads, tq, tk], [heads, span, span]);
  const context = multiHeadAttention(query, k, v, { batch, tq, tk, heads }, keyBias, probsMask);
  return layerNorm(p, `${prefix}.output.LayerNorm`, drop.applyAndAdd(linear(p, `${prefix}.output.dense`, context), batch, input), eps);
}

/** HF BertIntermediate + BertOutput (GELU erf FFN, dropout, residual, post-LN). */
export function bertFeedForward(ctx: Ctx, prefix: string, x: tf.Tensor2D, eps: number): tf.Tensor2D {
  const { p, batch, drop } = ctx;
  const { ys, input } = projections(p, [{ prefix: `${prefix}.intermediate.dense` }], x, true);
  const h = gelu(ys[0] as tf.Tensor2D);
  return layerNorm(p, `${prefix}.output.LayerNorm`, drop.applyAndAdd(linear(p, `${prefix}.output.dense`, h), batch, input), eps);
}

export interface TextInputs {
  /** [B·L] token ids. */
  ids: tf.Tensor1D;
  /** [B·L] RoBERTa position ids. */
  positionIds: tf.Tensor1D;
  /** [B·L, 1]: 0 where the id is the padding id (nn.Embedding(padding_idx) gets no gradient there). */
  notPad: tf.Tensor2D;
  /** [B,1,1,L] additive attention bias (0 or −1e9). */
  keyBias: tf.Tensor4D;
  length: number;
}

/** RoBERTa: embeddings (word + position + token type 0, LayerNorm, dropout) and post-LN layers. */
export function textEncoder(ctx: Ctx, t: TextInputs): tf.Tensor2D {
  const { p, c, batch, drop } = ctx;
  const e = 'language_encoder.embeddings';
  const word = gatherRows(p.get(`${e}.word_embeddings.weight`) as tf.Tensor2D, t.ids, t.notPad);
  const pos = gatherRows(p.get(`${e}.position_embeddings.weight`) as tf.Tensor2D, t.positionIds, t.notPad);
  let x = tf.add(tf.add(word, pos), p.get(`${e}.token_type_embeddings.weight`)) as tf.Tensor2D;
  x = drop.apply2d(layerNorm(p, `${e}.LayerNorm`, x, c.textLayerNormEps), batch);
  for (let i = 0; i < c.textLayers; i++) {
    const l = `language_encoder.encoder.layer.${i}`;
    x = bertAttention(ctx, `${l}.attention`, x, t.length, undefined, t.keyBias, c.textLayerNormEps);
    x = bertFeedForward(ctx, l, x, c.textLayerNormEps);
  }
  return x;
}

/** METER's BertCrossLayer: self-attention → cross-attention → FFN, each post-LN. */
export function crossLayer(ctx: Ctx, prefix: string, x: tf.Tensor2D, tx: number, y: tf.Tensor2D, ty: number, selfBias: tf.Tensor | undefined, crossBias: tf.Tensor | undefined, firstTokenOnly = false): tf.Tensor2D {
  const eps = ctx.c.fusionLayerNormEps;
  // Only the first token's output is needed (the poolers read it): queries and everything after them for that
  // token alone; keys and values still come from every token. Same values as the full layer's first row.
  const a = firstTokenOnly
    ? bertAttention(ctx, `${prefix}.attention`, firstTokens(ctx, x, tx), 1, { x, tokens: tx }, selfBias, eps)
    : bertAttention(ctx, `${prefix}.attention`, x, tx, undefined, selfBias, eps);
  const b = bertAttention(ctx, `${prefix}.crossattention`, a, firstTokenOnly ? 1 : tx, { x: y, tokens: ty }, crossBias, eps);
  return bertFeedForward(ctx, prefix, b, eps);
}

/** The first token of every sample: [B·T, D] → [B, D]. */
export function firstTokens(ctx: Ctx, x: tf.Tensor2D, tokens: number): tf.Tensor2D {
  const D = x.shape[1];
  return tf.reshape(tf.slice(tf.reshape(x, [ctx.batch, tokens, D]), [0, 0, 0], [ctx.batch, 1, D]), [ctx.batch, D]);
}

export interface FusionOutput {
  text: tf.Tensor2D;
  image: tf.Tensor2D;
}

/**
 * Co-attention fusion: per-modality projection, modality-type embedding (0 text, 1 image), then `layers`
 * layers advancing in parallel: text_{l+1} = T_l(text_l, image_l), image_{l+1} = V_l(image_l, text_l). Only
 * what `need` asks for is computed in the last layer: one side (the other side's last layer feeds nothing), both
 * sides in full, or `pooled`: both sides' first tokens only (returned as [B, D], one token per sample).
 */
export function fusion(ctx: Ctx, text: tf.Tensor2D, tl: number, image: tf.Tensor2D, ti: number, textBias: tf.Tensor4D, layers: number, need: 'text' | 'image' | 'both' | 'pooled'): FusionOutput {
  const { p, c } = ctx;
  const mte = p.get('modality_type_embeddings.weight') as tf.Tensor2D;
  const D = c.hiddenSize;
  let x = tf.add(linear(p, 'multi_modal_language_proj', text), tf.slice(mte, [0, 0], [1, D])) as tf.Tensor2D;
  let y = tf.add(linear(p, 'multi_modal_vision_proj', image), tf.slice(mte, [1, 0], [1, D])) as tf.Tensor2D;
  for (let l = 0; l < layers; l++) {
    const last = l === layers - 1;
    const firstOnly = last && need === 'pooled';
    const x1 = !last || need !== 'image' ? crossLayer(ctx, `multi_modal_language_layers.${l}`, x, tl, y, ti, textBias, undefined, firstOnly) : x;
    const y1 = !last || need !== 'text' ? crossLayer(ctx, `multi_modal_vision_layers.${l}`, y, ti, x, tl, undefined, textBias, firstOnly) : y;
    x = x1;
    y = y1;
  }
  return { text: x, image: y };
}

/** Pooler: first token → Linear → tanh (`tokens` = 1 when x already holds one row per sample). */
export function pooler(ctx: Ctx, prefix: string, x: tf.Tensor2D, tokens: number): tf.Tensor2D {
  return tf.tanh(linear(ctx.p, `${prefix}.dense`, tokens === 1 ? x : firstTokens(ctx, x, tokens)));
}

export { gatherRows };

export function crossEntropySum(logits: tf.Tensor2D, labels: tf.Tensor1D): { sum: tf.Scalar; correct: tf.Scalar } {
  const classes = logits.shape[1];
  const logp = tf.logSoftmax(logits);
  const sum: tf.Scalar = tf.neg(tf.sum(tf.mul(logp, tf.oneHot(labels, classes))));
  const correct: tf.Scalar = tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), labels), 'float32'));
  return { sum, correct };
}

/** MLM head on the selected (masked) rows: transform (dense, GELU, LayerNorm) → untied decoder + bias. */
export function mlmHead(ctx: Ctx, rows: tf.Tensor2D): tf.Tensor2D {
  const { p, c } = ctx;
  const h = layerNorm(p, 'mlm_head.transform.LayerNorm', gelu(linear(p, 'mlm_head.transform.dense', rows)), c.fusionLayerNormEps);
  return dense(h, p.get('mlm_head.decoder.weight') as tf.Tensor2D, p.get('mlm_head.bias'));
}

/** ITM head on the joint feature [text pooler, image pooler] (2·hidden). */
export function itmHead(ctx: Ctx, joint: tf.Tensor2D): tf.Tensor2D {
  return linear(ctx.p, 'itm_head.fc', joint);
}

/**
 * MIM decoder (MAE): decoder_embed, mask tokens inserted and the sequence un-shuffled (one row gather:
 * `restoreIndex` [B·(N+1)] indexes the table [visible rows (B·(1+K)); mask_token]), fixed sin-cos
 * positions, CLIP blocks. Returns the decoder output [B·(N+1), Dd] before decoder_norm.
 */
export function mimDecoder(ctx: Ctx, image: tf.Tensor2D, restoreIndex: tf.Tensor1D): tf.Tensor2D {
  const { p, c, batch } = ctx;
  const Dd = c.decoderHiddenSize;
  const n1 = restoreIndex.shape[0] / batch;
  const visible = linear(p, 'mim_head.decoder_embed', image);
  const table = tf.concat([visible, tf.reshape(p.get('mim_head.mask_token'), [1, Dd])], 0);
  const seq = tf.reshape(gatherRows(table as tf.Tensor2D, restoreIndex), [batch, n1, Dd]);
  let x: tf.Tensor2D = tf.reshape(tf.add(seq, p.get('mim_head.decoder_pos_embed')), [batch * n1, Dd]);
  for (let i = 0; i < c.decoderLayers; i++) x = clipBlock(ctx, `mim_head.decoder.resblocks.${i}`, x, n1, c.decoderHeads);
  return x;
}

/** decoder_norm → decoder_pred on selected rows (the masked patches). */
export function mimPredict(ctx: Ctx, rows: tf.Tensor2D): tf.Tensor2D {
  return linear(ctx.p, 'mim_head.decoder_pred', layerNorm(ctx.p, 'mim_head.decoder_norm', rows, CLIP_LN_EPS));
}
