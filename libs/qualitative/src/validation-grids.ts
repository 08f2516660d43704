import { readFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '@m3ae/protocol';
import type { GridOptions, ValidationSample } from '@m3ae/data';
import { createModel, listStepFiles, loadCheckpoint, setParamsFromFlat, type M3AEConfig, type M3AEModel, type MimInput, type ReconstructionRow } from '@m3ae/model';
import { batchSamples, renderReconstructionGrid } from './reconstruction-grid.js';

const GRID_FILE_RE = /^recon-(\d+)\.png$/;

export function reconstructionGridFileName(step: number): string {
  return `recon-${step}.png`;
}

/** The reconstruction grids of a directory, oldest step first. */
export async function listReconstructionGrids(dir: string): Promise<{ step: number; path: string }[]> {
  return await listStepFiles(dir, GRID_FILE_RE);
}

export interface ValidationGridOptions {
  config: M3AEConfig;
  /** The fixed validation examples (`validationSamples` of @m3ae/data). */
  samples: readonly ValidationSample[];
  /** Where `recon-<step>.png` files go (the checkpoint directory). */
  dir: string;
  /** Grids kept (newest by step). @defaultValue 3 */
  keep?: number;
  /** Seed of the masking noise (fixed for the run). @defaultValue 0 */
  seed?: number;
  grid?: GridOptions;
}

/**
 * Renders the reconstruction grid of fixed validation images for the coordinator: `render(step, params)`
 * after a checkpoint (or `renderCheckpoint(path)`), written atomically as `dir/recon-<step>.png`, the newest
 * `keep` kept; `latest()` gives the newest PNG for the run page. Holds one model (created on the current
 * tfjs backend: choose it before the first render); the forward pass runs on the caller's thread.
 */
export class ValidationGridRenderer {
  private model: M3AEModel | undefined;
  private readonly input: MimInput;
  private readonly keep: number;
  private newest: { step: number; png: Buffer } | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: ValidationGridOptions) {
    this.keep = options.keep ?? 3;
    if (!(Number.isInteger(this.keep) && this.keep >= 1)) throw new RangeError(`keep: got ${options.keep}; expected an integer ≥ 1`);
    this.input = batchSamples(options.config, options.samples, options.seed ?? 0);
  }

  /** Picks up the newest grid already in `dir` (after a coordinator restart). */
  async loadLatest(): Promise<{ step: number; path: string } | undefined> {
    const all = await listReconstructionGrids(this.options.dir);
    const last = all[all.length - 1];
    if (last && (!this.newest || last.step > this.newest.step)) this.newest = { step: last.step, png: await readFile(last.path) };
    return last;
  }

  /** Renders the grid of the flat trainable parameters (manifest order) after `step` steps. Calls run one at a time. */
  async render(step: number, params: Float32Array): Promise<{ step: number; path: string; png: Buffer; rows: ReconstructionRow[] }> {
    const run = this.queue.then(() => this.renderNow(step, params));
    this.queue = run.catch(() => undefined);
    return await run;
  }

  /** Renders the grid of a checkpoint file's parameters (its step). */
  async renderCheckpoint(path: string): Promise<{ step: number; path: string; png: Buffer; rows: ReconstructionRow[] }> {
    const model = this.ensureModel();
    const loaded = await loadCheckpoint(path, model.manifest);
    return await this.render(loaded.step, loaded.params);
  }

  /** The newest grid's PNG bytes (the run page's `latestGrid`). */
  latest(): Buffer | undefined {
    return this.newest?.png;
  }

  get latestStep(): number | undefined {
    return this.newest?.step;
  }

  dispose(): void {
    this.model?.dispose();
    this.model = undefined;
  }

  private ensureModel(): M3AEModel {
    this.model ??= createModel(this.options.config, { zeroInit: true });
    return this.model;
  }

  private async renderNow(step: number, params: Float32Array): Promise<{ step: number; path: string; png: Buffer; rows: ReconstructionRow[] }> {
    if (!(Number.isSafeInteger(step) && step >= 0)) throw new RangeError(`step: got ${step}; expected a non-negative integer`);
    const model = this.ensureModel();
    setParamsFromFlat(model, params);
    const { png, rows } = await renderReconstructionGrid(model, this.input, this.options.grid);
    const dir = this.options.dir;
    await mkdir(dir, { recursive: true });
    const path = join(dir, reconstructionGridFileName(step));
    await writeFileAtomic(path, png);
    if (!this.newest || step >= this.newest.step) this.newest = { step, png };
    const all = await listReconstructionGrids(dir);
    for (const old of all.slice(0, Math.max(0, all.length - this.keep))) await rm(old.path, { force: true });
    return { step, path, png, rows };
  }
}
