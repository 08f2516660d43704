import type { SkipLog } from '../skip-log.js';

/** Where a record came from: the annotation file and its 1-based line (JSON arrays: 1-based element number). */
export interface Provenance {
  file: string;
  line: number;
}

/** One pre-training (image, text) pair. `imagePath` is absolute. */
export interface PairRecord {
  id: string;
  imagePath: string;
  text: string;
  /** `roco`, `medicat`, `medpix`, `manifest`. */
  source: string;
  provenance: Provenance;
}

/** One visual question with its answer (VQA-RAD, SLAKE, VQA-Med 2019). */
export interface VqaRecord {
  id: string;
  imagePath: string;
  question: string;
  /** As in the file, converted to a string and trimmed (no further normalisation). */
  answer: string;
  /** `OPEN` / `CLOSED` where the dataset says so (trimmed, upper case); VQA-Med 2019 has none. */
  answerType?: string;
  /** Dataset-specific question category: VQA-RAD `question_type`, SLAKE `content_type`, VQA-Med 2019 C1–C4 name. */
  category?: string;
  source: string;
  provenance: Provenance;
}

/** One image–text classification sample (MELINDA). */
export interface ClassificationRecord {
  id: string;
  imagePath: string;
  text: string;
  /** Every label column of the row by name (MELINDA: `i_meth`, `p_meth`, `i_meth_label`, `p_meth_label`). */
  labels: Record<string, string>;
  source: string;
  provenance: Provenance;
}

export interface ReaderOptions {
  /** Receives every skip with reason, file and line. */
  skipLog: SkipLog;
  /**
   * Skip records whose image file is absent (`missing-image`) or empty (`unreadable-image`). Set to false for
   * text-only uses (tokenizer training); `imagePath` is then still filled in.
   * @defaultValue true
   */
  requireImages?: boolean;
  /**
   * Texts with fewer whitespace-separated words are skipped as `too-short-text` (the official preprocessing's
   * `min_length`). Pair readers only; questions and answers are not filtered by length.
   * @defaultValue 3
   */
  minWords?: number;
}

/** A reader error that is not about one record (missing annotation file, bad option): the run cannot proceed. */
export class DatasetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DatasetError';
  }
}
