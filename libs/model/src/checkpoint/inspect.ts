import { SafetensorsFile } from '../safetensors/index.js';
import { RESERVED_METADATA_KEYS, paramsSha256 } from './checkpoint.js';
import { latestCheckpointInfo } from './directory.js';

export interface CheckpointSummary {
  readonly path: string;
  readonly step: number;
  readonly params_sha256: string;
  readonly manifest_hash: string;
  readonly param_count: number;
  readonly optimizer_step: number | null;
  readonly tensors: number;
  readonly file_bytes: number;
  /** The trainer's own metadata fields (everything but the checkpoint's reserved keys). */
  readonly metadata: Readonly<Record<string, string>>;
  readonly config: unknown;
  /** Only with `verify`: whether the recomputed SHA-256 of the stored parameters equals params_sha256. */
  readonly params_sha256_ok?: boolean;
}

const RESERVED = new Set<string>(RESERVED_METADATA_KEYS);

/**
 * Summary of a checkpoint file (or of a directory's latest). With `verify`, the trainable parameters (the
 * non-optimizer tensors in file order, which is the canonical order, minus the fixed ones) are re-hashed.
 */
export async function inspectCheckpoint(dirOrFile: string, options: { verify?: boolean } = {}): Promise<CheckpointSummary> {
  const info = await latestCheckpointInfo(dirOrFile);
  const summary: CheckpointSummary = {
    path: info.path,
    step: info.step,
    params_sha256: info.paramsSha256,
    manifest_hash: info.manifestHash,
    param_count: info.paramCount,
    optimizer_step: info.optimizerStep,
    tensors: info.tensorCount,
    file_bytes: info.fileBytes,
    metadata: Object.fromEntries(Object.entries(info.metadata).filter(([k]) => !RESERVED.has(k))),
    config: info.config,
  };
  if (!options.verify) return summary;
  const fixed = new Set(info.fixedParams);
  const file = await SafetensorsFile.open(info.path);
  try {
    const flat = new Float32Array(info.paramCount);
    let at = 0;
    for (const t of file.header.tensors) {
      if (t.name.startsWith('optimizer.') || fixed.has(t.name)) continue;
      const n = (t.end - t.begin) / 4;
      if (t.dtype !== 'F32' || at + n > flat.length) return { ...summary, params_sha256_ok: false };
      await file.readBytesInto(t.name, new Uint8Array(flat.buffer, at * 4, n * 4));
      at += n;
    }
    return { ...summary, params_sha256_ok: at === flat.length && paramsSha256(flat) === info.paramsSha256 };
  } finally {
    await file.close();
  }
}
