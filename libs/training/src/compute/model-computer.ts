import { buildPretrainBatch, loadTokenizer, openShardDataset, type ShardDataset, type TextTokenizer } from '@m3ae/data';
import { chooseBackend, computeGradients, createModel, numPatches, setParamsFromFlat, trainingTextLength, type M3AEConfig, type M3AEModel } from '@m3ae/model';
import { ConfigError, paramsIdentity, pretrainTotals, type RunConfig } from '@m3ae/protocol';
import { runModelConfig, runTokenizerPath } from '../setup/model-setup.js';
import { realTokens, type GradientComputer, type MicroBatchResult } from './gradient-computer.js';
import type { ComputeJob } from '../gradient-source.js';

/**
 * Real M3AE gradients with TensorFlow.js: the micro-batch is built from the shard dataset by sample index
 * (every random input a function of seed, step and index), parameters are loaded into the model once per
 * version, and `computeGradients` returns Σ_o w_o · S_o / N_o's gradient with the job's global normalizers.
 */
export class ModelComputer implements GradientComputer {
  readonly manifestHash: string;
  readonly paramCount: number;
  private loadedVersion: { version: number; checksum: string } | undefined;

  private constructor(
    private readonly run: RunConfig,
    private readonly config: M3AEConfig,
    private readonly model: M3AEModel,
    private readonly dataset: ShardDataset,
    private readonly tokenizer: TextTokenizer,
    readonly backend: string,
  ) {
    this.manifestHash = model.manifest.hash;
    this.paramCount = model.manifest.size;
  }

  static async create(run: RunConfig): Promise<ModelComputer> {
    const config = runModelConfig(run);
    const choice = await chooseBackend({ backend: run.compute.backend });
    if (!run.data.dir) throw new ConfigError('data.dir is not set; expected the shard dataset the coordinator trains on');
    const [dataset, tokenizer] = await Promise.all([openShardDataset(run.data.dir), loadTokenizer(runTokenizerPath(run))]);
    // Parameters always come from the coordinator: no need to draw initial values here.
    const model = createModel(config, { zeroInit: true });
    return new ModelComputer(run, config, model, dataset, tokenizer, choice.name);
  }

  async compute(job: ComputeJob, params: Float32Array): Promise<MicroBatchResult> {
    if (job.datasetHash !== undefined && job.datasetHash !== this.dataset.datasetHash) {
      throw new Error(`job ${job.step}/${job.jobIndex} is for dataset ${job.datasetHash.slice(0, 16)}…; this worker reads ${this.dataset.datasetHash.slice(0, 16)}… from ${this.run.data.dir}`);
    }
    if (this.loadedVersion?.version !== job.version || this.loadedVersion.checksum !== paramsIdentity(job.params)) {
      setParamsFromFlat(this.model, params);
      this.loadedVersion = { version: job.version, checksum: paramsIdentity(job.params) };
    }
    const batch = await buildPretrainBatch({
      dataset: this.dataset,
      tokenizer: this.tokenizer,
      indices: job.indices,
      positions: job.positions,
      globalBatchSize: job.globalBatchSize,
      step: job.step,
      seed: job.seed,
      imageSize: this.config.imageSize,
      maxTextLength: trainingTextLength(this.config),
      mlmProbability: this.config.mlmMaskRatio,
      mimMaskRatio: this.config.mimMaskRatio,
      numPatches: numPatches(this.config),
    });
    const r = await computeGradients(this.model, batch, { normalizers: pretrainTotals(job.normalizers), training: true });
    return { ...r, tokens: realTokens(batch.attentionMask) };
  }

  async dispose(): Promise<void> {
    this.model.dispose();
    await this.dataset.close();
  }
}
