import { CheckpointError, loadCheckpoint, readCheckpointInfo, type CheckpointInfo } from './checkpoint/checkpoint.js';
import { resolveCheckpointPath } from './checkpoint/directory.js';
import { parseConfig, resolveConfig } from './config.js';
import { createModel, setParamsFromFlat, type M3AEModel } from './model.js';

export interface CheckpointModel {
  model: M3AEModel;
  /** The checkpoint file read. */
  path: string;
  info: CheckpointInfo;
}

/**
 * A model with a checkpoint's parameters: its stored configuration (optionally with another mask ratio: the
 * parameters do not depend on it), built on the current backend. The caller disposes of `model`.
 */
export async function modelFromCheckpoint(dirOrFile: string, overrides: { mimMaskRatio?: number } = {}): Promise<CheckpointModel> {
  const path = await resolveCheckpointPath(dirOrFile);
  const info = await readCheckpointInfo(path);
  if (info.config === null || info.config === undefined) throw new CheckpointError(`${path}: no model configuration stored (metadata config); expected a checkpoint written by the trainer`);
  let config = resolveConfig(info.config, `${path} config`);
  if (overrides.mimMaskRatio !== undefined) config = parseConfig({ ...config, mimMaskRatio: overrides.mimMaskRatio }, 'mask ratio override');
  const model = createModel(config, { zeroInit: true });
  try {
    const loaded = await loadCheckpoint(path, model.manifest);
    setParamsFromFlat(model, loaded.params);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, path, info };
}
