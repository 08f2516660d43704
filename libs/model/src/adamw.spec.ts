import { describe, expect, it } from 'vitest';
import { GRADIENT_BLOCK } from '@m3ae/protocol';
import { AdamW, gradientSquares } from './adamw.js';
import { buildManifest, type ParamSpec } from './params.js';

const spec = (name: string, n: number): ParamSpec => ({ name, shape: [n], init: { kind: 'zeros' }, trainable: true });
// One parameter per group: encoder weight (decay), encoder bias (no decay), head weight (×5, decay),
// multi-modal LayerNorm weight (×5, no decay), and CLIP's ln_pre weight (decayed by the official rules).
const manifest = buildManifest([
  spec('language_encoder.encoder.layer.0.intermediate.dense.weight', 2),
  spec('language_encoder.encoder.layer.0.intermediate.dense.bias', 2),
  spec('itm_head.fc.weight', 2),
  spec('multi_modal_language_layers.0.output.LayerNorm.weight', 2),
  spec('vision_encoder.visual.ln_pre.weight', 2),
]);

/** transformers.optimization.AdamW (correct_bias=True) for one scalar, the reference the official code used. */
function referenceStep(p: number, g: number, s: { m: number; v: number; t: number }, lr: number, wd: number): number {
  const [b1, b2, eps] = [0.9, 0.98, 1e-8];
  s.t += 1;
  s.m = b1 * s.m + (1 - b1) * g;
  s.v = b2 * s.v + (1 - b2) * g * g;
  const stepSize = (lr * Math.sqrt(1 - b2 ** s.t)) / (1 - b1 ** s.t);
  p = p - (stepSize * s.m) / (Math.sqrt(s.v) + eps);
  return p - lr * wd * p;
}

describe('AdamW', () => {
  it('follows the polynomial (power 1) warm-up and decay schedule', () => {
    const opt = new AdamW(manifest, { totalSteps: 100, learningRate: 1e-4 });
    expect(opt.warmupSteps).toBe(10);
    expect([0, 5, 10, 55, 100, 150].map((t) => opt.lrFactor(t))).toEqual([0, 0.5, 1, 0.5, 0, 0]);
  });

  it('matches the reference per group: learning-rate multipliers and weight decay', () => {
    const lr = 1e-3;
    const opt = new AdamW(manifest, { totalSteps: 10, learningRate: lr, warmupFraction: 0.2 });
    const params = Float32Array.from([0.5, -0.5, 0.5, -0.5, 1, 1, 1, 1, 0.3, 0.3]);
    const grads = Float32Array.from([0.1, -0.2, 0.1, -0.2, 0.3, 0.05, 0.3, 0.05, 0.2, 0.2]);
    const mult = [1, 1, 1, 1, 5, 5, 5, 5, 1, 1];
    const decay = [true, true, false, false, true, true, false, false, true, true];
    const ref = Array.from(params, (p) => ({ p, s: { m: 0, v: 0, t: 0 } }));
    for (let step = 0; step < 4; step++) {
      const info = opt.update(params, grads.slice());
      expect(info.lrFactor).toBe(opt.lrFactor(step));
      ref.forEach((r, i) => {
        r.p = referenceStep(r.p, grads[i] ?? 0, r.s, lr * (mult[i] ?? 1) * info.lrFactor, decay[i] ? 0.01 : 0);
      });
      ref.forEach((r, i) => expect(params[i]).toBeCloseTo(r.p, 6));
    }
    // The first update has learning rate 0 (LambdaLR starts at factor(0) = 0): only the moments moved.
    const fresh = new AdamW(manifest, { totalSteps: 10, learningRate: lr });
    const p0 = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    fresh.update(p0, grads.slice());
    expect(Array.from(p0)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(fresh.getState().m[0]).toBeCloseTo(0.01, 7);
  });

  it('clips the global gradient norm when asked', () => {
    const opt = new AdamW(manifest, { totalSteps: 10, clipNorm: 1 });
    const grads = new Float32Array(10).fill(0);
    grads[0] = 6;
    grads[1] = 8;
    const info = opt.update(new Float32Array(10), grads);
    expect(info.gradNorm).toBeCloseTo(10, 5);
    expect(info.clipped).toBe(true);
    expect(grads[0]).toBeCloseTo(0.6, 5);
    expect(grads[1]).toBeCloseTo(0.8, 5);
    expect(() => opt.update(new Float32Array(10), new Float32Array(10).fill(Number.NaN))).toThrow(/gradient norm is NaN/);
  });

  it('one plan, ranges updated separately (in any order, moments shared): the bits of one whole update', () => {
    // Three gradient blocks and a bit; the layout's groups (×5 head, no decay on LayerNorm) straddle the cuts.
    const n = 3 * GRADIENT_BLOCK + 5;
    const big = buildManifest([
      spec('language_encoder.encoder.layer.0.intermediate.dense.weight', GRADIENT_BLOCK + 3),
      spec('itm_head.fc.weight', GRADIENT_BLOCK),
      spec('multi_modal_language_layers.0.output.LayerNorm.weight', n - 2 * GRADIENT_BLOCK - 3),
    ]);
    const grads = (t: number): Float32Array => new Float32Array(n).map((_, i) => Math.sin(i * 3 + t) * 10 ** ((i % 7) - 3));
    const whole = new AdamW(big, { totalSteps: 4, clipNorm: 1 });
    const pw = new Float32Array(n).map((_, i) => Math.cos(i) * 0.02);
    const memory = { m: new Float32Array(n), v: new Float32Array(n) };
    const planner = new AdamW(big, { totalSteps: 4, clipNorm: 1 }, memory);
    const worker = new AdamW(big, { totalSteps: 4, clipNorm: 1 }, memory); // another shard's copy over the same moments
    const ps = pw.slice();
    const cuts = [0, GRADIENT_BLOCK, 3 * GRADIENT_BLOCK, n];
    for (let t = 0; t < 3; t++) {
      const info = whole.update(pw, grads(t));
      const g = grads(t);
      const parts = [0, 1, 2].map((s) => gradientSquares(g, cuts[s] as number, cuts[s + 1] as number));
      const plan = planner.plan(Float64Array.from(parts.flatMap((x) => [...x])));
      expect(plan.gradNorm).toBe(info.gradNorm);
      expect(plan.clipped).toBe(true);
      for (const s of [2, 0, 1]) {
        const [a, b] = [cuts[s] as number, cuts[s + 1] as number];
        worker.applyRange(ps, g.slice(a, b), a, b, plan, a);
      }
    }
    expect(Buffer.from(ps.buffer).equals(Buffer.from(pw.buffer))).toBe(true);
    expect(() => planner.plan(new Float64Array(2))).toThrow(`AdamW.plan: got 2 block sums; expected 4 (one per ${GRADIENT_BLOCK} gradients)`);
    expect(() => gradientSquares(grads(0), 5, 10)).toThrow(`gradientSquares: start 5 is not a multiple of ${GRADIENT_BLOCK}`);
    expect(() => worker.applyRange(ps, new Float32Array(4), 0, 8, planner.plan(new Float64Array(4)), 0)).toThrow('AdamW.applyRange: elements [0, 8) are not in the given gradients [0, 4)');
  });

  it('restores its state exactly', () => {
    const run = (opt: AdamW, p: Float32Array, steps: number): void => {
      for (let s = 0; s < steps; s++) opt.update(p, Float32Array.from({ length: 10 }, (_, i) => Math.sin(i + s + opt.step)));
    };
    const a = new AdamW(manifest, { totalSteps: 20, learningRate: 1e-2 });
    const pa = new Float32Array(10).fill(0.1);
    run(a, pa, 3);
    const saved = a.getState();
    const pb = pa.slice();
    run(a, pa, 4);
    const b = new AdamW(manifest, { totalSteps: 20, learningRate: 1e-2 });
    b.setState(saved);
    expect(b.step).toBe(3);
    run(b, pb, 4);
    expect(Array.from(pb)).toEqual(Array.from(pa));
    expect(() => b.setState({ step: 1, m: new Float32Array(3), v: new Float32Array(3) })).toThrow(/got m of 3 and v of 3 values; expected 10 each/);
  });

  it('rejects bad options by name', () => {
    expect(() => new AdamW(manifest, { totalSteps: 0 })).toThrow(/options\.totalSteps: got 0; expected a positive integer/);
    expect(() => new AdamW(manifest, { totalSteps: 5, betas: [0.9, 1.5] })).toThrow(/options\.betas/);
    expect(() => new AdamW(manifest, { totalSteps: 5, clipNorm: -1 })).toThrow(/options\.clipNorm: got -1/);
  });
});
