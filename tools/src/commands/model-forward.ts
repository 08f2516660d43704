import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import {
  chooseBackend,
  computeGradients,
  computeLosses,
  createModel,
  mimKeepCount,
  numPatches,
  readBatchFile,
  readOfficialWeights,
  resolveConfig,
  setModelParams,
  unflatten,
  writeOfficialWeights,
  type LossNormalizers,
  type M3AEConfig,
  type PretrainBatch,
} from '@m3ae/model';
import { BACKEND_HELP } from '../flags.js';

export interface ModelForwardOptions {
  readonly config: string;
  readonly weights: string;
  readonly batch: string;
  /** Write the gradient of mlm_loss + mim_loss + itm_loss here (official names). */
  readonly grads?: string | undefined;
  readonly backend?: string | undefined;
}

/** The printed line. A loss is null when its objective is disabled or the batch has nothing to count for it. */
export interface ModelForwardResult {
  mlm_loss: number | null;
  mim_loss: number | null;
  itm_loss: number | null;
  mlm_accuracy: number | null;
  itm_accuracy: number | null;
}

/** Items each loss is averaged over in this batch: masked tokens, masked patches, pairs (the official means). */
export function batchCounts(config: M3AEConfig, b: PretrainBatch): LossNormalizers {
  let mlm = 0;
  for (const v of b.mlmLabels) if (v !== -100) mlm++;
  return { mlm, mim: b.batchSize * (numPatches(config) - mimKeepCount(config)), itm: b.batchSize };
}

export async function readConfigFile(path: string): Promise<M3AEConfig> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path}: not a readable JSON file (${e instanceof Error ? e.message : String(e)})`);
  }
  return resolveConfig(json, path);
}

/**
 * Evaluates the three pre-training losses of one batch in evaluation mode (no dropout), each as the official
 * code's mean, and optionally writes ∇(mlm_loss + mim_loss + itm_loss) under the official names: the model's
 * gradient with every enabled objective weighted 1 and normalised by this batch's own counts.
 */
export async function modelForward(opts: ModelForwardOptions, warn: (line: string) => void = (l) => process.stderr.write(l + '\n')): Promise<ModelForwardResult> {
  const config = await readConfigFile(opts.config);
  // The reference figure is the plain sum of the three means, whatever weights the configuration trains with.
  const evalConfig: M3AEConfig = {
    ...config,
    objectives: {
      mlm: { enabled: config.objectives.mlm.enabled, weight: 1 },
      mim: { enabled: config.objectives.mim.enabled, weight: 1 },
      itm: { enabled: config.objectives.itm.enabled, weight: 1 },
    },
  };
  await chooseBackend({ backend: opts.backend });
  const { params, report } = await readOfficialWeights(opts.weights, config);
  if (report.unknown.length > 0) warn(`m3ae model forward: ignoring ${report.unknown.length} unknown key(s) in ${opts.weights}: ${report.unknown.join(', ')}`);
  for (const a of report.adapted) warn(`m3ae model forward: ${a.name}: ${a.how}`);
  const { batch, unused } = await readBatchFile(opts.batch, config);
  if (unused.length > 0) warn(`m3ae model forward: ignoring tensor(s) ${unused.join(', ')} in ${opts.batch}`);

  const model = createModel(evalConfig, { zeroInit: true });
  try {
    setModelParams(model, params);
    const counts = batchCounts(config, batch);
    const normalizers: LossNormalizers = { mlm: counts.mlm || 1, mim: counts.mim || 1, itm: counts.itm || 1 };
    const withGrads = opts.grads ? await computeGradients(model, batch, { normalizers, training: false }) : undefined;
    const r = withGrads ?? await computeLosses(model, batch, { training: false });
    const mean = (o: 'mlm' | 'mim' | 'itm'): number | null => (config.objectives[o].enabled && r.counts[o] > 0 ? r.sums[o] / r.counts[o] : null);
    const accuracy = (o: 'mlm' | 'itm'): number | null => (config.objectives[o].enabled && r.counts[o] > 0 ? r.correct[o] / r.counts[o] : null);
    const result: ModelForwardResult = {
      mlm_loss: mean('mlm'),
      mim_loss: mean('mim'),
      itm_loss: mean('itm'),
      mlm_accuracy: accuracy('mlm'),
      itm_accuracy: accuracy('itm'),
    };
    if (opts.grads && withGrads) {
      const named = unflatten(model.manifest, withGrads.grads);
      await writeOfficialWeights(opts.grads, named, config, {
        allowMissing: true, // the fixed sin-cos table has no gradient
        metadata: { what: 'gradient of mlm_loss + mim_loss + itm_loss', ...Object.fromEntries(Object.entries(result).map(([k, v]) => [k, String(v)])) },
      });
    }
    return result;
  } finally {
    model.dispose();
  }
}

/** `m3ae model forward` (the `model` group is shared with `model info`: found or created, in either order). */
export function registerModelForward(program: Command): void {
  const group = program.commands.find((c) => c.name() === 'model') ?? program.command('model').description('the M3AE model');
  group
    .command('forward')
    .description('evaluate the MLM, MIM and ITM losses of one batch in eval mode; official weight names (a PyTorch reference check)')
    .requiredOption('--config <file>', 'model configuration JSON (full, or {"preset": …, overrides})')
    .requiredOption('--weights <file>', 'weights under the official PyTorch state-dict names (safetensors)')
    .requiredOption('--batch <file>', 'batch safetensors: pixel_values, input_ids, attention_mask, mlm_input_ids, mlm_labels, mim_noise, itm_pixel_values, itm_labels')
    .option('--grads <file>', 'also write the gradient of mlm_loss + mim_loss + itm_loss (official names, safetensors)')
    .option('--backend <name>', BACKEND_HELP)
    .action(async (opts: ModelForwardOptions) => {
      const result = await modelForward(opts);
      process.stdout.write(JSON.stringify(result) + '\n');
    });
}
