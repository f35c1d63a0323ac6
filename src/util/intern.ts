/**
 * String interning for objects kept for a long time (the agent's model objects). Two reasons:
 *
 * - V8 makes a substring of 13 characters or more a *sliced string* that points into its parent:
 *   a label value or an address read from a manifest keeps that manifest's whole text alive
 *   (measured: 8 MiB of raw YAML at 10k endpoints, held by ~19,000 slices). An interned string is
 *   a copy of its own.
 * - The same few values repeat across thousands of objects ("TCP", label keys and values,
 *   namespace names): one copy each instead of one per object.
 *
 * The table is process-wide and bounded: past MAX_ENTRIES it starts afresh (strings already handed
 * out stay valid; only the sharing of later copies with earlier ones is lost).
 */
const MAX_ENTRIES = 500_000;
let table = new Map<string, string>();

/** A flat, shared copy of `s`. */
export function intern(s: string): string {
  const known = table.get(s);
  if (known !== undefined) return known;
  if (table.size >= MAX_ENTRIES) table = new Map();
  // A round trip through JSON yields a fresh sequential string, never a slice of `s`'s parent.
  const copy = s.length < 13 ? s : (JSON.parse(JSON.stringify(s)) as string);
  table.set(copy, copy);
  return copy;
}

function isPlain(v: object): boolean {
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null || Array.isArray(v);
}

/**
 * Replaces, in place, every string in `value`'s plain objects and arrays (deeply) by its interned
 * copy; returns `value`. Other objects (Maps, class instances, frozen objects) are left alone.
 */
export function internStrings<T>(value: T): T {
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return intern(v);
    if (typeof v !== 'object' || v === null || !isPlain(v) || Object.isFrozen(v)) return v;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) v[i] = walk(v[i]);
      return v;
    }
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      const before = o[k];
      const after = walk(before);
      if (after !== before) o[k] = after;
    }
    return v;
  };
  return walk(value) as T;
}
