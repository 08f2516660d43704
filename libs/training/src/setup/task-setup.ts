import { resolve } from 'node:path';
import { chooseBackend, flattenDownstream, setDownstreamFromFlat } from '@m3ae/model';
import { ConfigError, type ObjectiveTotals, type RunConfig, type TrainingSettings } from '@m3ae/protocol';
import { createTaskModel, finetuneMetadata, finetuneOptionsFromRun, ModelSelection, planFinetune, splitSize, taskObjective, type FinetunePlan, type HistoryEntry } from '@m3ae/tasks';
import type { TrainingSetup } from './training-setup.js';

export interface TaskSetupOptions {
  log?: (line: string) => void;
  /** After each validation (every epoch's end, `task.evalEvery`, the last step). */
  onValidate?: (entry: HistoryEntry & { improved: boolean; best: { step: number; score: number; path: string } }) => void;
}

/**
 * A downstream task (`task.name` in the run configuration), for the trainer: the fine-tuning plan of @m3ae/tasks
 * (the same one `m3ae finetune` runs in one process), the pre-trained backbone plus the new head as initial
 * parameters, one objective (`vqa`, `cls` or `irtr`) normalised by the step's example count, the official AdamW,
 * and model selection on the validation split after every epoch — in this process, with TensorFlow.js — writing
 * `checkpoint.dir/best/`. The test split is never read.
 */
export interface TaskTrainingSetup extends TrainingSetup {
  readonly kind: 'task';
  readonly plan: FinetunePlan;
  /** Validation history and the selected model so far. */
  readonly selection: ModelSelection;
}

export async function taskSetup(config: RunConfig, options: TaskSetupOptions = {}): Promise<TaskTrainingSetup> {
  const log = options.log ?? ((): void => undefined);
  const finetune = finetuneOptionsFromRun(config);
  await chooseBackend({ backend: config.compute.backend });
  const plan = await planFinetune(finetune);
  const model = await createTaskModel(plan, { log });
  const objective = taskObjective(plan.head.kind);
  const selection = new ModelSelection(plan, resolve(config.checkpoint.dir), log);
  const initial = await flattenDownstream(model);
  const taskMeta = JSON.stringify(plan.meta);
  return {
    kind: 'task',
    plan,
    selection,
    manifest: model.manifest,
    modelConfig: plan.config,
    datasetSize: splitSize(plan.train),
    datasetHash: plan.datasetHash,
    objectiveWeights: { [objective]: 1 },
    schedule: { steps: plan.settings.steps, globalBatch: plan.settings.globalBatch, microBatch: plan.settings.microBatch, microBatchesPerJob: config.training.microBatchesPerJob, dropLast: false },
    initialParams: () => initial.slice(),
    counts: async (slice): Promise<ObjectiveTotals> => ({ [objective]: slice.indices.length }),
    optimizer: { layout: model.manifest, training: taskTraining(config, plan) },
    checkpointMetadata: () => ({ ...finetuneMetadata(plan), selection: JSON.stringify(selection.state()) }),
    restore: (metadata) => {
      if (metadata['task'] !== undefined && metadata['task'] !== taskMeta) {
        throw new ConfigError(`the checkpoint in ${config.checkpoint.dir} was written for another task setup (${metadata['task'].slice(0, 120)}…); use another checkpoint.dir`);
      }
      selection.restore(metadata['selection']);
    },
    afterStep: async (done, params, report) => {
      const n = report.samples;
      selection.observe({ sum: (report.losses[objective] ?? 0) * n, correct: (report.accuracy[objective] ?? 0) * n, count: n });
      if (!selection.due(done)) return;
      setDownstreamFromFlat(model, params);
      const entry = await selection.validate(model, done, params);
      const { step, score, path } = selection.best;
      options.onValidate?.({ ...entry, best: { step, score, path } });
    },
    close: async () => model.dispose(),
  };
}

/** The `training` of a fine-tuning run: the plan's resolved settings (the task's official ones where unset), the run's optimizer constants. */
export function taskTraining(config: RunConfig, plan: FinetunePlan): TrainingSettings {
  const s = plan.settings;
  return {
    ...config.training,
    steps: s.steps,
    epochs: s.epochs,
    globalBatch: s.globalBatch,
    microBatch: s.microBatch,
    learningRate: s.learningRate,
    lrMultiplierHead: s.lrMultiplierHead,
    lrMultiplierMultiModal: s.lrMultiplierMultiModal,
    warmupFraction: s.warmupFraction,
    weightDecay: s.weightDecay,
    clipNorm: s.clipNorm,
  };
}
