/**
 * A many-valued index kept small: most keys of the calculation's address indexes name one value
 * (an address is one endpoint's, an address backs one service), so a key holds its value as a
 * plain string and becomes an array only at the second value. At 10k endpoints and 10k services
 * this replaces ~30,000 one-element Sets (~150 bytes each) by the strings alone; the eBPF service
 * shadow's table and VIP indexes (one entry per table or VIP, almost always) another 20,000.
 */
export type CompactIndex = Map<string, string | string[]>;

const NONE: readonly string[] = [];

/** The values under `key` (none: an empty list). */
export function compactGet(index: CompactIndex, key: string): readonly string[] {
  const v = index.get(key);
  return v === undefined ? NONE : typeof v === 'string' ? [v] : v;
}

export function compactAdd(index: CompactIndex, key: string, value: string): void {
  const v = index.get(key);
  if (v === undefined) index.set(key, value);
  else if (typeof v === 'string') {
    if (v !== value) index.set(key, [v, value]);
  } else if (!v.includes(value)) v.push(value);
}

export function compactRemove(index: CompactIndex, key: string, value: string): void {
  const v = index.get(key);
  if (v === undefined) return;
  if (typeof v === 'string') {
    if (v === value) index.delete(key);
    return;
  }
  const i = v.indexOf(value);
  if (i < 0) return;
  v.splice(i, 1);
  if (v.length === 1) index.set(key, v[0] as string);
}
