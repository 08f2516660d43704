import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { forwardFlops, modelManifest, parameterCounts, presetConfig, resolveConfig, trainingTextLength, type M3AEConfig, type ModuleCount } from '@m3ae/model';
import { formatTable } from '../bench/report.js';

export interface ModelInfo {
  preset: string | null;
  config: M3AEConfig;
  manifestHash: string;
  tensors: number;
  modules: ModuleCount[];
  total: ModuleCount;
  /** Matrix-product GFLOP of one sample's forward passes (MLM + MIM + ITM) as the trainer runs them. */
  forwardGflopPerSample: number;
}

/** Parameter counts per module and in total, for a preset or a config file (no tensors are created). */
export async function modelInfo(opts: { preset?: string | undefined; config?: string | undefined }): Promise<ModelInfo> {
  if (opts.preset && opts.config) throw new Error('model info: give --preset or --config, not both');
  let config: M3AEConfig;
  if (opts.config) config = resolveConfig(JSON.parse(await readFile(opts.config, 'utf8')) as unknown, opts.config);
  else config = presetConfig(opts.preset ?? 'base');
  const manifest = modelManifest(config);
  const { modules, total } = parameterCounts(manifest);
  return {
    preset: opts.config ? null : (opts.preset ?? 'base'),
    config,
    manifestHash: manifest.hash,
    tensors: manifest.entries.length,
    modules,
    total,
    forwardGflopPerSample: forwardFlops(config, { batchSize: 1 }).total / 1e9,
  };
}

export function formatModelInfo(info: ModelInfo): string {
  const c = info.config;
  const rows = [...info.modules, info.total].map((m) => ({ module: m.module, trainable: m.trainable, fixed: m.fixed }));
  return [
    `M3AE ${info.preset ? `preset ${info.preset}` : 'from config'}: ${c.imageSize} px / patch ${c.patchSize}, width ${c.hiddenSize}, ` +
      `${c.visionLayers} vision + ${c.textLayers} text blocks, ${c.fusionLayers}+${c.fusionLayers} fusion layers, vocabulary ${c.vocabSize}`,
    '',
    formatTable(rows),
    '',
    `parameter tensors: ${info.tensors}; manifest ${info.manifestHash}`,
    `forward matrix products: ${info.forwardGflopPerSample.toFixed(2)} GFLOP per sample at text length ${trainingTextLength(c)} (MLM + MIM + ITM passes)`,
  ].join('\n');
}

export function registerModelInfo(program: Command): void {
  const group = program.commands.find((c) => c.name() === 'model') ?? program.command('model').description('the M3AE model');
  group
    .command('info')
    .description('parameter counts per module and in total (base = the official model)')
    .option('--preset <name>', 'tiny, small or base (default base)')
    .option('--config <file>', 'a model configuration JSON instead of a preset')
    .option('--json', 'print one JSON object', false)
    .action(async (opts: { preset?: string; config?: string; json: boolean }) => {
      const info = await modelInfo(opts);
      process.stdout.write((opts.json ? JSON.stringify(info) : formatModelInfo(info)) + '\n');
    });
}
