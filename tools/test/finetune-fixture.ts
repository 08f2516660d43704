import { join } from 'node:path';
import { trainTokenizer } from '@m3ae/data';
import { createModel, flattenParams, modelManifest, presetConfig, saveCheckpoint } from '@m3ae/model';
import type { FinetuneOptions } from '../src/commands/finetune.js';

/**
 * A "pre-training" checkpoint for fine-tuning tests: a seeded `tiny` model with a BPE vocabulary trained on the
 * MedPix captions (600 ids, fits tiny's 1,000, pad 1), recorded the way a training run records it
 * (`run_config.data.tokenizer`).
 */
export async function tinyPretrainCheckpoint(dir: string, data: string, seed: number): Promise<{ checkpoint: string; tokenizer: string }> {
  const tiny = presetConfig('tiny');
  const tokenizer = join(dir, 'tokenizer.json');
  await trainTokenizer({ sources: [{ kind: 'medpix', path: join(data, 'medpix2') }], vocabSize: 600, output: tokenizer, agreementSamples: 5 });
  const model = createModel(tiny, { seed });
  try {
    const fixed = new Map([['mim_head.decoder_pos_embed', model.param('mim_head.decoder_pos_embed').dataSync() as Float32Array]]);
    const checkpoint = join(dir, 'pretrain');
    await saveCheckpoint(checkpoint, { step: 3, manifest: modelManifest(tiny), params: await flattenParams(model), fixedParams: fixed, config: tiny, metadata: { run_config: JSON.stringify({ data: { tokenizer } }) } });
    return { checkpoint, tokenizer };
  } finally {
    model.dispose();
  }
}

/** VQA-RAD at test sizes: 24 training questions in steps of 6 (micro-batches of 3), 12 validation, a held-out split. */
export function tinyVqaRadOptions(data: string, checkpoint: string, output: string): FinetuneOptions {
  return {
    task: 'vqa-rad',
    data: join(data, 'vqa_rad'),
    output,
    checkpoint,
    carve: { seed: 0, valFraction: 0.1, testFraction: 0.1 },
    trainLimit: 24,
    valLimit: 12,
    epochs: 1,
    globalBatch: 6,
    microBatch: 3,
    learningRate: 1e-4,
    evalEvery: 2,
  };
}
