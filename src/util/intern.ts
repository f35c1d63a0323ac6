/**
 * String interning for objects kept for a long time (the agent's model objects). Two reasons:
 *
 * - V8 makes a substring of 13 characters or more a *sliced string* that points into its parent:
 *   a label value or an address read from a manifest keeps that manifest's whole text alive
 *   (measured: 8 MiB of raw YAML at 10k endpoints, held by ~19,000 slices). An interned string is
 *   a copy of its own.
 * - The same few values repeat across the objects of one input ("TCP", label keys and values,
 *   the namespace's name): one copy each instead of one per object.
 *
 * The table is the caller's (one per file converted): a process-wide one would keep every string
 * it ever saw (measured: 1.75 MiB of table at 10k endpoints for little more sharing).
 */
export type InternTable = Map<string, string>;

/**
 * Names that recur across the files of one input, whatever the file: a cluster's namespaces and
 * nodes, a few hundred values that every pod, Service and EndpointSlice names. A file's own table
 * shares them within the file; one file a Service (as a generator or a GitOps tree writes them)
 * keeps a copy each: ~20,000 copies at 10k endpoints. Process-wide, so bounded: past `limit`
 * names (a cluster with that many namespaces and nodes, or names that came and went) it shares
 * the names it has and leaves the others to the file's table.
 */
export class NameTable {
  private readonly names = new Map<string, string>();

  constructor(
    /** The fields whose values are names (`namespace`, `nodeName`). */
    readonly fields: ReadonlySet<string>,
    private readonly limit = 10_000,
  ) {}

  /** `s` as the one copy of the process (and of `table`). */
  intern(s: string, table: InternTable): string {
    const known = this.names.get(s);
    if (known !== undefined) {
      table.set(known, known);
      return known;
    }
    const copy = intern(s, table);
    if (this.names.size < this.limit) this.names.set(copy, copy);
    return copy;
  }
}

/** A flat copy of `s`, shared with the strings of `table`. */
export function intern(s: string, table: InternTable): string {
  const known = table.get(s);
  if (known !== undefined) return known;
  const copy = flat(s);
  table.set(copy, copy);
  return copy;
}

/**
 * `s` as one sequential string, never a view into a parent string (see the top). A string built by concatenation (a template literal) of 13
 * characters or more is a V8 *cons string*: a tree of its pieces, 32 bytes a node, that stays a
 * tree while it is kept. Ids an agent keeps for each of 10k endpoints and services (the endpoint
 * id and host interface, a service table's id, a service map key's id) were ~200,000 cons nodes,
 * 6 MiB of heap at 10k endpoints (docs/agent.md, "Memory budget"); flat, each is one string.
 */
export function flat(s: string): string {
  // A round trip through JSON yields a fresh sequential string, never a slice or a cons tree.
  return s.length < 13 ? s : (JSON.parse(JSON.stringify(s)) as string);
}

/** Searched for in `flattened`: any pattern makes V8 flatten the subject; this one is never found. */
const NOWHERE = /\0/;

/**
 * `s`, made flat where it lies: a regular expression runs on a flat string, so V8 turns a cons
 * string's tree into one sequential string in place. The tree's root stays as a wrapper of the
 * result (32 bytes) unless a scavenge moves the string, which drops it; its pieces go. Five times
 * cheaper than `flat` (15,000 rules of ~100 characters: 4–8 ms against 17–36 ms), for strings
 * made anew on every apply and kept until the next (nftables rules). Unlike `flat`, a sliced
 * string stays a view into its parent.
 */
export function flattened(s: string): string {
  NOWHERE.test(s);
  return s;
}

/**
 * `a` in an array of exactly its length. V8 grows an array built by `push`, a spread or `flatMap`
 * to a capacity of 17 or more elements and never gives the rest back while it lives: a kept list
 * of two items costs ~120 bytes more than a copy of it (at 10k endpoints: pods' ports, slices'
 * endpoints, service backends; docs/agent.md, "Memory budget").
 */
export function exact<T>(a: T[]): T[] {
  return a.length === 0 ? [] : a.slice();
}

function isPlain(v: object): boolean {
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null || Array.isArray(v);
}

/** Leaves already met in one input, by their content (see shareLeaves). */
export type LeafTable = Map<string, object>;

/** A value a leaf may hold: one JSON writes back exactly (no undefined, null, -0, NaN). */
function isExactScalar(v: unknown): boolean {
  return (
    typeof v === 'string' ||
    typeof v === 'boolean' ||
    (typeof v === 'number' && Number.isFinite(v) && !Object.is(v, -0))
  );
}

/**
 * Replaces, in place, every string in `value`'s plain objects and arrays (deeply) by its interned
 * copy, and every array inside them by one of its exact length (`exact`; an array met twice stays
 * one array); returns `value`. Other objects (Maps, class instances, frozen objects) are left alone.
 *
 * With `leaves`, also every *leaf* inside `value` (a plain object or array holding only strings,
 * numbers and booleans, or an array of such leaves) becomes the first equal leaf met with the same
 * table, frozen: a pod's ports, a Service's and an EndpointSlice's ports, label maps and empty
 * lists repeat across the objects of one manifest file, and each copy cost 50–100 bytes for as long
 * as the agent keeps the model (~4 MiB at 10k endpoints: docs/agent.md, "Memory budget"). A shared
 * leaf is frozen, so a change in place (which would change every object sharing it) throws. Done in
 * the same walk: a second walk of every object cost a third more conversion time.
 *
 * With `names`, the values of its fields are shared across files too (NameTable).
 */
export function internStrings<T>(
  value: T,
  table: InternTable = new Map(),
  leaves?: LeafTable,
  names?: NameTable,
): T {
  const copies = new Map<unknown[], unknown[]>();
  const sharedHere = new WeakSet<object>();
  // A leaf's JSON is its key: exact for what a leaf holds, and native (cheap).
  const share = <L extends object>(leaf: L): L => {
    if (leaves === undefined) return leaf;
    const key = JSON.stringify(leaf);
    let known = leaves.get(key) as L | undefined;
    if (known === undefined) {
      known = Object.freeze(leaf);
      leaves.set(key, known);
    }
    sharedHere.add(known);
    return known;
  };
  const walk = (v: unknown, root: boolean): unknown => {
    if (typeof v === 'string') return intern(v, table);
    if (typeof v !== 'object' || v === null || !isPlain(v) || Object.isFrozen(v)) return v;
    // `value` itself stays the caller's own object, even when it is a leaf.
    let leaf = leaves !== undefined && !root;
    if (Array.isArray(v)) {
      const known = copies.get(v);
      if (known) return known;
      for (let i = 0; i < v.length; i++) {
        const e = (v[i] = walk(v[i], false));
        if (leaf && !isExactScalar(e) && !(typeof e === 'object' && e !== null && sharedHere.has(e)))
          leaf = false;
      }
      const copy = leaf ? share(exact(v)) : exact(v);
      copies.set(v, copy);
      return copy;
    }
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      const before = o[k];
      // Strings always: a copy compares equal to the slice it replaces.
      if (typeof before === 'string')
        o[k] = names?.fields.has(k) === true ? names.intern(before, table) : intern(before, table);
      else if (typeof before === 'object' && before !== null) {
        leaf = false;
        const after = walk(before, false);
        if (after !== before) o[k] = after;
      } else if (leaf && !isExactScalar(before)) leaf = false;
    }
    return leaf ? share(o) : o;
  };
  return walk(value, true) as T;
}
