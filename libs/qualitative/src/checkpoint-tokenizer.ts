import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { CheckpointInfo } from '@m3ae/model';

/**
 * The tokenizer of a checkpoint: `--tokenizer`, else the run configuration the trainer stored in the
 * checkpoint (`data.tokenizer`, else `tokenizer.json` next to the shards of `data.dir`).
 */
export function checkpointTokenizerPath(info: CheckpointInfo, flag: string | undefined): string {
  if (flag) {
    if (!existsSync(flag)) throw new Error(`--tokenizer ${JSON.stringify(flag)}: no such file; expected a tokenizer.json`);
    return flag;
  }
  const raw = info.metadata['run_config'];
  let data: { tokenizer?: unknown; dir?: unknown } | undefined;
  if (raw !== undefined) {
    try {
      data = (JSON.parse(raw) as { data?: { tokenizer?: unknown; dir?: unknown } }).data;
    } catch {
      data = undefined;
    }
  }
  const candidates = [typeof data?.tokenizer === 'string' ? data.tokenizer : undefined, typeof data?.dir === 'string' ? join(data.dir, 'tokenizer.json') : undefined].filter((p): p is string => p !== undefined);
  const found = candidates.find((p) => existsSync(p));
  if (found) return found;
  throw new Error(
    `${info.path}: ${candidates.length ? `the tokenizer its run used (${candidates.join(', ')}) is not here` : 'the checkpoint names no tokenizer'}; pass --tokenizer FILE (the tokenizer.json the dataset was prepared with)`,
  );
}
