import type { M3AEConfig } from './config.js';

/**
 * The parts of the architecture that the parameter list (`parameterSpecs`) and the official-weight mapping
 * (`officialMapping`) walk alike, in canonical order. Each walk says what a LayerNorm and an nn.Linear
 * (weight [in, out] and bias) record.
 */
export interface BlockLeaves {
  layerNorm(prefix: string, dim: number): void;
  linear(prefix: string, nIn: number, nOut: number): void;
}

/** HF BertAttention (self or cross): query, key, value, then the output dense and LayerNorm. */
export function bertAttention(l: BlockLeaves, p: string, D: number): void {
  l.linear(`${p}.self.query`, D, D);
  l.linear(`${p}.self.key`, D, D);
  l.linear(`${p}.self.value`, D, D);
  l.linear(`${p}.output.dense`, D, D);
  l.layerNorm(`${p}.output.LayerNorm`, D);
}

/** HF BertIntermediate and BertOutput. */
export function bertFeedForward(l: BlockLeaves, p: string, D: number, F: number): void {
  l.linear(`${p}.intermediate.dense`, D, F);
  l.linear(`${p}.output.dense`, F, D);
  l.layerNorm(`${p}.output.LayerNorm`, D);
}

/** The RoBERTa encoder's layers (after its embeddings). */
export function textEncoderLayers(l: BlockLeaves, c: M3AEConfig): void {
  const D = c.hiddenSize;
  for (let i = 0; i < c.textLayers; i++) {
    bertAttention(l, `language_encoder.encoder.layer.${i}.attention`, D);
    bertFeedForward(l, `language_encoder.encoder.layer.${i}`, D, D * c.mlpRatio);
  }
}

/**
 * METER co-attention fusion: the projections into the joint space, the modality-type embeddings (recorded by
 * `embedding`), both sides' BertCrossLayers and the two poolers.
 */
export function fusionModule(l: BlockLeaves, c: M3AEConfig, embedding: (name: string, shape: number[]) => void): void {
  const D = c.hiddenSize;
  l.linear('multi_modal_language_proj', D, D);
  l.linear('multi_modal_vision_proj', D, D);
  embedding('modality_type_embeddings.weight', [2, D]);
  for (const side of ['vision', 'language']) {
    for (let i = 0; i < c.fusionLayers; i++) {
      const p = `multi_modal_${side}_layers.${i}`;
      bertAttention(l, `${p}.attention`, D);
      bertAttention(l, `${p}.crossattention`, D);
      bertFeedForward(l, p, D, D * c.mlpRatio);
    }
  }
  l.linear('multi_modal_vision_pooler.dense', D, D);
  l.linear('multi_modal_language_pooler.dense', D, D);
}
