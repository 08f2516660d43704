import { chooseBackend, computeTaskGradients, setDownstreamFromFlat, type DownstreamModel } from '@m3ae/model';
import { paramsIdentity, type RunConfig } from '@m3ae/protocol';
import { buildTrainBatch, createTaskModel, finetuneOptionsFromRun, planFinetune, taskObjective, type FinetunePlan } from '@m3ae/tasks';
import { realTokens, type GradientComputer, type MicroBatchResult } from './gradient-computer.js';
import type { ComputeJob } from '../gradient-source.js';

/**
 * A downstream task's gradients (`task.name` in the run configuration): the worker makes the same fine-tuning plan
 * as the coordinator (training split only), builds the job's examples by index — crops, negatives and dropout a
 * function of (seed, step, example index) — and returns ∇ Σ loss / N with N the step's example count, so the
 * coordinator's sum over jobs is the global batch's gradient exactly as `m3ae finetune` computes it in one process.
 */
export class TaskComputer implements GradientComputer {
  readonly manifestHash: string;
  readonly paramCount: number;
  private loadedVersion: { version: number; checksum: string } | undefined;
  private readonly objective: 'vqa' | 'cls' | 'irtr';

  private constructor(
    private readonly plan: FinetunePlan,
    private readonly model: DownstreamModel,
    readonly backend: string,
  ) {
    this.manifestHash = model.manifest.hash;
    this.paramCount = model.manifest.size;
    this.objective = taskObjective(plan.head.kind);
  }

  static async create(run: RunConfig): Promise<TaskComputer> {
    const options = finetuneOptionsFromRun(run);
    const choice = await chooseBackend({ backend: run.compute.backend });
    const plan = await planFinetune(options, { splits: 'train' });
    // Parameters always come from the coordinator: the pre-trained weights are not loaded here.
    const model = await createTaskModel(plan, { pretrained: false });
    return new TaskComputer(plan, model, choice.name);
  }

  async compute(job: ComputeJob, params: Float32Array): Promise<MicroBatchResult> {
    if (job.datasetHash !== undefined && job.datasetHash !== this.plan.datasetHash) {
      throw new Error(
        `job ${job.step}/${job.jobIndex} is for task data ${job.datasetHash.slice(0, 21)}…; this worker's plan of ${this.plan.meta.name} on ${this.plan.options.data} is ${this.plan.datasetHash.slice(0, 21)}…`,
      );
    }
    const n = job.normalizers[this.objective];
    if (n === undefined) throw new Error(`job ${job.step}/${job.jobIndex} has no ${this.objective} normalizer (normalizers ${JSON.stringify(job.normalizers)}); is the coordinator training another task?`);
    if (this.loadedVersion?.version !== job.version || this.loadedVersion.checksum !== paramsIdentity(job.params)) {
      setDownstreamFromFlat(this.model, params);
      this.loadedVersion = { version: job.version, checksum: paramsIdentity(job.params) };
    }
    const batch = await buildTrainBatch(this.plan, [...job.indices], job.step);
    const r = await computeTaskGradients(this.model, batch, { normalizer: n, training: true });
    const o = this.objective;
    return { sums: { [o]: r.sum }, counts: { [o]: r.count }, correct: { [o]: r.correct }, tokens: realTokens(batch.attentionMask), grads: r.grads };
  }

  async dispose(): Promise<void> {
    this.model.dispose();
  }
}
