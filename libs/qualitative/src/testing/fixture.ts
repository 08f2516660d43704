import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadTokenizer, phantomAttributes, phantomCaption, trainTokenizer, writePhantomCorpus, type PhantomManifestLine, type TextTokenizer } from '@m3ae/data';
import { chooseBackend, createModel, flattenParams, presetConfig, saveCheckpoint, type M3AEConfig, type M3AEModel } from '@m3ae/model';

/**
 * Real inputs for the qualitative tools: a phantom corpus (procedural CT/MR/X-ray-like PNGs with captions),
 * a byte-level BPE vocabulary trained on its captions, and a `tiny` checkpoint written as the trainer writes
 * them (model configuration, and the run configuration naming the tokenizer in its metadata).
 */
export interface QualitativeFixture {
  dir: string;
  config: M3AEConfig;
  tokenizerPath: string;
  tokenizer: TextTokenizer;
  checkpointDir: string;
  samples: PhantomManifestLine[];
  /** Absolute image paths, in sample order. */
  images: string[];
}

export async function makeQualitativeFixture(dir: string, options: { count?: number; step?: number; seed?: number } = {}): Promise<QualitativeFixture> {
  const count = options.count ?? 8;
  const corpus = join(dir, 'corpus');
  await writePhantomCorpus({ output: corpus, count, seed: 5, size: 64 });
  const samples = (await readFile(join(corpus, 'manifest.jsonl'), 'utf8'))
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as PhantomManifestLine);
  // A vocabulary from many more captions than images (captions are cheap): whole words, not bytes.
  const captions = join(dir, 'captions.txt');
  const texts = Array.from({ length: 400 }, (_, i) => phantomCaption(phantomAttributes(5, i), 5, i));
  await writeFile(captions, texts.join('\n') + '\n');
  const tokenizerPath = join(dir, 'tokenizer.json');
  await trainTokenizer({ sources: [{ kind: 'text', path: captions }], vocabSize: 700, output: tokenizerPath, agreementSamples: 20 });
  const tokenizer = await loadTokenizer(tokenizerPath);
  // `tiny` reads 16 tokens; phantom captions need about twice that.
  const config = presetConfig('tiny', { maxTextLength: 32 });
  await chooseBackend();
  const model: M3AEModel = createModel(config, { seed: options.seed ?? 1 });
  const checkpointDir = join(dir, 'checkpoints');
  try {
    const fixed = new Map<string, Float32Array>();
    for (const e of model.manifest.entries) if (!e.trainable) fixed.set(e.name, (await model.param(e.name).data()) as Float32Array);
    await saveCheckpoint(checkpointDir, {
      step: options.step ?? 12,
      manifest: model.manifest,
      params: await flattenParams(model),
      fixedParams: fixed,
      config,
      metadata: { run_id: 'fixture', run_config: JSON.stringify({ runId: 'fixture', data: { tokenizer: tokenizerPath }, redis: { url: 'redis://:***@127.0.0.1:6379' } }) },
    });
  } finally {
    model.dispose();
  }
  return { dir, config, tokenizerPath, tokenizer, checkpointDir, samples, images: samples.map((s) => join(corpus, s.image)) };
}
