/**
 * The batch the model consumes (contracts §2). Structurally identical to `PretrainBatch` in libs/model; the
 * two are never imported across (libs/data must not know the model), TypeScript checks them where the
 * worker joins them.
 */
export interface PretrainBatch {
  /** B */
  batchSize: number;
  /** H = W */
  imageSize: number;
  /** L (= config.maxTextLength) */
  textLength: number;
  /** [B,3,H,W], CLIP mean/std normalised (NCHW, batch-first) */
  pixelValues: Float32Array;
  /** [B,L] tokenised text, padded with padTokenId */
  inputIds: Int32Array;
  /** [B,L] 1 = real token, 0 = padding */
  attentionMask: Int32Array;
  /** [B,L] after 15% / 80-10-10 masking */
  mlmInputIds: Int32Array;
  /** [B,L] original id at masked positions, -100 elsewhere */
  mlmLabels: Int32Array;
  /** [B,N] uniform [0,1); keep the floor(N*(1-mimMaskRatio)) smallest (MAE argsort) */
  mimNoise: Float32Array;
  /** [B,3,H,W] the image paired with the text for ITM (the true one or a negative) */
  itmPixelValues: Float32Array;
  /** [B] 1 = matching pair, 0 = mismatched */
  itmLabels: Int32Array;
  /** [B] per-sample seeds; dropout masks derive only from these */
  dropoutSeeds: Int32Array;
}

/** The global counts N_o a step's loss is normalised by (contracts §3). */
export interface PretrainCounts {
  /** masked text tokens */
  mlm: number;
  /** masked image patches */
  mim: number;
  /** ITM pairs */
  itm: number;
}
