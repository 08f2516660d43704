/**
 * The number of `key` among the distinct keys `index` has met, 0, 1, 2, … in order of first appearance; `added` runs
 * once, with that number, when the key is new (to grow the lists kept per distinct key).
 */
export function internKey<K>(index: Map<K, number>, key: K, added: (at: number) => void): number {
  let at = index.get(key);
  if (at === undefined) {
    at = index.size;
    index.set(key, at);
    added(at);
  }
  return at;
}
