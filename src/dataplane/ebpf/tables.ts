/**
 * Decision tables in the kernel (table mode). Each endpoint and direction decided by a table has
 * an LPM trie of its own (table-encoding.ts) and an index in the node's `policy` map, an
 * array of maps: its program looks up its index there, then the peer and the port in the trie.
 *
 * A rule change writes a complete new trie and then points the hook's index at it with one map
 * update: programs see the whole old table or the whole new one. The kernel waits for running
 * programs before that update returns (map-in-map updates end with synchronize_rcu), and frees
 * the old trie once nothing holds it, so nothing has to delete entries one by one, and a crash
 * at any point leaves either table complete. The programs do not change: no reload.
 *
 * Capacity: a trie is sized to its table; a node holds at most TABLE_HOOKS - 1 tables and
 * NODE_TABLE_ENTRIES trie entries in all. A table beyond that (or one with more Log rules on one
 * packet than an entry holds) keeps the rule walk for its endpoint, and apply reports it: never
 * a missing table, never fail-open.
 */
import { BpfMap, codecs, MapFlags, MapOfMaps, type MapBase } from '../../bpf/index.js';
import type { Direction, RuleSet } from '../../ir/types.js';
import { tablePeerKey, tableValue, type TableValue } from './layout.js';
import { allocate, hookKey, slotKey, type Allocation, type NodeView } from './node.js';
import { encodeTable, type EncodedTable } from './table-encoding.js';

/** Slots of the `policy` map (index 0 is never used). */
export const TABLE_HOOKS = 4096;
/** Trie entries a node's tables may hold in all (~100 B of kernel memory each). */
export const NODE_TABLE_ENTRIES = 1 << 20;

const tableKeyCodec = codecs.bytes(tablePeerKey.size);
export type TableMap = BpfMap<Buffer, TableValue>;

const TABLE_MAP_NAME = 'sy_ptable';

function tableMap(maxEntries: number): TableMap {
  // LPM tries must be created without preallocation; every inner map must share the flags.
  return BpfMap.create({
    type: 'lpm_trie',
    name: TABLE_MAP_NAME,
    key: tableKeyCodec,
    value: tableValue,
    maxEntries,
    flags: MapFlags.NO_PREALLOC,
  });
}

/** The node's `policy` map: hook index → the hook's table trie. */
export function createTablesMap(name: string): MapOfMaps<number> {
  const template = tableMap(1);
  try {
    return MapOfMaps.create({
      type: 'array_of_maps',
      name,
      key: codecs.u32,
      maxEntries: TABLE_HOOKS,
      innerTemplate: template,
    });
  } finally {
    template.close();
  }
}

/** A trie holding `table`, sized to it. */
export function createTableMap(table: EncodedTable): TableMap {
  const map = tableMap(Math.max(1, table.entries.length));
  try {
    map.updateBatch(table.entries.map((e) => [e.key, e.value] as const));
    return map;
  } catch (e) {
    map.close();
    throw e;
  }
}

/** Opens the trie at `index` (tests, listings). */
export function openTableMap(tables: MapOfMaps<number>, index: number): TableMap | undefined {
  return tables.openInner(index, tableKeyCodec, tableValue);
}

/** What the node's description keeps of a hook's table. */
export interface TableState {
  endpoint: string;
  direction: Direction;
  index: number;
  hash: string;
  entries: number;
  /** Kernel id of the trie installed at `index`: another id there means it was replaced. */
  innerId: number;
}

/** A rule set that has a table but keeps the walk, and why. */
export interface TableFallback {
  endpoint: string;
  direction: Direction;
  reason: string;
}

export interface TableChoice {
  /** Hook key → the encoded table, for the rule sets decided by their table (view order). */
  tabled: Map<string, EncodedTable>;
  fallbacks: TableFallback[];
}

export interface TableBudget {
  hooks: number;
  entries: number;
}

export const NODE_TABLE_BUDGET: TableBudget = { hooks: TABLE_HOOKS - 1, entries: NODE_TABLE_ENTRIES };

/**
 * The node's numbers with its tables: counter slots first (tables name them), then which tables
 * fit, then an index for each of those.
 */
export function allocateWithTables(
  view: NodeView,
  before: Allocation | undefined,
  budget: TableBudget = NODE_TABLE_BUDGET,
): { tables: TableChoice; alloc: Allocation } {
  const walkOnly = allocate(view, before, []);
  // Walk mode (no rule set carries a table): that allocation is the node's, computed once.
  if (!view.ruleSets.some((rs) => rs.table))
    return { tables: { tabled: new Map(), fallbacks: [] }, alloc: walkOnly };
  const tables = chooseTables(view.ruleSets, walkOnly.slots, budget);
  return { tables, alloc: allocate(view, before, [...tables.tabled.keys()]) };
}

/**
 * Which rule sets the node decides by table: those that carry one, encode, and fit what is left
 * of the node's budget, in view order. `slots` must already number every rule of the rule sets.
 */
export function chooseTables(
  ruleSets: readonly RuleSet[],
  slots: Allocation['slots'],
  budget: TableBudget = NODE_TABLE_BUDGET,
): TableChoice {
  const tabled = new Map<string, EncodedTable>();
  const fallbacks: TableFallback[] = [];
  let entries = 0;
  for (const rs of ruleSets) {
    if (!rs.table) continue;
    const slot = (rule: string): number => {
      const n = slots[slotKey({ endpoint: rs.endpoint, direction: rs.direction, rule })];
      if (n === undefined) throw new Error(`no counter slot for ${rule} of ${rs.endpoint} ${rs.direction}`);
      return n;
    };
    const encoding = encodeTable(rs.table, slot);
    const fallback = (reason: string): void => {
      fallbacks.push({ endpoint: rs.endpoint, direction: rs.direction, reason });
    };
    if (!encoding.ok) fallback(encoding.reason);
    else if (tabled.size >= budget.hooks) fallback(`the node holds ${budget.hooks} tables at most`);
    else if (entries + encoding.table.entries.length > budget.entries)
      fallback(
        `its ${encoding.table.entries.length} trie entries exceed what is left of the node's ${budget.entries}`,
      );
    else {
      tabled.set(hookKey(rs.endpoint, rs.direction), encoding.table);
      entries += encoding.table.entries.length;
    }
  }
  return { tabled, fallbacks };
}

/** A table to write: new, changed, moved to another index, or not what the kernel holds. */
export interface TableWrite {
  endpoint: string;
  direction: Direction;
  index: number;
  table: EncodedTable;
}

export function planTableWrites(
  ruleSets: readonly RuleSet[],
  choice: TableChoice,
  alloc: Allocation,
  before: readonly TableState[],
  tables: MapOfMaps<number>,
): { writes: TableWrite[]; kept: TableState[] } {
  const writes: TableWrite[] = [];
  const kept: TableState[] = [];
  for (const rs of ruleSets) {
    const key = hookKey(rs.endpoint, rs.direction);
    const table = choice.tabled.get(key);
    const index = alloc.tables?.[key];
    if (!table || index === undefined) continue;
    const old = before.find((s) => s.endpoint === rs.endpoint && s.direction === rs.direction);
    const same =
      old !== undefined &&
      old.index === index &&
      old.hash === table.hash &&
      tables.innerId(index) === old.innerId;
    if (same) kept.push(old);
    else writes.push({ endpoint: rs.endpoint, direction: rs.direction, index, table });
  }
  return { writes, kept };
}

/**
 * Creates and fills a trie per write, before anything in force changes: all of them, or none
 * (a failure closes what was built and rethrows).
 */
export function buildTables(writes: readonly TableWrite[]): Map<TableWrite, TableMap> {
  const built = new Map<TableWrite, TableMap>();
  try {
    for (const w of writes) built.set(w, createTableMap(w.table));
    return built;
  } catch (e) {
    for (const m of built.values()) m.close();
    throw e;
  }
}

/**
 * Points each write's index at its trie, all in one batch (each index still swaps atomically; the
 * kernel's wait for running programs happens once, not per table); returns their states.
 */
export function installTables(
  tables: MapOfMaps<number>,
  built: ReadonlyMap<TableWrite, MapBase>,
): TableState[] {
  if (built.size > 0) tables.setMany([...built].map(([w, map]) => [w.index, map] as const));
  const out: TableState[] = [];
  for (const [w, map] of built) {
    out.push({
      endpoint: w.endpoint,
      direction: w.direction,
      index: w.index,
      hash: w.table.hash,
      entries: w.table.entries.length,
      innerId: map.info.id,
    });
  }
  return out;
}

/** Empties the indices nothing uses any more (after the programs that read them are gone). */
export function dropTables(tables: MapOfMaps<number>, indices: Iterable<number>): number {
  // One by one: array_of_maps has no batch delete (ENOTSUPP); endpoints leave a few at a time.
  let dropped = 0;
  for (const index of indices) if (tables.delete(index)) dropped++;
  return dropped;
}

/** Indices the previous allocation used that the new one does not. */
export function freedTableIndices(before: Allocation | undefined, after: Allocation): number[] {
  const now = new Set(Object.values(after.tables ?? {}));
  return Object.values(before?.tables ?? {}).filter((i) => !now.has(i));
}
