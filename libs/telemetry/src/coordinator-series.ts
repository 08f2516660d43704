import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** The curves and throughput of training: losses, accuracies, learning rate, progress, step time, samples. */
export interface TrainingSeries {
  loss: Gauge<'objective'>;
  accuracy: Gauge<'objective'>;
  learningRate: Gauge;
  gradientNorm: Gauge;
  step: Gauge;
  targetSteps: Gauge;
  stepsRemaining: Gauge;
  eta: Gauge;
  jobsPerStep: Gauge;
  globalBatch: Gauge;
  stepsCompleted: Counter;
  stepDuration: Histogram;
  phaseSeconds: Counter<'phase'>;
  jobPhaseSeconds: Counter<'phase'>;
  samples: Counter;
  tokens: Counter;
}

/** Micro-batch job accounting and the workers seen. */
export interface JobSeries {
  jobsEnqueued: Counter;
  jobsAccepted: Counter<'worker'>;
  jobsRetried: Counter;
  jobsRedelivered: Counter;
  jobsRejected: Counter<'reason'>;
  jobsDuplicated: Counter;
  backupEnqueued: Counter;
  backupWon: Counter;
  workersActive: Gauge;
}

/** Checkpoints written and, when fine-tuning, the models selected on validation. */
export interface CheckpointSeries {
  checkpointDuration: Histogram;
  checkpoints: Counter<'outcome'>;
  checkpointStep: Gauge;
  validationScore: Gauge<'model'>;
  validationStep: Gauge<'model'>;
  checkpointTimestamp: Gauge;
}

/** Pre-training's held-out evaluation (`evaluation.every`): the objectives on pairs it never trains on, and their baselines. */
export interface HeldOutSeries {
  heldOutLoss: Gauge<'objective'>;
  heldOutAccuracy: Gauge<'objective'>;
  heldOutStep: Gauge;
  heldOutBaseline: Gauge<'baseline'>;
}

/** The coordinator's Prometheus series (names, help, labels, buckets): what dashboards and alerts read. */
export type CoordinatorSeries = TrainingSeries & JobSeries & CheckpointSeries & HeldOutSeries;

const CHECKPOINT_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/** Registers the training series. */
function trainingSeries(registers: Registry[], stepBuckets: number[]): TrainingSeries {
  return {
    loss: new Gauge({
      name: 'm3ae_loss',
      help: 'Training loss of the last step, per objective (pre-training: mlm, mim, itm; fine-tuning: vqa, cls or irtr) and in total (weighted sum).',
      labelNames: ['objective'],
      registers,
    }),
    accuracy: new Gauge({
      name: 'm3ae_accuracy_ratio',
      help: 'Accuracy of the last step (0–1): masked-token prediction (mlm), image-text matching (itm), a downstream task (vqa, cls, irtr).',
      labelNames: ['objective'],
      registers,
    }),
    learningRate: new Gauge({ name: 'm3ae_learning_rate', help: 'Learning rate applied at the last step.', registers }),
    gradientNorm: new Gauge({
      name: 'm3ae_gradient_norm',
      help: 'Global L2 norm of the last step\u2019s gradient, before clipping.',
      registers,
    }),
    step: new Gauge({ name: 'm3ae_training_step', help: 'Last completed optimizer step.', registers }),
    targetSteps: new Gauge({ name: 'm3ae_training_target_steps', help: 'Steps the run trains for.', registers }),
    stepsRemaining: new Gauge({
      name: 'm3ae_training_steps_remaining',
      help: 'Steps left to train (target − last completed); 0 when the run is done.',
      registers,
    }),
    eta: new Gauge({
      name: 'm3ae_eta_seconds',
      help: 'Estimated seconds to the end of the run (steps remaining × recent mean step time).',
      registers,
    }),
    jobsPerStep: new Gauge({
      name: 'm3ae_jobs_per_step',
      help: 'Micro-batch jobs per step (global batch / micro-batch): the most workers one step can use.',
      registers,
    }),
    globalBatch: new Gauge({ name: 'm3ae_global_batch_size', help: 'Samples per optimizer step.', registers }),
    stepsCompleted: new Counter({ name: 'm3ae_steps_completed_total', help: 'Optimizer steps completed.', registers }),
    stepDuration: new Histogram({
      name: 'm3ae_step_duration_seconds',
      help: 'Wall time of one synchronous step (publish v → publish v + 1).',
      buckets: stepBuckets,
      registers,
    }),
    phaseSeconds: new Counter({
      name: 'm3ae_step_phase_seconds_total',
      help: 'Coordinator step time by phase (publish, enqueue, idle, reduction, optimizer, checkpoint); rate / steps rate = seconds per step.',
      labelNames: ['phase'],
      registers,
    }),
    jobPhaseSeconds: new Counter({
      name: 'm3ae_job_phase_seconds_total',
      help: 'Per step, the mean seconds an accepted job spent by phase (fetch, compute, encode, upload) as workers reported; rate / steps rate = seconds per job.',
      labelNames: ['phase'],
      registers,
    }),
    samples: new Counter({ name: 'm3ae_samples_total', help: 'Samples trained on (rate = samples/s).', registers }),
    tokens: new Counter({ name: 'm3ae_tokens_total', help: 'Real text tokens trained on (rate = tokens/s).', registers }),
  };
}

/** Registers the job series. */
function jobSeries(registers: Registry[]): JobSeries {
  return {
    jobsEnqueued: new Counter({ name: 'm3ae_jobs_enqueued_total', help: 'Micro-batch jobs enqueued, backups included.', registers }),
    jobsAccepted: new Counter({
      name: 'm3ae_jobs_accepted_total',
      help: 'Micro-batch results verified and counted into a step (exactly one per micro-batch), by worker.',
      labelNames: ['worker'],
      registers,
    }),
    jobsRetried: new Counter({
      name: 'm3ae_jobs_retried_total',
      help: 'Micro-batch jobs enqueued again after a failed or rejected attempt.',
      registers,
    }),
    jobsRedelivered: new Counter({
      name: 'm3ae_jobs_redelivered_total',
      help: 'Jobs BullMQ delivered again after their lock expired (stalled: a worker died or blocked).',
      registers,
    }),
    jobsRejected: new Counter({
      name: 'm3ae_jobs_rejected_total',
      help: 'Results refused, by reason (stale step/version/incarnation, manifest, length, checksum, non-finite, …).',
      labelNames: ['reason'],
      registers,
    }),
    jobsDuplicated: new Counter({
      name: 'm3ae_jobs_duplicated_total',
      help: 'Valid results ignored because their micro-batch was already counted (redelivery or backup lost the race).',
      registers,
    }),
    backupEnqueued: new Counter({
      name: 'm3ae_backup_jobs_total',
      help: 'Backup copies enqueued for straggling micro-batches.',
      registers,
    }),
    backupWon: new Counter({
      name: 'm3ae_backup_jobs_won_total',
      help: 'Micro-batches whose backup copy finished first.',
      registers,
    }),
    workersActive: new Gauge({
      name: 'm3ae_workers_active',
      help: 'Workers that took or finished a job recently, as the coordinator sees them.',
      registers,
    }),
  };
}

/** Registers the checkpoint and validation series; `m3ae_checkpoint_age_seconds` is computed at scrape time. */
function checkpointSeries(registers: Registry[], checkpointAge: () => number): CheckpointSeries {
  const series: CheckpointSeries = {
    checkpointDuration: new Histogram({
      name: 'm3ae_checkpoint_duration_seconds',
      help: 'Time to write one checkpoint atomically.',
      buckets: CHECKPOINT_BUCKETS,
      registers,
    }),
    checkpoints: new Counter({
      name: 'm3ae_checkpoints_total',
      help: 'Checkpoint writes by outcome (written, failed).',
      labelNames: ['outcome'],
      registers,
    }),
    checkpointStep: new Gauge({ name: 'm3ae_checkpoint_last_step', help: 'Step of the newest checkpoint written.', registers }),
    validationScore: new Gauge({
      name: 'm3ae_validation_score',
      help: 'Fine-tuning: the selection score on the validation split (0–1: VQA overall accuracy, accuracy, mean R@K) of the last validated model and of the best so far.',
      labelNames: ['model'],
      registers,
    }),
    validationStep: new Gauge({ name: 'm3ae_validation_step', help: 'Fine-tuning: the step of the last validated model and of the best so far.', labelNames: ['model'], registers }),
    checkpointTimestamp: new Gauge({
      name: 'm3ae_checkpoint_last_timestamp_seconds',
      help: 'Unix time of the newest checkpoint written.',
      registers,
    }),
  };
  new Gauge({
    name: 'm3ae_checkpoint_age_seconds',
    help: 'Seconds since the newest checkpoint (or since this coordinator started, before its first): work a crash would lose.',
    registers,
    collect() {
      this.set(checkpointAge());
    },
  });
  return series;
}

/** Registers the held-out evaluation series. */
function heldOutSeries(registers: Registry[]): HeldOutSeries {
  return {
    heldOutLoss: new Gauge({
      name: 'm3ae_heldout_loss',
      help: 'Pre-training: mean loss per objective (mlm per masked token in nats, mim per masked patch, itm per pair) of the last held-out evaluation.',
      labelNames: ['objective'],
      registers,
    }),
    heldOutAccuracy: new Gauge({
      name: 'm3ae_heldout_accuracy_ratio',
      help: 'Pre-training: masked-token (mlm) and image-text matching (itm) accuracy (0–1) of the last held-out evaluation.',
      labelNames: ['objective'],
      registers,
    }),
    heldOutStep: new Gauge({ name: 'm3ae_heldout_step', help: 'Pre-training: the step of the last held-out evaluation.', registers }),
    heldOutBaseline: new Gauge({
      name: 'm3ae_heldout_baseline',
      help: 'Pre-training: what the held-out figures are read against: unigram_heldout (a unigram model of the training captions on the same held-out masked tokens, nats: an MLM loss below it uses context), unigram_entropy (of the training captions, nats per token), itm_chance (0.5).',
      labelNames: ['baseline'],
      registers,
    }),
  };
}

/** Registers the coordinator's series in `registers`, in this order (the scrape's order). */
export function coordinatorSeries(registers: Registry[], options: { stepBuckets: number[]; checkpointAge: () => number }): CoordinatorSeries {
  return { ...trainingSeries(registers, options.stepBuckets), ...jobSeries(registers), ...checkpointSeries(registers, options.checkpointAge), ...heldOutSeries(registers) };
}
