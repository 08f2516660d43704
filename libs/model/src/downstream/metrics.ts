/**
 * Downstream metrics as M3AE reports them (`my_metrics.VQARADScore`, `Accuracy`, `compute_irtr_recall`), computed
 * from predictions in plain JavaScript.
 */
export interface AccuracyCell {
  correct: number;
  total: number;
  /** correct / total; 0 when total is 0. */
  accuracy: number;
}

function cell(correct: number, total: number): AccuracyCell {
  return { correct, total, accuracy: total === 0 ? 0 : correct / total };
}

/** Accuracy of predicted class indices against labels; a label of −1 (not in the vocabulary) is always wrong. */
export function accuracy(predictions: ArrayLike<number>, labels: ArrayLike<number>): AccuracyCell {
  if (predictions.length !== labels.length) throw new RangeError(`accuracy: ${predictions.length} predictions for ${labels.length} labels`);
  let correct = 0;
  for (let i = 0; i < labels.length; i++) if ((labels[i] as number) >= 0 && predictions[i] === labels[i]) correct++;
  return cell(correct, labels.length);
}

export interface VqaMetrics {
  open: AccuracyCell;
  closed: AccuracyCell;
  overall: AccuracyCell;
  /** Questions whose answer is not in the training vocabulary (counted wrong). */
  unseenAnswers: number;
}

/**
 * Accuracy by answer type (VQARADScore: the argmax answer scores 1 when it is the target; overall over all
 * questions, so overall = (open.correct + closed.correct) / (open.total + closed.total)).
 */
export function vqaMetrics(predictions: ArrayLike<number>, labels: ArrayLike<number>, answerTypes: readonly ('OPEN' | 'CLOSED')[]): VqaMetrics {
  if (predictions.length !== labels.length || labels.length !== answerTypes.length) {
    throw new RangeError(`vqaMetrics: ${predictions.length} predictions, ${labels.length} labels, ${answerTypes.length} answer types`);
  }
  const c = { OPEN: 0, CLOSED: 0 };
  const t = { OPEN: 0, CLOSED: 0 };
  let unseen = 0;
  for (let i = 0; i < labels.length; i++) {
    const type = answerTypes[i] as 'OPEN' | 'CLOSED';
    if (type !== 'OPEN' && type !== 'CLOSED') throw new RangeError(`vqaMetrics: answerTypes[${i}] is ${JSON.stringify(type)}; expected OPEN or CLOSED`);
    const l = labels[i] as number;
    t[type]++;
    if (l < 0) unseen++;
    else if (predictions[i] === l) c[type]++;
  }
  return { open: cell(c.OPEN, t.OPEN), closed: cell(c.CLOSED, t.CLOSED), overall: cell(c.OPEN + c.CLOSED, t.OPEN + t.CLOSED), unseenAnswers: unseen };
}

export interface RecallSet {
  r1: number;
  r5: number;
  r10: number;
}

export interface RetrievalMetrics {
  /** Image → text: for each image, is one of its captions among the top K texts. */
  i2t: RecallSet;
  /** Text → image: for each caption, is one of its images among the top K images. */
  t2i: RecallSet;
  images: number;
  texts: number;
}

/** Indices of the `k` largest values (ties: lower index first), reading values(i) for i in [0, n). */
function topK(n: number, k: number, value: (i: number) => number): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  idx.sort((a, b) => value(b) - value(a) || a - b);
  return idx.slice(0, k);
}

/**
 * Recall@1/5/10 both ways from a score matrix [nImages × nTexts] (row-major). `textImages[t]` lists the images
 * caption t belongs to: a caption shared by several images counts as correct for each of them, and each of them as
 * correct for it (the official code compares image ids, which for shared captions is the same relation).
 */
export function recallAtK(scores: ArrayLike<number>, nImages: number, nTexts: number, textImages: readonly (readonly number[])[]): RetrievalMetrics {
  if (scores.length !== nImages * nTexts) throw new RangeError(`recallAtK: ${scores.length} scores for ${nImages} images × ${nTexts} texts`);
  if (textImages.length !== nTexts) throw new RangeError(`recallAtK: textImages has ${textImages.length} entries; expected ${nTexts}`);
  const linked = new Set<number>();
  const imageHasText = new Array<boolean>(nImages).fill(false);
  textImages.forEach((imgs, t) => {
    for (const i of imgs) {
      if (!Number.isInteger(i) || i < 0 || i >= nImages) throw new RangeError(`recallAtK: textImages[${t}] holds ${i}; expected an image index in [0, ${nImages})`);
      linked.add(i * nTexts + t);
      imageHasText[i] = true;
    }
  });
  const ks = [1, 5, 10] as const;
  const i2t = [0, 0, 0];
  const t2i = [0, 0, 0];
  let queryImages = 0;
  for (let i = 0; i < nImages; i++) {
    if (!imageHasText[i]) continue;
    queryImages++;
    const top = topK(nTexts, 10, (t) => scores[i * nTexts + t] as number);
    ks.forEach((k, j) => {
      if (top.slice(0, k).some((t) => linked.has(i * nTexts + t))) i2t[j] = (i2t[j] as number) + 1;
    });
  }
  for (let t = 0; t < nTexts; t++) {
    const top = topK(nImages, 10, (i) => scores[i * nTexts + t] as number);
    ks.forEach((k, j) => {
      if (top.slice(0, k).some((i) => linked.has(i * nTexts + t))) t2i[j] = (t2i[j] as number) + 1;
    });
  }
  const rs = (hits: number[], n: number): RecallSet => ({ r1: n ? (hits[0] as number) / n : 0, r5: n ? (hits[1] as number) / n : 0, r10: n ? (hits[2] as number) / n : 0 });
  return { i2t: rs(i2t, queryImages), t2i: rs(t2i, nTexts), images: queryImages, texts: nTexts };
}
