import { composeGrid, denormalizeRgb, encodeRgb, type GridOptions, type RgbImage, type ValidationSample } from '@m3ae/data';
import { numPatches, reconstructImages, visualisationNoise, type M3AEConfig, type M3AEModel, type MimInput, type ReconstructionRow } from '@m3ae/model';

/** The samples as one `MimInput` batch, with visualisation noise from `seed` (the same patches hidden for the same seed). */
export function batchSamples(config: M3AEConfig, samples: readonly ValidationSample[], seed = 0): MimInput {
  const B = samples.length;
  if (B === 0) throw new RangeError('expected at least one sample');
  const L = samples[0]?.inputIds.length ?? 0;
  const plane = 3 * config.imageSize ** 2;
  const input: MimInput = {
    batchSize: B,
    pixelValues: new Float32Array(B * plane),
    inputIds: new Int32Array(B * L),
    attentionMask: new Int32Array(B * L),
    mimNoise: visualisationNoise(B, numPatches(config), seed),
  };
  samples.forEach((s, b) => {
    if (s.pixelValues.length !== plane) throw new RangeError(`sample ${b}: pixelValues has ${s.pixelValues.length} values; expected ${plane}`);
    if (s.inputIds.length !== L || s.attentionMask.length !== L) throw new RangeError(`sample ${b}: text length ${s.inputIds.length}; expected ${L} like sample 0`);
    input.pixelValues.set(s.pixelValues, b * plane);
    input.inputIds.set(s.inputIds, b * L);
    input.attentionMask.set(s.attentionMask, b * L);
  });
  return input;
}

/** One picture of reconstructions: a row per image, original · masked input · reconstruction, as RGB. */
export function reconstructionGrid(rows: readonly ReconstructionRow[], options: GridOptions = {}): RgbImage {
  const size = rows[0]?.size ?? 0;
  const rgb = (img: Float32Array): Uint8Array => denormalizeRgb(img, size, size);
  return composeGrid(rows.map((r) => [rgb(r.original), rgb(r.masked), rgb(r.reconstruction)]), size, options);
}

/** The reconstructions of a batch (evaluation mode) and their grid as PNG bytes. */
export async function renderReconstructionGrid(model: M3AEModel, input: MimInput, options: GridOptions = {}): Promise<{ png: Buffer; rows: ReconstructionRow[]; width: number; height: number }> {
  const rows = await reconstructImages(model, input);
  const grid = reconstructionGrid(rows, options);
  const png = await encodeRgb(grid, { format: 'png' });
  return { png: Buffer.from(png.buffer, png.byteOffset, png.length), rows, width: grid.width, height: grid.height };
}
