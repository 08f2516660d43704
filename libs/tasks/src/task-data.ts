import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  buildImageBatch,
  buildLabeledBatch,
  buildRetrievalSet,
  buildTextBatch,
  ImageStore,
  LabelVocabulary,
  loadTokenizer,
  readClassificationSplit,
  readRetrievalSplit,
  readVqaTaskSplit,
  SkipLog,
  type AnswerType,
  type CarveSpec,
  type ClassificationExample,
  type LabeledExample,
  type RetrievalPair,
  type RetrievalSet,
  type RetrievalSource,
  type TaskSplit,
  type TextTokenizer,
  type VqaExample,
} from '@m3ae/data';
import {
  argmaxRow,
  computeTaskOutputs,
  createDownstreamModel,
  DOWNSTREAM_TASKS,
  FINETUNE_DEFAULTS,
  finetuneTextLength,
  latestCheckpoint,
  loadCheckpoint,
  modelManifest,
  readCheckpointInfo,
  recallAtK,
  resolveCheckpointPath,
  resolveConfig,
  retrievalScores,
  setDownstreamFromFlat,
  vqaMetrics,
  accuracy,
  type AccuracyCell,
  type CheckpointInfo,
  type DownstreamModel,
  type DownstreamTaskName,
  type HeadSpec,
  type RetrievalMetrics,
  type VqaMetrics,
} from '@m3ae/model';
import { ZERO_SHOT_HEAD, zeroShotRetrievalModel } from './pretrain-evaluation.js';

/**
 * A downstream task's data and evaluation: what a fine-tuned checkpoint records about its task, reading a task's
 * split as examples, evaluating a model on it. Shared by `m3ae finetune` / `m3ae eval`, the coordinator (model
 * selection on the validation split) and the workers (the training split's batches).
 */

export class TaskError extends Error {
  override readonly name = 'TaskError';
}

/** What a fine-tuned checkpoint records under metadata `task` so that evaluation rebuilds exactly its task. */
export interface TaskMeta {
  name: DownstreamTaskName;
  head: HeadSpec;
  /** Answer (VQA) or class (MELINDA) vocabulary, from the training split. */
  labels?: string[];
  textLength: number;
  imageSize: number;
  /** Retrieval source format. */
  source?: RetrievalSource;
  /** MELINDA label column. */
  labelColumn?: string;
  /** VQA-Med 2019 categories. */
  categories?: string[];
  /** How validation / held-out splits were carved (VQA-RAD, MedPix, manifests). */
  carve?: CarveSpec;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses and checks metadata `task` of a checkpoint; errors name the field. */
export function parseTaskMeta(raw: string, where: string): TaskMeta {
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    throw new TaskError(`${where}: metadata task is not JSON`);
  }
  const bad = (field: string, value: unknown, expected: string): never => {
    throw new TaskError(`${where}: metadata task.${field} is ${JSON.stringify(value)}; expected ${expected}`);
  };
  if (!isObject(v)) return bad('', v, 'an object');
  const name = v['name'];
  if (typeof name !== 'string' || !(DOWNSTREAM_TASKS as readonly string[]).includes(name)) bad('name', name, `one of ${DOWNSTREAM_TASKS.join(', ')}`);
  const head = v['head'];
  if (!isObject(head) || !['vqa', 'classification', 'retrieval'].includes(String(head['kind'])) || !Number.isInteger(head['outputs'])) {
    bad('head', head, '{kind: vqa|classification|retrieval, outputs: integer}');
  }
  for (const f of ['textLength', 'imageSize'] as const) if (!(Number.isInteger(v[f]) && (v[f] as number) > 0)) bad(f, v[f], 'a positive integer');
  const labels = v['labels'];
  if (labels !== undefined && !(Array.isArray(labels) && labels.every((l) => typeof l === 'string'))) bad('labels', labels, 'an array of strings');
  return v as unknown as TaskMeta;
}

/** The examples of one split, before labels are attached. */
export type RawSplit =
  | { kind: 'vqa'; examples: VqaExample[] }
  | { kind: 'classification'; examples: ClassificationExample[] }
  | { kind: 'retrieval'; pairs: RetrievalPair[] };

/** Where a task's data is and how it is read. */
export interface TaskSource {
  data: string;
  source?: RetrievalSource | undefined;
  labelColumn?: string | undefined;
  categories?: string[] | undefined;
  carve?: CarveSpec | undefined;
}

/** Reads one split of a task (no image decoding yet). */
export async function readRawSplit(task: DownstreamTaskName, src: TaskSource, split: TaskSplit, log: SkipLog): Promise<RawSplit> {
  switch (task) {
    case 'vqa-rad':
    case 'slake':
    case 'vqa-med-2019':
      return {
        kind: 'vqa',
        examples: await readVqaTaskSplit(task, src.data, split, { skipLog: log, ...(src.carve ? { carve: src.carve } : {}), ...(src.categories ? { categories: src.categories } : {}) }),
      };
    case 'melinda':
      return { kind: 'classification', examples: await readClassificationSplit(src.data, split, { skipLog: log, ...(src.labelColumn ? { labelColumn: src.labelColumn } : {}) }) };
    case 'retrieval': {
      const source = src.source ?? guessRetrievalSource(src.data);
      return { kind: 'retrieval', pairs: await readRetrievalSplit(source, src.data, split, { skipLog: log, ...(src.carve ? { carve: src.carve } : {}) }) };
    }
  }
}

/** A retrieval source from its layout: a file is a manifest; a folder with `descriptions_train.jsonl` is MedPix; else ROCO. */
export function guessRetrievalSource(path: string): RetrievalSource {
  if (existsSync(path) && statSync(path).isFile()) return 'manifest';
  if (existsSync(join(path, 'descriptions_train.jsonl')) || existsSync(join(path, 'descriptions_dev.jsonl'))) return 'medpix';
  return 'roco';
}

/** The label vocabulary a training split defines: answers in order of appearance (VQA), sorted classes (MELINDA). */
export function vocabularyOf(train: RawSplit): LabelVocabulary | undefined {
  if (train.kind === 'vqa') return LabelVocabulary.inOrderOfAppearance(train.examples.map((e) => e.answer));
  if (train.kind === 'classification') return LabelVocabulary.sorted(train.examples.map((e) => e.label));
  return undefined;
}

/** A split ready for batches: labelled examples (label −1 when not in the vocabulary) or a retrieval set. */
export type SplitData =
  | { kind: 'labeled'; task: 'vqa' | 'classification'; ids: string[]; examples: LabeledExample[]; answerTypes?: AnswerType[] }
  | { kind: 'retrieval'; set: RetrievalSet };

export function splitSize(s: SplitData): number {
  return s.kind === 'labeled' ? s.examples.length : s.set.pairs.length;
}

/** Drops examples whose image does not decode (logged as `unreadable-image`) and attaches labels. */
export async function prepareSplit(raw: RawSplit, vocab: LabelVocabulary | undefined, images: ImageStore, log: SkipLog): Promise<SplitData> {
  if (raw.kind === 'retrieval') {
    const pairs = await images.keepReadable(raw.pairs, log);
    return { kind: 'retrieval', set: buildRetrievalSet(pairs) };
  }
  if (!vocab) throw new TaskError('a label vocabulary is needed for a labelled task');
  if (raw.kind === 'vqa') {
    const ex = await images.keepReadable(raw.examples, log);
    return {
      kind: 'labeled',
      task: 'vqa',
      ids: ex.map((e) => e.id),
      examples: ex.map((e) => ({ imagePath: e.imagePath, text: e.question, label: vocab.labelOf(e.answer) })),
      answerTypes: ex.map((e) => e.answerType),
    };
  }
  const ex = await images.keepReadable(raw.examples, log);
  return { kind: 'labeled', task: 'classification', ids: ex.map((e) => e.id), examples: ex.map((e) => ({ imagePath: e.imagePath, text: e.text, label: vocab.labelOf(e.label) })) };
}

export type TaskMetrics =
  | { kind: 'vqa'; vqa: VqaMetrics; loss: number }
  | { kind: 'classification'; accuracy: AccuracyCell; loss: number }
  | { kind: 'retrieval'; recall: RetrievalMetrics };

/** The number model selection maximises: overall accuracy (VQA), accuracy (classification), R@1+5+10 both ways / 6. */
export function selectionScore(m: TaskMetrics): number {
  if (m.kind === 'vqa') return m.vqa.overall.accuracy;
  if (m.kind === 'classification') return m.accuracy.accuracy;
  const r = m.recall;
  return (r.i2t.r1 + r.i2t.r5 + r.i2t.r10 + r.t2i.r1 + r.t2i.r5 + r.t2i.r10) / 6;
}

export interface EvaluateOptions {
  tokenizer: TextTokenizer;
  images: ImageStore;
  textLength: number;
  /** Examples per forward pass. @defaultValue 16 */
  batchSize?: number;
  /** Retrieval: images scored per round (each round re-encodes the texts). @defaultValue 64 */
  imageChunk?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface Evaluation {
  metrics: TaskMetrics;
  /** Labelled tasks: the predicted label index per example. */
  predictions?: Int32Array;
}

/** Evaluates a model on one split (no dropout, centre crops). */
export async function evaluateSplit(model: DownstreamModel, split: SplitData, o: EvaluateOptions): Promise<Evaluation> {
  const bs = o.batchSize ?? 16;
  if (split.kind === 'labeled') {
    const n = split.examples.length;
    const predictions = new Int32Array(n);
    let lossSum = 0;
    for (let s = 0; s < n; s += bs) {
      const indices = Array.from({ length: Math.min(bs, n - s) }, (_, i) => s + i);
      const batch = await buildLabeledBatch({ examples: split.examples, indices, images: o.images, tokenizer: o.tokenizer, textLength: o.textLength, seed: 0, step: 0 });
      const out = await computeTaskOutputs(model, batch);
      lossSum += out.sum;
      indices.forEach((idx, b) => (predictions[idx] = argmaxRow(out.logits, b, out.classes)));
      o.onProgress?.(s + indices.length, n);
    }
    const labels = split.examples.map((e) => e.label);
    const loss = n === 0 ? 0 : lossSum / n;
    if (split.task === 'vqa') return { metrics: { kind: 'vqa', vqa: vqaMetrics(predictions, labels, split.answerTypes ?? []), loss }, predictions };
    return { metrics: { kind: 'classification', accuracy: accuracy(predictions, labels), loss }, predictions };
  }
  const set = split.set;
  const nI = set.images.length;
  const nT = set.texts.length;
  const texts = buildTextBatch(set.texts, o.tokenizer, o.textLength);
  const scores = new Float32Array(nI * nT);
  const chunk = o.imageChunk ?? 64;
  for (let i0 = 0; i0 < nI; i0 += chunk) {
    const paths = set.images.slice(i0, i0 + chunk);
    const pixelValues = await buildImageBatch(paths, o.images);
    const part = await retrievalScores(model, { pixelValues, nImages: paths.length, ...texts, nTexts: nT, textLength: o.textLength }, { textChunk: bs });
    scores.set(part, i0 * nT);
    o.onProgress?.(i0 + paths.length, nI);
  }
  return { metrics: { kind: 'retrieval', recall: recallAtK(scores, nI, nT, set.textImages) } };
}

export interface LoadedTaskModel {
  model: DownstreamModel;
  meta: TaskMeta;
  path: string;
  info: CheckpointInfo;
  /** True when a pre-training checkpoint was loaded as a retrieval model (the ITM head's match score). */
  zeroShot: boolean;
}

/** The checkpoint to evaluate: `DIR/best/` (what `m3ae finetune` selected on validation) if present, else DIR's latest, or the file. */
export async function evaluationCheckpoint(dirOrFile: string): Promise<string> {
  const best = join(dirOrFile, 'best');
  if (existsSync(best) && statSync(best).isDirectory() && (await latestCheckpoint(best))) return resolveCheckpointPath(best);
  return resolveCheckpointPath(dirOrFile);
}

/**
 * A task model from a checkpoint: a fine-tuned one (metadata `task`) as it was saved, or — for retrieval only — a
 * pre-training checkpoint as a zero-shot model scoring pairs with its ITM head at its pre-training image size.
 */
export async function loadTaskModel(dirOrFile: string, task: DownstreamTaskName): Promise<LoadedTaskModel> {
  const path = await evaluationCheckpoint(dirOrFile);
  const info = await readCheckpointInfo(path);
  const config = resolveConfig(info.config, `${path} config`);
  const rawTask = info.metadata['task'];
  if (rawTask !== undefined) {
    const meta = parseTaskMeta(rawTask, path);
    if (meta.name !== task) throw new TaskError(`${path} was fine-tuned for ${meta.name}; expected a ${task} checkpoint`);
    const model = createDownstreamModel(config, meta.head);
    try {
      const loaded = await loadCheckpoint(path, model.manifest);
      setDownstreamFromFlat(model, loaded.params);
    } catch (e) {
      model.dispose();
      throw e;
    }
    return { model, meta, path, info, zeroShot: false };
  }
  if (task !== 'retrieval') {
    throw new TaskError(`${path} is a pre-training checkpoint (no metadata task); fine-tune it first with m3ae finetune ${task} (only retrieval is evaluated zero-shot)`);
  }
  const head = ZERO_SHOT_HEAD;
  const model = zeroShotRetrievalModel(config, (await loadCheckpoint(path, modelManifest(config))).params);
  const meta: TaskMeta = { name: 'retrieval', head, textLength: finetuneTextLength(config, FINETUNE_DEFAULTS.retrieval), imageSize: config.imageSize };
  return { model, meta, path, info, zeroShot: true };
}

/**
 * The tokenizer of a checkpoint: `--tokenizer`, else the one a fine-tuning run recorded (metadata `tokenizer`), else
 * the pre-training run's (`run_config.data.tokenizer`, or `tokenizer.json` beside its shards). A recorded hash must
 * match the file's.
 */
export async function checkpointTokenizer(info: CheckpointInfo, explicit?: string): Promise<TextTokenizer> {
  let recorded: { path?: string; hash?: string } = {};
  const rawTok = info.metadata['tokenizer'];
  if (rawTok) {
    try {
      recorded = JSON.parse(rawTok) as { path?: string; hash?: string };
    } catch {
      recorded = {};
    }
  }
  let path = explicit ?? recorded.path;
  if (!path && info.metadata['run_config']) {
    try {
      const run = JSON.parse(info.metadata['run_config']) as { data?: { tokenizer?: string; dir?: string } };
      path = run.data?.tokenizer ?? (run.data?.dir ? join(run.data.dir, 'tokenizer.json') : undefined);
    } catch {
      path = undefined;
    }
  }
  if (!path) throw new TaskError(`${info.path} records no tokenizer; pass --tokenizer FILE (the tokenizer.json the model was trained with)`);
  const tok = await loadTokenizer(path);
  if (recorded.hash && recorded.hash !== tok.hash) {
    throw new TaskError(`${path} has SHA-256 ${tok.hash.slice(0, 16)}…, but ${info.path} was trained with tokenizer ${recorded.hash.slice(0, 16)}…`);
  }
  return tok;
}

/** Checks that a tokenizer fits a model configuration (ids in range, same padding id). */
export function checkTokenizerFits(tok: TextTokenizer, config: { vocabSize: number; padTokenId: number }, where: string): void {
  if (tok.vocabSize > config.vocabSize) throw new TaskError(`${where}: the tokenizer has ${tok.vocabSize} tokens; the model's vocabSize is ${config.vocabSize}`);
  if (tok.special.pad !== config.padTokenId) throw new TaskError(`${where}: the tokenizer's pad id is ${tok.special.pad}; the model's padTokenId is ${config.padTokenId}`);
}

