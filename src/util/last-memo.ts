/**
 * A memo that keeps, per key, only the value computed from the last source object it was asked
 * about (compared by identity). For renderings of a list that an incremental IR hands on as the
 * same array while it is unchanged: a WeakMap keyed by the list would keep every rendering whose
 * list anything else still holds (the previous IR does, through the source's change), so a large
 * rendering would stay alive twice after each change of the list.
 */
export class LastMemo<S extends object, V> {
  private readonly last = new Map<string, { source: S; value: V }>();

  get(key: string, source: S, compute: () => V): V {
    const hit = this.last.get(key);
    if (hit?.source === source) return hit.value;
    const value = compute();
    this.last.set(key, { source, value });
    return value;
  }
}
