import { GRADIENT_BLOCK, type OptimizerState } from '@m3ae/protocol';
import { hasWeightDecay, lrGroup, shapeSize, type ParamManifest } from './params.js';

/**
 * AdamW exactly as the official optimiser (`m3ae_utils.set_schedule`): `transformers.optimization.AdamW`
 * (correct_bias=True: eps added to √v before bias correction, decoupled weight decay applied after the
 * Adam update to the updated parameter), six groups from substring rules on the parameter names (no decay
 * for names containing bias / LayerNorm.weight / norm.weight …; heads and multi_modal modules at ×5 the
 * learning rate), and `get_polynomial_decay_schedule_with_warmup` (power 1, end 0): linear warm-up, then
 * linear decay to 0, stepped once per optimizer step (so update t uses the factor of step t, and update 0
 * has learning rate 0). Works on flat Float32Arrays in manifest order: the coordinator applies it to the
 * summed gradient. Plain loops in double precision, stored as float32 — deterministic.
 */
export interface AdamWOptions {
  /** Base learning rate (encoders and modality-type embedding). @defaultValue 1e-5 (official pre-training) */
  learningRate?: number;
  /** Total optimizer steps (max_steps); the schedule decays to endLearningRate there. */
  totalSteps: number;
  /** Warm-up as a fraction of totalSteps: int(max_steps · f) steps, as the official warmup_steps = 0.1. @defaultValue 0.1 */
  warmupFraction?: number;
  /** @defaultValue [0.9, 0.98] */
  betas?: readonly [number, number];
  /** @defaultValue 1e-8 */
  eps?: number;
  /** @defaultValue 0.01 */
  weightDecay?: number;
  /** @defaultValue 5 */
  lrMultiplierHead?: number;
  /** @defaultValue 5 */
  lrMultiplierMultiModal?: number;
  /** @defaultValue 0 */
  endLearningRate?: number;
  /** Clip the global gradient L2 norm to this value (as torch.nn.utils.clip_grad_norm_); off when undefined or 0. */
  clipNorm?: number;
}

/** Steps taken and the first / second moments, flat in manifest order (what a checkpoint stores). */
export type AdamWState = OptimizerState;

export interface AdamWStepInfo {
  /** The scheduler factor used for this update (lr of a group = its base lr × factor). */
  lrFactor: number;
  /** Base learning rate × factor. */
  learningRate: number;
  /** Global L2 norm of the gradient before clipping. */
  gradNorm: number;
  clipped: boolean;
}

/** One update as {@link AdamW.plan} fixes it for every range: structured-cloneable (sent to shard threads). */
export interface AdamWPlan extends AdamWStepInfo {
  /** The factor the gradient is multiplied by (1 when not clipped). */
  clipCoef: number;
  /** Updates taken including this one (the bias corrections' exponent). */
  updates: number;
}

/**
 * The squared L2 norm of `grads[start, end)` by {@link GRADIENT_BLOCK} (each block's squares summed in element order
 * in double precision): `start` must be a block boundary. The whole vector's blocks, in order, are what
 * {@link AdamW.plan} sums, so a norm computed shard by shard has the same bits as one computed at once.
 */
export function gradientSquares(grads: Float32Array, start: number, end: number): Float64Array {
  if (start % GRADIENT_BLOCK !== 0) throw new Error(`gradientSquares: start ${start} is not a multiple of ${GRADIENT_BLOCK}`);
  const out = new Float64Array(Math.ceil((end - start) / GRADIENT_BLOCK));
  for (let b = 0; b < out.length; b++) {
    const to = Math.min(end, start + (b + 1) * GRADIENT_BLOCK);
    let ss = 0;
    for (let i = start + b * GRADIENT_BLOCK; i < to; i++) {
      const g = grads[i] as number;
      ss += g * g;
    }
    out[b] = ss;
  }
  return out;
}

interface Segment {
  start: number;
  end: number;
  lrMultiplier: number;
  decay: boolean;
}

export class AdamW {
  readonly options: Required<AdamWOptions>;
  readonly warmupSteps: number;
  readonly size: number;
  private readonly segments: Segment[];
  private readonly m: Float32Array;
  private readonly v: Float32Array;
  private stepCount = 0;

  constructor(manifest: ParamManifest, options: AdamWOptions, memory?: { m: Float32Array; v: Float32Array }) {
    const o = {
      learningRate: options.learningRate ?? 1e-5,
      totalSteps: options.totalSteps,
      warmupFraction: options.warmupFraction ?? 0.1,
      betas: options.betas ?? ([0.9, 0.98] as const),
      eps: options.eps ?? 1e-8,
      weightDecay: options.weightDecay ?? 0.01,
      lrMultiplierHead: options.lrMultiplierHead ?? 5,
      lrMultiplierMultiModal: options.lrMultiplierMultiModal ?? 5,
      endLearningRate: options.endLearningRate ?? 0,
      clipNorm: options.clipNorm ?? 0,
    };
    const bad = (field: string, value: unknown, expected: string): never => {
      throw new Error(`AdamW options.${field}: got ${String(value)}; expected ${expected}`);
    };
    if (!(Number.isInteger(o.totalSteps) && o.totalSteps > 0)) bad('totalSteps', o.totalSteps, 'a positive integer');
    if (!(o.learningRate >= 0 && Number.isFinite(o.learningRate))) bad('learningRate', o.learningRate, 'a finite number >= 0');
    if (!(o.warmupFraction >= 0 && o.warmupFraction < 1)) bad('warmupFraction', o.warmupFraction, 'a fraction in [0, 1)');
    if (!(o.betas[0] >= 0 && o.betas[0] < 1 && o.betas[1] >= 0 && o.betas[1] < 1)) bad('betas', o.betas, 'two numbers in [0, 1)');
    if (!(o.eps > 0)) bad('eps', o.eps, 'a positive number');
    if (!(o.weightDecay >= 0)) bad('weightDecay', o.weightDecay, 'a number >= 0');
    if (!(o.clipNorm >= 0)) bad('clipNorm', o.clipNorm, 'a number >= 0 (0: no clipping)');
    this.options = o;
    // The official config gives warmup_steps = 0.1 (a float): int(max_steps * 0.1).
    this.warmupSteps = Math.floor(o.totalSteps * o.warmupFraction);
    this.size = manifest.size;
    this.segments = [];
    for (const e of manifest.entries) {
      if (e.offset === null) continue;
      const group = lrGroup(e.name);
      this.segments.push({
        start: e.offset,
        end: e.offset + shapeSize(e.shape),
        lrMultiplier: group === 'head' ? o.lrMultiplierHead : group === 'multiModal' ? o.lrMultiplierMultiModal : 1,
        decay: hasWeightDecay(e.name),
      });
    }
    // The moments: in shared memory when given (the shard threads of one run update their ranges in place).
    const moments = (name: string, given: Float32Array | undefined): Float32Array => {
      if (given && given.length !== this.size) throw new Error(`AdamW: the given ${name} holds ${given.length} values; expected ${this.size}`);
      return given ?? new Float32Array(this.size);
    };
    this.m = moments('m', memory?.m);
    this.v = moments('v', memory?.v);
  }

  /** Steps taken and the first and second moments, live (shared memory when given): copy them to keep them. */
  get moments(): { m: Float32Array; v: Float32Array } {
    return { m: this.m, v: this.v };
  }


  /** Optimizer steps taken so far. */
  get step(): number {
    return this.stepCount;
  }

  /** `get_polynomial_decay_schedule_with_warmup` (power 1) factor at scheduler step t. */
  lrFactor(t: number): number {
    const { learningRate: lr, endLearningRate: end, totalSteps } = this.options;
    const w = this.warmupSteps;
    if (t < w) return t / Math.max(1, w);
    if (t > totalSteps) return lr > 0 ? end / lr : 0;
    const pctRemaining = 1 - (t - w) / (totalSteps - w);
    const decayed = (lr - end) * pctRemaining + end;
    return lr > 0 ? decayed / lr : 0;
  }

  /** One update of `params` (in place) from the summed gradient `grads` (clipped in place when asked). */
  update(params: Float32Array, grads: Float32Array): AdamWStepInfo {
    if (params.length !== this.size || grads.length !== this.size) {
      throw new Error(`AdamW.update: got ${params.length} parameters and ${grads.length} gradients; expected ${this.size} each`);
    }
    const plan = this.plan(gradientSquares(grads, 0, grads.length));
    this.applyRange(params, grads, 0, this.size, plan);
    return plan;
  }

  /**
   * Takes update number `step` from the gradient's squared norm by block ({@link gradientSquares} of the whole vector,
   * in block order): the norm, the clipping factor and the learning-rate factor every range of this update uses. A
   * sharded reducer calls this once per step, then {@link applyRange} on every shard (in any order, in parallel).
   */
  plan(blockSquares: ArrayLike<number>): AdamWPlan {
    if (blockSquares.length !== Math.ceil(this.size / GRADIENT_BLOCK)) {
      throw new Error(`AdamW.plan: got ${blockSquares.length} block sums; expected ${Math.ceil(this.size / GRADIENT_BLOCK)} (one per ${GRADIENT_BLOCK} gradients)`);
    }
    let ss = 0;
    for (let b = 0; b < blockSquares.length; b++) ss += blockSquares[b] as number;
    const gradNorm = Math.sqrt(ss);
    if (!Number.isFinite(gradNorm)) throw new Error(`AdamW.update: gradient norm is ${gradNorm}; refusing to update`);
    const maxNorm = this.options.clipNorm;
    const coef = maxNorm > 0 ? maxNorm / (gradNorm + 1e-6) : 1;
    const factor = this.lrFactor(this.stepCount);
    this.stepCount++;
    return { lrFactor: factor, learningRate: this.options.learningRate * factor, gradNorm, clipped: coef < 1, clipCoef: coef < 1 ? coef : 1, updates: this.stepCount };
  }

  /**
   * Applies a planned update to elements [start, end) of `params` (in place), clipping that range of `grads` in place
   * when the plan clips. Every element's arithmetic depends only on its own values and the plan, so ranges can be
   * updated separately — by other threads holding this optimizer's moments in shared memory — with the same bits.
   * `grads` may hold only the range: `gradsStart` is the vector index of `grads[0]`.
   */
  applyRange(params: Float32Array, grads: Float32Array, start: number, end: number, plan: AdamWPlan, gradsStart = 0): void {
    if (start < gradsStart || end - gradsStart > grads.length) throw new Error(`AdamW.applyRange: elements [${start}, ${end}) are not in the given gradients [${gradsStart}, ${gradsStart + grads.length})`);
    const o = gradsStart;
    if (plan.clipped) for (let i = start - o; i < end - o; i++) grads[i] = (grads[i] as number) * plan.clipCoef;
    const [b1, b2] = this.options.betas;
    const eps = this.options.eps;
    const wd = this.options.weightDecay;
    const bc1 = 1 - b1 ** plan.updates;
    const bc2 = 1 - b2 ** plan.updates;
    const m = this.m;
    const v = this.v;
    for (const s of this.segments) {
      const from = Math.max(s.start, start);
      const to = Math.min(s.end, end);
      if (from >= to) continue;
      const lr = this.options.learningRate * s.lrMultiplier * plan.lrFactor;
      const stepSize = (lr * Math.sqrt(bc2)) / bc1;
      const decay = s.decay && wd > 0 ? lr * wd : 0;
      for (let i = from; i < to; i++) {
        const g = grads[i - o] as number;
        const mi = b1 * (m[i] as number) + (1 - b1) * g;
        const vi = b2 * (v[i] as number) + (1 - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        // Use the float32-rounded moments, as PyTorch's float32 state would.
        let p = (params[i] as number) - (stepSize * (m[i] as number)) / (Math.sqrt(v[i] as number) + eps);
        if (decay !== 0) p -= decay * p;
        params[i] = p;
      }
    }
  }

  /** A copy of the state (for checkpoints). */
  getState(): AdamWState {
    return { step: this.stepCount, m: this.m.slice(), v: this.v.slice() };
  }

  /** Restores a state saved by getState (copied). */
  setState(state: AdamWState): void {
    if (!(Number.isInteger(state.step) && state.step >= 0)) throw new Error(`AdamW.setState: step got ${state.step}; expected an integer >= 0`);
    if (state.m.length !== this.size || state.v.length !== this.size) {
      throw new Error(`AdamW.setState: got m of ${state.m.length} and v of ${state.v.length} values; expected ${this.size} each`);
    }
    this.stepCount = state.step;
    // Into the existing moments: they may be shared with the threads that update the shards.
    this.m.set(state.m);
    this.v.set(state.v);
  }
}
