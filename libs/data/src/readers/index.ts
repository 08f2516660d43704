import { readManifest, type ManifestOptions } from './manifest.js';
import { readMedicat, type MedicatOptions } from './medicat.js';
import { readMedpix, type MedpixOptions } from './medpix.js';
import { readRoco, type RocoOptions } from './roco.js';
import { DatasetError, type PairRecord, type ReaderOptions } from './types.js';

export * from './types.js';
export { parseCsv, type CsvRow } from './csv.js';
export { PythonRandom } from './python-random.js';
export * from './roco.js';
export * from './medicat.js';
export * from './medpix.js';
export * from './manifest.js';
export * from './vqa.js';
export * from './melinda.js';

export const PAIR_SOURCES = ['roco', 'medicat', 'medpix', 'manifest'] as const;
export type PairSource = (typeof PAIR_SOURCES)[number];

export interface PairSourceOptions extends ReaderOptions {
  /** Passed to the reader: roco train|validation|test, medicat train|validation|test, medpix train|dev|test. */
  split?: string;
}

/** The reader for `m3ae prepare --source S --input PATH [--split X]`. */
export function readPairs(source: PairSource, input: string, options: PairSourceOptions): AsyncGenerator<PairRecord> {
  switch (source) {
    case 'roco':
      return readRoco(input, options as RocoOptions);
    case 'medicat':
      return readMedicat(input, options as MedicatOptions);
    case 'medpix':
      return readMedpix(input, options as MedpixOptions);
    case 'manifest':
      return readManifest(input, options as ManifestOptions);
    default:
      throw new DatasetError(`source must be one of ${PAIR_SOURCES.join(', ')}, got ${JSON.stringify(source)}`);
  }
}
