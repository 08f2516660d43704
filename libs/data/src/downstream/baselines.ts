/**
 * A question-only baseline for VQA: the answer prior given the question's wording, learnt from the training
 * questions alone (no image). It backs off from the exact question to its first three, two and one words, then to
 * the most frequent training answer. It measures how much of a VQA set the language prior already answers.
 */
export class QuestionPriorBaseline {
  private readonly tables: Map<string, Map<string, number>>[];
  private readonly global: string;

  private static readonly LEVELS = [Infinity, 3, 2, 1] as const;

  constructor(train: readonly { question: string; answer: string }[]) {
    if (train.length === 0) throw new RangeError('QuestionPriorBaseline: no training questions');
    this.tables = QuestionPriorBaseline.LEVELS.map(() => new Map<string, Map<string, number>>());
    const counts = new Map<string, number>();
    for (const { question, answer } of train) {
      counts.set(answer, (counts.get(answer) ?? 0) + 1);
      QuestionPriorBaseline.keys(question).forEach((k, level) => {
        const table = this.tables[level] as Map<string, Map<string, number>>;
        let m = table.get(k);
        if (!m) {
          m = new Map();
          table.set(k, m);
        }
        m.set(answer, (m.get(answer) ?? 0) + 1);
      });
    }
    this.global = QuestionPriorBaseline.argmax(counts);
  }

  /** Lower case, whitespace collapsed, question marks dropped. */
  static words(question: string): string[] {
    return question.toLowerCase().replace(/\?/g, ' ').trim().split(/\s+/).filter((w) => w !== '');
  }

  private static keys(question: string): string[] {
    const w = QuestionPriorBaseline.words(question);
    return QuestionPriorBaseline.LEVELS.map((n) => (n === Infinity ? w.join(' ') : `${n}:${w.slice(0, n).join(' ')}`));
  }

  /** Most frequent answer; ties go to the answer seen first. */
  private static argmax(m: ReadonlyMap<string, number>): string {
    let best = '';
    let bestCount = -1;
    for (const [a, c] of m) {
      if (c > bestCount) {
        best = a;
        bestCount = c;
      }
    }
    return best;
  }

  /** The predicted (normalised) answer for a question. */
  predict(question: string): string {
    const keys = QuestionPriorBaseline.keys(question);
    for (let level = 0; level < keys.length; level++) {
      const m = this.tables[level]?.get(keys[level] as string);
      if (m) return QuestionPriorBaseline.argmax(m);
    }
    return this.global;
  }

  /** The most frequent training answer (the majority baseline). */
  get majorityAnswer(): string {
    return this.global;
  }
}
