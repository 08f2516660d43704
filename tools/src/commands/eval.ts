import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { BACKEND_HELP, oneOf, positiveInt } from '../flags.js';
import { ImageStore, LabelVocabulary, limitRetrievalPairs, openShardDataset, RETRIEVAL_SOURCES, SkipLog, TASK_SPLITS, type AnswerType, type RetrievalSource, type SkipLogJson, type TaskSplit } from '@m3ae/data';
import type { RecallSet } from '@m3ae/model';
import { chooseBackend, DOWNSTREAM_TASKS, type AccuracyCell, type DownstreamTaskName } from '@m3ae/model';
import {
  checkpointTokenizer,
  checkTokenizerFits,
  evaluateSplit,
  loadTaskModel,
  prepareSplit,
  readRawSplit,
  splitSize,
  TaskError,
  zeroShotRetrieval,
  type RawSplit,
  type TaskMetrics,
  type TaskSource,
} from '@m3ae/tasks';

/** `m3ae eval`: evaluates a fine-tuned checkpoint on one split (read once) and prints the paper-style table. */

export interface EvalReport {
  task: DownstreamTaskName;
  split: TaskSplit;
  checkpoint: string;
  step: number;
  zeroShot: boolean;
  examples: number;
  metrics: TaskMetrics;
  skipped: SkipLogJson['counts'];
  seconds: number;
  /** Retrieval on a shard dataset (`--data SHARDS`): its directory; the split is then the whole dataset. */
  shards?: string;
  /** Retrieval on shards: the R@K a random ranking reaches in expectation. */
  chance?: { i2t: RecallSet; t2i: RecallSet };
  /** Labelled tasks: per example (not written into the JSON report). */
  perExample?: { id: string; type?: AnswerType; truth: string; predicted: string; correct: boolean }[];
}

const pct = (x: number): string => (100 * x).toFixed(2);

/** The paper-style table: VQA open / closed / overall; retrieval I2T and T2I R@1/5/10; classification accuracy. */
export function formatEvalTable(r: EvalReport): string {
  const where = r.shards ? `shard dataset ${r.shards}` : `split ${r.split}`;
  const lines = [`m3ae eval ${r.task} — ${where}, ${r.examples} examples, checkpoint ${r.checkpoint} (step ${r.step})${r.zeroShot ? ', zero-shot (ITM match score)' : ''}`, ''];
  const table = (head: string[], rows: string[][]): void => {
    const w = head.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)));
    const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(w[i] ?? 0) : c.padStart(w[i] ?? 0))).join('  ');
    lines.push(line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line));
  };
  const m = r.metrics;
  if (m.kind === 'vqa') {
    const row = (name: string, c: AccuracyCell): string[] => [name, String(c.total), String(c.correct), pct(c.accuracy)];
    table(['answer type', 'questions', 'correct', 'accuracy %'], [row('open', m.vqa.open), row('closed', m.vqa.closed), row('overall', m.vqa.overall)]);
    lines.push('', `answers not in the training vocabulary: ${m.vqa.unseenAnswers} (counted wrong); mean loss ${m.loss.toFixed(4)}`);
  } else if (m.kind === 'classification') {
    table(['metric', 'examples', 'correct', 'accuracy %'], [['accuracy', String(m.accuracy.total), String(m.accuracy.correct), pct(m.accuracy.accuracy)]]);
    lines.push('', `mean loss ${m.loss.toFixed(4)}`);
  } else {
    const rec = m.recall;
    table(
      ['direction', 'queries', 'R@1', 'R@5', 'R@10'],
      [
        ['image→text (I2T)', String(rec.images), pct(rec.i2t.r1), pct(rec.i2t.r5), pct(rec.i2t.r10)],
        ['text→image (T2I)', String(rec.texts), pct(rec.t2i.r1), pct(rec.t2i.r5), pct(rec.t2i.r10)],
        ...(r.chance
          ? [
              ['chance I2T (random ranking)', '', pct(r.chance.i2t.r1), pct(r.chance.i2t.r5), pct(r.chance.i2t.r10)],
              ['chance T2I (random ranking)', '', pct(r.chance.t2i.r1), pct(r.chance.t2i.r5), pct(r.chance.t2i.r10)],
            ]
          : []),
      ],
    );
  }
  const skips = Object.entries(r.skipped);
  if (skips.length > 0) lines.push(`skipped: ${skips.map(([k, v]) => `${k} ${String(v)}`).join(', ')}`);
  lines.push(`${r.seconds.toFixed(1)} s`);
  return lines.join('\n');
}

interface EvalCliOptions {
  checkpoint: string;
  data: string;
  split: TaskSplit;
  json?: string;
  /** Labelled tasks: one JSON line per example (id, answer type, truth, prediction, correct). */
  predictions?: string;
  tokenizer?: string;
  source?: RetrievalSource;
  limit?: number;
  batchSize: number;
  backend?: string;
}

export interface RunEvalOptions extends Omit<EvalCliOptions, 'json' | 'predictions'> {
  task: DownstreamTaskName;
  onProgress?: (done: number, total: number) => void;
}

/** A shard dataset written by `m3ae prepare` (rather than a task's raw data). */
export function isShardDataset(dir: string): boolean {
  return existsSync(join(dir, 'dataset.json'));
}

/** Default pairs of retrieval on shards (`--limit`): all pairs of MedPix dev (196) fit. */
export const SHARD_RETRIEVAL_PAIRS = 256;

/**
 * Retrieval on held-out pairs of a shard dataset (e.g. MedPix dev prepared with `m3ae prepare --split dev`): `--limit`
 * pairs spread evenly over it (default {@link SHARD_RETRIEVAL_PAIRS}), every (image, caption) scored by the model
 * (a pre-training checkpoint: its ITM head, zero-shot), R@1/5/10 both ways with their chance level.
 */
async function runShardRetrieval(o: RunEvalOptions, t0: number): Promise<EvalReport> {
  const loaded = await loadTaskModel(o.checkpoint, 'retrieval');
  const { model, meta } = loaded;
  try {
    const tokenizer = await checkpointTokenizer(loaded.info, o.tokenizer);
    checkTokenizerFits(tokenizer, model.config, loaded.path);
    const dataset = await openShardDataset(o.data);
    try {
      if (dataset.imageSize !== model.config.imageSize) {
        throw new TaskError(`--data ${o.data}: prepared at ${dataset.imageSize} px; expected the model's ${model.config.imageSize} px (m3ae prepare --image-size ${model.config.imageSize})`);
      }
      const r = await zeroShotRetrieval(model, { dataset, tokenizer, pairs: o.limit ?? SHARD_RETRIEVAL_PAIRS, textLength: meta.textLength });
      return {
        task: 'retrieval',
        split: o.split,
        checkpoint: loaded.path,
        step: loaded.info.step,
        zeroShot: loaded.zeroShot,
        examples: r.pairs,
        metrics: { kind: 'retrieval', recall: r.metrics },
        skipped: {},
        seconds: (performance.now() - t0) / 1000,
        shards: o.data,
        chance: r.chance,
      };
    } finally {
      await dataset.close();
    }
  } finally {
    model.dispose();
  }
}

/** `m3ae eval` as a function: loads the checkpoint, reads the split once, evaluates, returns the report. */
export async function runEval(o: RunEvalOptions): Promise<EvalReport> {
  const t0 = performance.now();
  await chooseBackend({ backend: o.backend ?? 'auto' });
  if (o.task === 'retrieval' && isShardDataset(o.data)) return await runShardRetrieval(o, t0);
  const loaded = await loadTaskModel(o.checkpoint, o.task);
  const { model, meta } = loaded;
  try {
    const tokenizer = await checkpointTokenizer(loaded.info, o.tokenizer);
    checkTokenizerFits(tokenizer, model.config, loaded.path);
    const log = new SkipLog();
    const src: TaskSource = {
      data: o.data,
      source: o.source ?? meta.source,
      labelColumn: meta.labelColumn,
      categories: meta.categories,
      carve: meta.carve,
    };
    let raw = await readRawSplit(o.task, src, o.split, log);
    if (raw.kind === 'retrieval' && o.limit !== undefined) raw = { kind: 'retrieval', pairs: limitRetrievalPairs(raw.pairs, o.limit, 0) };
    else if (raw.kind !== 'retrieval' && o.limit !== undefined) raw = { ...raw, examples: raw.examples.slice(0, o.limit) } as RawSplit;
    const vocab = meta.labels ? LabelVocabulary.fromJSON(meta.labels, `${loaded.path} task.labels`) : undefined;
    const images = new ImageStore(model.config.imageSize);
    const split = await prepareSplit(raw, vocab, images, log);
    if (splitSize(split) === 0) throw new TaskError(`${o.task} split ${o.split} of ${o.data} has no usable example (skipped: ${JSON.stringify(log.counts())})`);
    const ev = await evaluateSplit(model, split, { tokenizer, images, textLength: meta.textLength, batchSize: o.batchSize, ...(o.onProgress ? { onProgress: o.onProgress } : {}) });
    let perExample: EvalReport['perExample'];
    if (split.kind === 'labeled' && ev.predictions && vocab && raw.kind !== 'retrieval') {
      const truth = raw.kind === 'vqa' ? new Map(raw.examples.map((e) => [e.id, e.answer])) : new Map(raw.examples.map((e) => [e.id, e.label]));
      const preds = ev.predictions;
      perExample = split.ids.map((id, i) => {
        const label = split.examples[i]?.label ?? -1;
        const p = preds[i] ?? -1;
        const type = split.answerTypes?.[i];
        return { id, ...(type ? { type } : {}), truth: truth.get(id) ?? '', predicted: vocab.labelAt(p), correct: label >= 0 && label === p };
      });
    }
    return {
      task: o.task,
      split: o.split,
      checkpoint: loaded.path,
      step: loaded.info.step,
      zeroShot: loaded.zeroShot,
      examples: splitSize(split),
      metrics: ev.metrics,
      skipped: log.counts(),
      seconds: (performance.now() - t0) / 1000,
      ...(perExample ? { perExample } : {}),
    };
  } finally {
    model.dispose();
  }
}

/** `m3ae eval <task> --checkpoint DIR --data PATH --split test [--json FILE]`. */
export function registerEval(program: Command): void {
  program
    .command('eval')
    .description('evaluate a fine-tuned checkpoint (or, for retrieval, a pre-training one zero-shot) on one split; prints a paper-style table')
    .argument('<task>', `downstream task: ${DOWNSTREAM_TASKS.join(', ')}`, oneOf('<task>', DOWNSTREAM_TASKS))
    .requiredOption('--checkpoint <path>', 'a fine-tuning output directory (its best/ checkpoint is used), a checkpoint directory or file')
    .requiredOption('--data <path>', 'the dataset root (VQA-RAD/SLAKE/VQA-Med 2019 folder, MELINDA folder, ROCO/MedPix root or a manifest); retrieval also takes a shard dataset (m3ae prepare output) of held-out pairs')
    .option('--split <name>', `split to evaluate: ${TASK_SPLITS.join(', ')} (holdout: carved from the training file at fine-tuning)`, oneOf('--split', TASK_SPLITS), 'test')
    .option('--json <file>', 'also write the report as JSON')
    .option('--predictions <file>', 'VQA / classification: one JSON line per example (id, type, truth, predicted, correct)')
    .option('--tokenizer <file>', 'tokenizer.json (default: the one the checkpoint records)')
    .option('--source <name>', `retrieval source format: ${RETRIEVAL_SOURCES.join(', ')} (default: from the checkpoint or the layout)`, oneOf('--source', RETRIEVAL_SOURCES))
    .option('--limit <n>', `evaluate on the first n examples (retrieval: n images, chosen by a seeded order; on shards: n pairs spread evenly, default ${SHARD_RETRIEVAL_PAIRS})`, positiveInt('--limit'))
    .option('--batch-size <n>', 'examples per forward pass', positiveInt('--batch-size'), 16)
    .option('--backend <name>', BACKEND_HELP)
    .action(async (task: DownstreamTaskName, opts: EvalCliOptions) => {
      const progress = process.stderr.isTTY ? (done: number, total: number): void => void process.stderr.write(`\reval ${done}/${total}`) : undefined;
      const { json, predictions, ...rest } = opts;
      const { perExample, ...report } = await runEval({ ...rest, task, ...(progress ? { onProgress: progress } : {}) });
      if (progress) process.stderr.write('\n');
      process.stdout.write(formatEvalTable(report) + '\n');
      if (json) writeFileSync(json, JSON.stringify(report, null, 2) + '\n');
      if (predictions) writeFileSync(predictions, (perExample ?? []).map((e) => JSON.stringify(e)).join('\n') + '\n');
    });
}
