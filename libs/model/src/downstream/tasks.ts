import type { M3AEConfig } from '../config.js';

/**
 * The downstream tasks and their official fine-tuning settings.
 *
 * Source: zhjohnchan/M3AE, `m3ae/config.py` (named configs `task_finetune_vqa_vqa_rad`, `task_finetune_vqa_slack`,
 * `task_finetune_vqa_medvqa_2019`, `task_finetune_cls_melinda_p_meth_label`, `task_finetune_irtr_roco`; the base
 * `config()` for the optimiser) and `run_scripts/finetune_m3ae.sh` (which passes `image_size=384` to every
 * fine-tuning run — overriding the 576 of the VQA named configs — adds `clip_resizedcrop` to every run but VQA-RAD,
 * and evaluates zero-shot retrieval at `image_size=288`, the pre-training size).
 */
export type HeadKind = 'vqa' | 'classification' | 'retrieval';

export const DOWNSTREAM_TASKS = ['vqa-rad', 'slake', 'vqa-med-2019', 'melinda', 'retrieval'] as const;
export type DownstreamTaskName = (typeof DOWNSTREAM_TASKS)[number];

export interface FinetuneSettings {
  head: HeadKind;
  /** Global batch [batch_size]. */
  globalBatch: number;
  /** [max_epoch] */
  epochs: number;
  /** Base learning rate of the encoders [learning_rate]. */
  learningRate: number;
  /** ×lr of the task head [lr_multiplier_head]. */
  lrMultiplierHead: number;
  /** ×lr of the fusion module and poolers [lr_multiplier_multi_modal]. */
  lrMultiplierMultiModal: number;
  /** Fraction of the steps of linear warm-up [warmup_steps = 0.1]. */
  warmupFraction: number;
  /** [weight_decay] */
  weightDecay: number;
  /** Token capacity of the text (question / caption) [max_text_len]. */
  textLength: number;
  /** Image side for the `base` model (pre-trained at 288) [image_size]; smaller presets scale it (`finetuneImageSize`). */
  baseImageSize: number;
  /** Training images: random-resized crop with scale (0.9, 1.0) [`clip_resizedcrop`], or the centre crop. */
  randomResizedCrop: boolean;
  /** Retrieval: captions per image besides the true one [draw_false_text]. */
  negatives?: number;
}

const common = { learningRate: 5e-6, lrMultiplierMultiModal: 5, warmupFraction: 0.1, weightDecay: 0.01, baseImageSize: 384 } as const;

export const FINETUNE_DEFAULTS: Readonly<Record<DownstreamTaskName, FinetuneSettings>> = {
  'vqa-rad': { ...common, head: 'vqa', globalBatch: 64, epochs: 50, lrMultiplierHead: 50, textLength: 32, randomResizedCrop: false },
  slake: { ...common, head: 'vqa', globalBatch: 32, epochs: 15, lrMultiplierHead: 50, textLength: 32, randomResizedCrop: true },
  'vqa-med-2019': { ...common, head: 'vqa', globalBatch: 32, epochs: 10, lrMultiplierHead: 50, textLength: 32, randomResizedCrop: true },
  melinda: { ...common, head: 'classification', globalBatch: 16, epochs: 20, lrMultiplierHead: 10, textLength: 128, randomResizedCrop: true },
  // max_text_len is not set by task_finetune_irtr_roco: the base config's 40 applies.
  retrieval: { ...common, head: 'retrieval', globalBatch: 256, epochs: 10, lrMultiplierHead: 5, textLength: 40, randomResizedCrop: true, negatives: 15 },
};

/** The official pre-training image size of `base`, against which fine-tuning sizes are scaled. */
export const PRETRAIN_BASE_IMAGE_SIZE = 288;

/**
 * The fine-tuning image side for a model pre-trained at `config.imageSize`: the official 384 for `base` (288 → 384),
 * the same 4/3 ratio for smaller presets, rounded to a whole number of patches (small: 128 → 176, tiny: 32 → 40).
 */
export function finetuneImageSize(config: M3AEConfig, baseImageSize = 384): number {
  const scaled = (config.imageSize * baseImageSize) / PRETRAIN_BASE_IMAGE_SIZE;
  return Math.max(1, Math.round(scaled / config.patchSize)) * config.patchSize;
}

/** The text length a task uses with this model: the official one, capped by the model's position capacity. */
export function finetuneTextLength(config: M3AEConfig, settings: FinetuneSettings): number {
  return Math.min(settings.textLength, config.maxTextLength);
}

/**
 * How a VQA head's answer logits are scored (`vqaLoss`; the option of `m3ae finetune --vqa-loss`):
 * - `bce-sum` (the official `compute_vqa`, the default): binary cross-entropy with logits against the one-hot target,
 *   summed over every answer (the official mean × the number of answers);
 * - `bce-mean`: the same averaged over the answers (the official loss ÷ the number of answers);
 * - `softmax`: softmax cross-entropy over the answers (one answer per question), as the classification head.
 * The official loss is kept for `base` parity; the others are for from-scratch and small models (BENCHMARKS.md,
 * "learning", issue 13).
 */
export const VQA_LOSSES = ['bce-sum', 'bce-mean', 'softmax'] as const;
export type VqaLoss = (typeof VQA_LOSSES)[number];
export const DEFAULT_VQA_LOSS: VqaLoss = 'bce-sum';

/**
 * What reaches the head (`taskInputs`): `image+text` (the model; the default) or `text` — every image replaced by the
 * same blank (zero) image, so the model's answer is a function of the text alone: the trained question-only baseline
 * of `m3ae bench learning`, with the same architecture, training and selection as the model it is compared with.
 */
export const TASK_INPUTS = ['image+text', 'text'] as const;
export type TaskInputs = (typeof TASK_INPUTS)[number];

/** What a downstream head needs to be built: its kind and its number of outputs (answers, classes; 1 for retrieval). */
export interface HeadSpec {
  kind: HeadKind;
  outputs: number;
  /** VQA heads only: the loss (absent: {@link DEFAULT_VQA_LOSS}, the official one). */
  loss?: VqaLoss;
  /** What reaches the head (absent: `image+text`). */
  inputs?: TaskInputs;
}

/** A head's VQA loss, checked (an unknown name is an error naming the field). */
export function vqaLossOf(head: HeadSpec): VqaLoss {
  const l = head.loss ?? DEFAULT_VQA_LOSS;
  if (!(VQA_LOSSES as readonly string[]).includes(l)) throw new RangeError(`head.loss: got ${JSON.stringify(l)}; expected one of ${VQA_LOSSES.join(', ')}`);
  if (head.loss !== undefined && head.kind !== 'vqa') throw new RangeError(`head.loss: got ${JSON.stringify(l)} for a ${head.kind} head; expected it on a vqa head only`);
  return l;
}
