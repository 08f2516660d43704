import * as tf from '@tensorflow/tfjs-core';
import { gridSize, type M3AEConfig } from '../config.js';
import { flattenParams, initialValues, setParamsFromFlat } from '../model.js';
import { buildManifest, parameterSpecs, shapeSize, type ParamManifest, type ParamSpec } from '../params.js';
import { resizePositionEmbedding } from '../weights/bicubic.js';
import { HEAD_PREFIX, headParamSpecs } from './heads.js';
import type { HeadSpec } from './tasks.js';
import { ParamVariables } from '../variables.js';

/**
 * A fine-tuning model: the M3AE backbone (both encoders, the fusion module, the two poolers) and one task head, in
 * one flat, canonically ordered name → variable map. The pre-training heads (MLM, MIM, ITM) are left out, as the
 * official code builds a fine-tuning model without them (their `loss_names` are 0); the parameter manifest, its hash
 * and the flat buffers therefore cover exactly what fine-tuning trains.
 */
const PRETRAIN_HEADS = ['mlm_head.', 'mim_head.', 'itm_head.'];

/** Whether a pre-training parameter belongs to the backbone a downstream model keeps. */
export function isBackboneParam(name: string): boolean {
  return !PRETRAIN_HEADS.some((h) => name.startsWith(h));
}

/** Backbone specs (in the pre-training model's canonical order) followed by the head's. */
export function downstreamSpecs(config: M3AEConfig, head: HeadSpec): ParamSpec[] {
  return [...parameterSpecs(config).filter((s) => isBackboneParam(s.name)), ...headParamSpecs(config, head)];
}

export function downstreamManifest(config: M3AEConfig, head: HeadSpec): ParamManifest {
  return buildManifest(downstreamSpecs(config, head));
}

/** Initialisation indices of head parameters start here (backbone parameters keep their pre-training index). */
const HEAD_INIT_INDEX = 1_000_000;

let nextId = 0;

export interface DownstreamModelOptions {
  /** Seed of the initialisation (of everything a pre-trained checkpoint does not replace). @defaultValue 0 */
  seed?: number;
}

export class DownstreamModel extends ParamVariables {
  readonly id: number;
  readonly config: M3AEConfig;
  readonly head: HeadSpec;
  readonly specs: readonly ParamSpec[];
  readonly manifest: ParamManifest;

  constructor(config: M3AEConfig, head: HeadSpec, options: DownstreamModelOptions = {}) {
    const id = nextId++;
    const specs = downstreamSpecs(config, head);
    const seed = options.seed ?? 0;
    // A backbone parameter gets the value the pre-training model would give it with this seed (same index).
    const pretrainIndex = new Map(parameterSpecs(config).map((s, i) => [s.name, i]));
    const headStart = specs.length - headParamSpecs(config, head).length;
    super(specs, `m3ae-ds${id}`, (spec, i) => initialValues(config, spec, seed, pretrainIndex.get(spec.name) ?? HEAD_INIT_INDEX + (i - headStart)));
    this.id = id;
    this.config = config;
    this.head = head;
    this.specs = specs;
    this.manifest = buildManifest(specs);
  }

  get headPrefix(): string {
    return HEAD_PREFIX[this.head.kind];
  }
}

export function createDownstreamModel(config: M3AEConfig, head: HeadSpec, options: DownstreamModelOptions = {}): DownstreamModel {
  return new DownstreamModel(config, head, options);
}

/** Trainable parameters as one Float32Array in manifest order (`flattenParams` of the downstream model). */
export const flattenDownstream: (model: DownstreamModel) => Promise<Float32Array> = flattenParams;

/** Assigns every trainable parameter from a flat buffer in manifest order (`setParamsFromFlat`). */
export const setDownstreamFromFlat: (model: DownstreamModel, flat: Float32Array) => void = setParamsFromFlat;

export interface PretrainedWeights {
  /** The configuration the weights were trained with (image size may differ from the downstream model's). */
  config: M3AEConfig;
  /** Parameter values by canonical name (e.g. `unflatten(modelManifest(config), checkpoint.params)`). */
  params: ReadonlyMap<string, Float32Array>;
}

export interface LoadPretrainedReport {
  /** Parameters copied from the pre-trained weights. */
  loaded: number;
  /** Parameters resized (CLIP's position table, when the image size differs: the official `adapt_position_encoding`). */
  resized: string[];
  /** Parameters kept at their initial value (the task head, except retrieval's). */
  initialised: string[];
}

/**
 * Loads pre-trained backbone weights into a downstream model (as the official code loads `m3ae.ckpt` with
 * `strict=False` before adding the task head). The image size may differ: the position embedding's grid is resized
 * bicubically. Every other backbone shape must agree. The retrieval head starts from the ITM head's "match"
 * output (`irtr_head.weight = itm_head.fc.weight[1:]`), so a freshly loaded retrieval model scores pairs exactly as
 * the pre-trained ITM head does (zero-shot retrieval).
 */
export function loadPretrained(model: DownstreamModel, weights: PretrainedWeights): LoadPretrainedReport {
  const src = weights.config;
  const dst = model.config;
  const report: LoadPretrainedReport = { loaded: 0, resized: [], initialised: [] };
  for (const field of ['hiddenSize', 'numHeads', 'mlpRatio', 'visionLayers', 'textLayers', 'fusionLayers', 'vocabSize', 'maxTextLength', 'patchSize', 'padTokenId'] as const) {
    if (src[field] !== dst[field]) {
      throw new Error(`loadPretrained: the pre-trained model has ${field} = ${String(src[field])}; the downstream model has ${String(dst[field])} (only imageSize may differ)`);
    }
  }
  const get = (name: string): Float32Array => {
    const v = weights.params.get(name);
    if (!v) throw new Error(`loadPretrained: pre-trained weights lack ${name}`);
    return v;
  };
  for (const e of model.manifest.entries) {
    const variable = model.param(e.name);
    let values: Float32Array | undefined;
    if (isBackboneParam(e.name) && !e.name.startsWith(model.headPrefix)) {
      values = get(e.name);
      if (e.name === 'vision_encoder.visual.positional_embedding' && gridSize(src) !== gridSize(dst)) {
        values = resizePositionEmbedding(values, dst.hiddenSize, gridSize(dst));
        report.resized.push(e.name);
      }
    } else if (model.head.kind === 'retrieval' && e.name === 'irtr_head.weight') {
      const itm = get('itm_head.fc.weight'); // [2h, 2], column 1 = "match"
      values = new Float32Array(itm.length / 2);
      for (let r = 0; r < values.length; r++) values[r] = itm[2 * r + 1] as number;
    } else if (model.head.kind === 'retrieval' && e.name === 'irtr_head.bias') {
      values = Float32Array.of(get('itm_head.fc.bias')[1] as number);
    } else {
      report.initialised.push(e.name);
      continue;
    }
    if (values.length !== shapeSize(e.shape)) {
      throw new Error(`loadPretrained: ${e.name} has ${values.length} values; expected ${shapeSize(e.shape)} for shape [${e.shape.join(', ')}]`);
    }
    const data = values;
    tf.tidy(() => variable.assign(tf.tensor(data, [...e.shape], 'float32')));
    report.loaded++;
  }
  return report;
}
