import { describe, expect, it } from 'vitest';
import { BUDGET_SHARES, BUDGET_VALIDATIONS, parseSizes, planBudget, type BudgetTiming } from './learning.js';

const timing: BudgetTiming = { spentS: 20, pretrainStepS: 0.5, finetuneStepS: 0.25, validationS: 2, finetuneSetupS: 10, holdoutPerValidation: 1.5 };
const unbounded = { pretrainSteps: 100_000, finetuneSteps: 100_000 };

describe('bench learning sizes and budget', () => {
  it('sizes the pre-training and each fine-tuning (with its set-up, validations and held-out evaluation) to their shares', () => {
    const plan = planBudget(420, timing, unbounded);
    expect(plan.pretrainSteps).toBe(Math.floor((BUDGET_SHARES.pretrain * 400) / 0.5));
    const overhead = 10 + (BUDGET_VALIDATIONS + 1.5) * 2;
    expect(plan.finetuneSteps).toBe(Math.floor((BUDGET_SHARES.finetune * 400 - overhead) / 0.25));
    // Everything planned fits the budget: the timing runs, pre-training and three fine-tunings.
    expect(20 + plan.pretrainSteps * 0.5 + 3 * (overhead + plan.finetuneSteps * 0.25)).toBeLessThanOrEqual(420);
  });

  it('never plans more than the fixed counts, nor fewer than one step, and refuses what is not a time', () => {
    expect(planBudget(1e6, timing, { pretrainSteps: 320, finetuneSteps: 50 })).toEqual({ pretrainSteps: 320, finetuneSteps: 50 });
    expect(planBudget(10, { ...timing, spentS: 30 }, unbounded)).toEqual({ pretrainSteps: 1, finetuneSteps: 1 });
    expect(() => planBudget(10, { ...timing, pretrainStepS: Number.NaN }, unbounded)).toThrow('planBudget: pretrainStepS = NaN');
  });

  it('the GPU recipe: a budget and part (b) at 128 px, under explicit --size keys and --quick', () => {
    expect(parseSizes(undefined, false, true)).toMatchObject({ parts: 'b', 'budget-s': 420, 'pretrain-px': 128, threads: 1 });
    expect(parseSizes('budget-s=300', false, true)).toMatchObject({ 'budget-s': 300, parts: 'b' });
    expect(parseSizes(undefined, false, false)).toMatchObject({ parts: 'a,b', 'budget-s': 0, out: '' });
    expect(parseSizes(undefined, true, true)['pretrain-steps']).toBe(4);
  });
});
