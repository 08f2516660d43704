import * as tf from '@tensorflow/tfjs-core';
import type { M3AEConfig } from '../config.js';
import { gelu, layerNorm, linear, type Params } from '../ops.js';
import type { ParamInit, ParamSpec } from '../params.js';
import type { HeadKind, HeadSpec } from './tasks.js';

/**
 * Downstream heads on the 2·hidden joint feature, named as the official modules (`m3ae_module.py`, part 4):
 * - `vqa_head` / `cls_head`: nn.Sequential(Linear(2h, 2h), LayerNorm(2h), GELU, Linear(2h, outputs)) — parameters
 *   `{head}.0.*`, `{head}.1.*` (the LayerNorm, eps 1e-5), `{head}.3.*`;
 * - `irtr_head`: Linear(2h, 1), initialised from the ITM head's "match" row.
 * Initialisation as `init_weights`: normal(0, 0.02) weights, zero biases, LayerNorm 1 and 0. Weights are stored
 * [in, out] like every Linear of the model.
 */
export const HEAD_PREFIX: Readonly<Record<HeadKind, string>> = { vqa: 'vqa_head', classification: 'cls_head', retrieval: 'irtr_head' };

/** nn.LayerNorm's default eps. */
const HEAD_LN_EPS = 1e-5;

export function headParamSpecs(config: M3AEConfig, head: HeadSpec): ParamSpec[] {
  if (!Number.isInteger(head.outputs) || head.outputs < 1) throw new RangeError(`head.outputs: got ${String(head.outputs)}; expected a positive integer`);
  if (head.kind === 'retrieval' && head.outputs !== 1) throw new RangeError(`head.outputs: got ${head.outputs}; the retrieval head scores one pair (1 output)`);
  const J = 2 * config.hiddenSize;
  const std: ParamInit = { kind: 'normal', std: 0.02 };
  const zeros: ParamInit = { kind: 'zeros' };
  const ones: ParamInit = { kind: 'ones' };
  const p = HEAD_PREFIX[head.kind];
  const spec = (name: string, shape: number[], init: ParamInit): ParamSpec => ({ name, shape, init, trainable: true });
  if (head.kind === 'retrieval') return [spec(`${p}.weight`, [J, 1], std), spec(`${p}.bias`, [1], zeros)];
  return [
    spec(`${p}.0.weight`, [J, J], std),
    spec(`${p}.0.bias`, [J], zeros),
    spec(`${p}.1.weight`, [J], ones),
    spec(`${p}.1.bias`, [J], zeros),
    spec(`${p}.3.weight`, [J, head.outputs], std),
    spec(`${p}.3.bias`, [head.outputs], zeros),
  ];
}

/** The head's outputs for joint features [rows, 2h]: logits [rows, outputs]. */
export function headForward(p: Params, head: HeadSpec, joint: tf.Tensor2D): tf.Tensor2D {
  const pre = HEAD_PREFIX[head.kind];
  if (head.kind === 'retrieval') return linear(p, pre, joint);
  const h = gelu(layerNorm(p, `${pre}.1`, linear(p, `${pre}.0`, joint), HEAD_LN_EPS));
  return linear(p, `${pre}.3`, h);
}
