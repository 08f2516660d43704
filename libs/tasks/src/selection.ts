import { join } from 'node:path';
import { flattenDownstream, saveCheckpoint, type DownstreamModel } from '@m3ae/model';
import { finetuneMetadata, type FinetunePlan } from './finetune.js';
import { evaluateSplit, selectionScore, TaskError, type TaskMetrics } from './task-data.js';

export interface HistoryEntry {
  step: number;
  epoch: number;
  trainLoss: number;
  trainAccuracy: number;
  score: number;
  val: TaskMetrics;
}

export interface BestModel {
  step: number;
  score: number;
  path: string;
  metrics: TaskMetrics | undefined;
}

/** What a checkpoint stores under metadata `selection` so that a resumed run selects as an uninterrupted one. */
export interface SelectionState {
  best: BestModel;
  history: HistoryEntry[];
  window: { loss: number; correct: number; count: number };
}

/**
 * Model selection on the validation split only (the honest protocol): the plan's model is evaluated on `plan.val`
 * when asked (after every epoch, every `evalEvery` steps), and a better score writes `OUTPUT/best/` — the checkpoint
 * `m3ae eval` reads. Training loss and accuracy since the last validation are kept for the history. The test split
 * is never read here.
 */
export class ModelSelection {
  best: BestModel = { step: -1, score: -Infinity, path: '', metrics: undefined };
  history: HistoryEntry[] = [];
  private window = { loss: 0, correct: 0, count: 0 };

  constructor(
    private readonly plan: FinetunePlan,
    /** Where `best/` goes. */
    readonly output: string,
    private readonly log: (line: string) => void = () => undefined,
  ) {
    if (!plan.val) throw new TaskError('model selection needs a plan with a validation split');
  }

  get bestDir(): string {
    return join(this.output, 'best');
  }

  /** Whether validation is due after `done` steps: at every epoch's end, every `evalEvery` steps, and at the last step. */
  due(done: number): boolean {
    const s = this.plan.settings;
    const every = this.plan.options.evalEvery;
    return done % s.stepsPerEpoch === 0 || done === s.steps || (every !== undefined && done % every === 0);
  }

  /** Adds a step's training totals (Σ loss, correct, examples) to the window reported at the next validation. */
  observe(totals: { sum: number; correct: number; count: number }): void {
    this.window.loss += totals.sum;
    this.window.correct += totals.correct;
    this.window.count += totals.count;
  }

  /** Evaluates `model` (holding the parameters after `step` steps) on validation; writes `best/` when it improved. */
  async validate(model: DownstreamModel, step: number, params?: Float32Array): Promise<HistoryEntry & { improved: boolean }> {
    const { plan } = this;
    const val = plan.val;
    if (!val) throw new TaskError('model selection needs a plan with a validation split');
    const ev = await evaluateSplit(model, val, { tokenizer: plan.tokenizer, images: plan.images, textLength: plan.settings.textLength, batchSize: Math.max(plan.settings.microBatch, 8) });
    const score = selectionScore(ev.metrics);
    const w = this.window;
    const entry: HistoryEntry = {
      step,
      epoch: step / plan.settings.stepsPerEpoch,
      trainLoss: w.count ? w.loss / w.count : NaN,
      trainAccuracy: w.count ? w.correct / w.count : NaN,
      score,
      val: ev.metrics,
    };
    this.history.push(entry);
    this.window = { loss: 0, correct: 0, count: 0 };
    const improved = score > this.best.score;
    if (improved) {
      const saved = await saveCheckpoint(
        this.bestDir,
        {
          step,
          manifest: model.manifest,
          params: params ?? await flattenDownstream(model),
          config: plan.config,
          metadata: { ...finetuneMetadata(plan), selection: JSON.stringify({ score, split: 'val' }) },
        },
        { keepLast: 1 },
      );
      this.best = { step, score, path: saved.path, metrics: ev.metrics };
    }
    const pct = (x: number): string => (100 * x).toFixed(1);
    this.log(`step ${step} epoch ${entry.epoch.toFixed(2)}: train loss ${entry.trainLoss.toFixed(4)} acc ${pct(entry.trainAccuracy)}% | val score ${(100 * score).toFixed(2)}%${improved ? ' (best)' : ''}`);
    return { ...entry, improved };
  }

  state(): SelectionState {
    return { best: this.best, history: this.history, window: this.window };
  }

  /** Restores from a checkpoint's metadata `selection` (absent: a fresh selection). */
  restore(raw: string | undefined): void {
    if (!raw) return;
    const s = JSON.parse(raw) as Partial<SelectionState>;
    // JSON writes -Infinity as null: no best model yet.
    if (s.best) this.best = { ...s.best, score: typeof s.best.score === 'number' ? s.best.score : -Infinity };
    this.history = s.history ?? [];
    if (s.window) this.window = s.window;
  }
}
