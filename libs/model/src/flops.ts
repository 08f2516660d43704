import { mimKeepCount, mimReadoutLayer, numPatches, patchDim, trainingTextLength, type M3AEConfig, type ObjectiveName } from './config.js';

/**
 * Matrix-product FLOPs (2·m·k·n per product) of the forward passes as computeGradients runs them: the MLM
 * pass skips the image side of the last fusion layer and runs its head on masked tokens only; the MIM pass
 * runs mimLayer fusion layers (the image side of the last one only) and predicts masked patches only; the ITM
 * pass computes the last fusion layer for the first tokens only (what the poolers read).
 * Element-wise work (LayerNorm, softmax, GELU) is not counted. A training step costs about 3× the forward.
 */
export interface FlopOptions {
  /** Samples. */
  batchSize: number;
  /** Text length L. @defaultValue the training text length (config.textLength ?? config.maxTextLength) */
  textLength?: number;
  /** Masked MLM tokens in the batch. @defaultValue round(B · L · mlmMaskRatio) */
  mlmTokens?: number;
}

const mm = (m: number, k: number, n: number): number => 2 * m * k * n;

export function forwardFlops(c: M3AEConfig, o: FlopOptions): Record<ObjectiveName, number> & { total: number } {
  const B = o.batchSize;
  const L = o.textLength ?? trainingTextLength(c);
  const D = c.hiddenSize;
  const N = numPatches(c);
  const keep = mimKeepCount(c);
  const mlmTokens = o.mlmTokens ?? Math.round(B * L * c.mlmMaskRatio);

  // Self-attention block of width d over t tokens (4 projections + scores + context) and its FFN.
  const selfAttn = (t: number, d: number): number => 4 * mm(t, d, d) + 2 * mm(t, d, t);
  const ffn = (t: number, d: number): number => mm(t, d, d * c.mlpRatio) + mm(t, d * c.mlpRatio, d);
  const crossAttn = (tq: number, tk: number): number => 2 * mm(tq, D, D) + 2 * mm(tk, D, D) + 2 * mm(tq, D, tk);
  const vision = (patches: number): number => mm(patches, patchDim(c), D) + c.visionLayers * (selfAttn(patches + 1, D) + ffn(patches + 1, D));
  const text = c.textLayers * (selfAttn(L, D) + ffn(L, D));
  const crossLayer = (tq: number, tk: number): number => selfAttn(tq, D) + crossAttn(tq, tk) + ffn(tq, D);
  // A last layer computing only the first token: keys and values of every token, the rest for one row.
  const firstTokenLayer = (t: number, tk: number): number =>
    4 * mm(1, D, D) + 2 * mm(t, D, D) + 2 * mm(1, D, t) + 2 * mm(tk, D, D) + 2 * mm(1, D, tk) + ffn(1, D);
  const fusion = (ti: number, layers: number, need: 'text' | 'image' | 'pooled'): number => {
    let f = mm(L, D, D) + mm(ti, D, D);
    for (let l = 0; l < layers; l++) {
      const last = l === layers - 1;
      if (last && need === 'pooled') f += firstTokenLayer(L, ti) + firstTokenLayer(ti, L);
      else {
        if (!last || need !== 'image') f += crossLayer(L, ti);
        if (!last || need !== 'text') f += crossLayer(ti, L);
      }
    }
    return f;
  };

  const perSample = {
    mlm: text + vision(N) + fusion(N + 1, c.fusionLayers, 'text'),
    mim:
      text +
      vision(keep) +
      fusion(keep + 1, mimReadoutLayer(c), 'image') +
      mm(keep + 1, D, c.decoderHiddenSize) +
      c.decoderLayers * (selfAttn(N + 1, c.decoderHiddenSize) + ffn(N + 1, c.decoderHiddenSize)),
    itm: text + vision(N) + fusion(N + 1, c.fusionLayers, 'pooled') + 2 * mm(1, D, D) + mm(1, 2 * D, 2),
  };
  const out = {
    mlm: c.objectives.mlm.enabled ? B * perSample.mlm + mm(mlmTokens, D, D) + mm(mlmTokens, D, c.vocabSize) : 0,
    mim: c.objectives.mim.enabled ? B * perSample.mim + mm(B * (N - keep), c.decoderHiddenSize, patchDim(c)) : 0,
    itm: c.objectives.itm.enabled ? B * perSample.itm : 0,
  };
  return { ...out, total: out.mlm + out.mim + out.itm };
}

/** FLOPs of one training step (forward + backward ≈ 3 × forward). */
export function trainingStepFlops(c: M3AEConfig, o: FlopOptions): number {
  return 3 * forwardFlops(c, o).total;
}
