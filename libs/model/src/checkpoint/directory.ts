import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isAtomicTemp, writeFailureAdvice } from '@m3ae/protocol';
import { CheckpointError, loadCheckpoint, readCheckpointInfo, writeCheckpoint, type CheckpointInfo, type CheckpointManifest, type CheckpointState, type LoadedCheckpoint, type LoadOptions } from './checkpoint.js';

const FILE_RE = /^ckpt-(\d+)\.safetensors$/;
/** Temporary files of an interrupted write (see `writeSafetensors`). */

export function checkpointFileName(step: number): string {
  return `ckpt-${step}.safetensors`;
}

export interface CheckpointEntry {
  readonly step: number;
  readonly path: string;
}

/** The files of `dir` whose name matches `pattern` (group 1: the step), oldest step first. A missing directory has none. */
export async function listStepFiles(dir: string, pattern: RegExp): Promise<CheckpointEntry[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if (e instanceof Error && 'code' in e && e.code === 'ENOENT') return [];
    throw e;
  }
  return names
    .map((n) => ({ n, m: pattern.exec(n) }))
    .filter((x): x is { n: string; m: RegExpExecArray } => x.m !== null)
    .map(({ n, m }) => ({ step: Number(m[1]), path: join(dir, n) }))
    .sort((a, b) => a.step - b.step);
}

/** The checkpoints of a directory, oldest step first. A missing directory has none. */
export async function listCheckpoints(dir: string): Promise<CheckpointEntry[]> {
  return await listStepFiles(dir, FILE_RE);
}

/** The newest checkpoint (highest step) of a directory, or undefined. Files are written atomically, so it is whole. */
export async function latestCheckpoint(dir: string): Promise<CheckpointEntry | undefined> {
  const all = await listCheckpoints(dir);
  return all[all.length - 1];
}

export interface SaveOptions {
  /** Keep only the newest M checkpoints (by step) after writing; 0 or undefined keeps all. */
  readonly keepLast?: number;
}

/** A checkpoint that could not be written, with the file, the cause and what to do about it (a disk error). */
function writeFailure(e: unknown, path: string, state: CheckpointState): Error {
  if (e instanceof CheckpointError) return e;
  const message = e instanceof Error ? e.message : String(e);
  // Parameters, and with the optimizer its two moments: what the file needs, give or take the header.
  const mb = Math.ceil((state.params.length * 4 * (state.optimizer ? 3 : 1)) / 1e6);
  return new CheckpointError(
    `could not write the checkpoint of step ${state.step} to ${path}: ${message}; ${writeFailureAdvice(e)} or point checkpoint.dir (--checkpoint-dir) at a volume that can take it (about ${mb} MB a checkpoint)`,
    { cause: e },
  );
}

/**
 * Writes `dir/ckpt-<step>.safetensors` atomically, then removes older checkpoints beyond `keepLast` and leftovers
 * of interrupted writes. The new file is on disk before anything is deleted.
 */
export async function saveCheckpoint(dir: string, state: CheckpointState, options: SaveOptions = {}): Promise<{ path: string; bytes: number; paramsSha256: string; removed: string[] }> {
  const keep = options.keepLast ?? 0;
  if (!Number.isInteger(keep) || keep < 0) throw new CheckpointError(`keepLast: got ${keep}; expected a non-negative integer (0 keeps all)`);
  const path = join(dir, checkpointFileName(state.step));
  let written: Awaited<ReturnType<typeof writeCheckpoint>>;
  try {
    await mkdir(dir, { recursive: true });
    written = await writeCheckpoint(path, state);
  } catch (e) {
    throw writeFailure(e, path, state);
  }
  const removed: string[] = [];
  for (const n of await readdir(dir)) {
    // Leftovers of interrupted checkpoint writes (writeFileAtomic's temporary files of ckpt-<step>.safetensors).
    if (n.startsWith('.ckpt-') && isAtomicTemp(n)) {
      await rm(join(dir, n), { force: true });
      removed.push(join(dir, n));
    }
  }
  if (keep > 0) {
    const all = await listCheckpoints(dir);
    for (const old of all.slice(0, Math.max(0, all.length - keep))) {
      await rm(old.path, { force: true });
      removed.push(old.path);
    }
  }
  return { ...written, removed };
}

/** A checkpoint file, or the latest checkpoint of a directory. */
export async function resolveCheckpointPath(dirOrFile: string): Promise<string> {
  const s = await stat(dirOrFile).catch(() => undefined);
  if (!s) throw new CheckpointError(`${dirOrFile}: no such file or directory`);
  if (!s.isDirectory()) return dirOrFile;
  const latest = await latestCheckpoint(dirOrFile);
  if (!latest) throw new CheckpointError(`${dirOrFile}: no ckpt-<step>.safetensors in this directory`);
  return latest.path;
}

/** Loads the latest checkpoint of a directory (or the given file). */
export async function loadLatestCheckpoint(dirOrFile: string, manifest: CheckpointManifest, options?: LoadOptions): Promise<LoadedCheckpoint> {
  return loadCheckpoint(await resolveCheckpointPath(dirOrFile), manifest, options);
}

export async function latestCheckpointInfo(dirOrFile: string): Promise<CheckpointInfo> {
  return readCheckpointInfo(await resolveCheckpointPath(dirOrFile));
}
