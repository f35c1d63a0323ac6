/**
 * One node's share of the IR, and the numbers the generated code uses for it: IP-set indices and
 * counter slots. Numbers are allocated stably (what exists keeps its number) so that a membership
 * change is a map update and a program reload never sees another set under an old index.
 */
import { defaultRuleId, failClosedRuleId } from '../../ir/rule-ids.js';
import { localEndpointIds, referencedSets } from '../../ir/slice.js';
import type { Direction, Endpoint, IR, IpPortSet, IpSet, Rule, RuleSet } from '../../ir/types.js';
import { FAIL_CLOSED, TABLE_FAIL_CLOSED } from './layout.js';

export interface PrefilterList {
  name: string;
  /** Position in IR order: the first list containing an address is the one that drops it. */
  index: number;
  setId: string;
  /** CIDRs of both families: IPv4 ones go to pf_trie, IPv6 ones to pf_trie6. */
  cidrs: string[];
}

export interface NodeView {
  node: string;
  /** Fabric address of the node (where its XDP prefilter goes). */
  address: string | undefined;
  /** Endpoints on this node, sorted by id. */
  endpoints: Endpoint[];
  /** Rule sets of local endpoints in IR order (endpoint, then direction). */
  ruleSets: RuleSet[];
  /** IP sets referenced by local rules. */
  ipSets: IpSet[];
  ipPortSets: IpPortSet[];
  prefilters: PrefilterList[];
}

export function byId<T extends { id: string }>(a: T, b: T): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

export function isIpv4(address: string): boolean {
  return !address.includes(':');
}

/** The IR slice one node installs, with the numbering inputs the generated code needs. */
export function nodeView(ir: IR, node: string): NodeView {
  const endpoints = ir.endpoints.filter((e) => e.node === node).sort(byId);
  const local = localEndpointIds(ir, node);
  const ruleSets = ir.ruleSets.filter((rs) => local.has(rs.endpoint));
  const { ipSets: setIds, ipPortSets: portSetIds } = referencedSets(ruleSets);
  // By id, not by a scan per reference: a node of 10k endpoints names thousands of sets.
  const sets = new Map(ir.ipSets.map((s) => [s.id, s]));
  const portSets = new Set(ir.ipPortSets.map((s) => s.id));
  for (const id of setIds) if (!sets.has(id)) throw new Error(`IR references unknown IP set ${id}`);
  for (const id of portSetIds)
    if (!portSets.has(id)) throw new Error(`IR references unknown IP-port set ${id}`);
  const prefilters = ir.prefilters
    .filter((p) => p.nodes.includes(node))
    .map((p, index) => {
      const set = sets.get(p.set);
      if (!set) throw new Error(`prefilter ${p.name} references unknown IP set ${p.set}`);
      return { name: p.name, index, setId: p.set, cidrs: set.cidrs };
    });
  return {
    node,
    address: ir.nodes.find((n) => n.name === node)?.address,
    endpoints,
    ruleSets,
    ipSets: ir.ipSets.filter((s) => setIds.has(s.id)).sort(byId),
    ipPortSets: ir.ipPortSets.filter((s) => portSetIds.has(s.id)).sort(byId),
    prefilters,
  };
}

/** What a counter slot counts. */
export interface SlotOwner {
  endpoint: string;
  direction: Direction;
  /** IR rule id, or `<endpoint>/<direction>/default`, or `<endpoint>/<direction>/fail-closed/<reason>`. */
  rule: string;
}

export interface Allocation {
  /** IP set id → index (≥ 1) in the node's set trie. */
  sets: Record<string, number>;
  /** IP-port set id → index (≥ 1). */
  portSets: Record<string, number>;
  /** Slot key (see slotKey) → slot (≥ 1) in the node's counter array. */
  slots: Record<string, number>;
  /**
   * Table mode: hook key (see hookKey) → index (≥ 1) of the hook's decision table in the node's
   * `policy` map. Absent for hooks that walk their rules (and in descriptions written before
   * table mode).
   */
  tables?: Record<string, number>;
}

export const EMPTY_ALLOCATION: Allocation = { sets: {}, portSets: {}, slots: {}, tables: {} };

/** One policy program's hook: an endpoint and direction. */
export function hookKey(endpoint: string, direction: Direction): string {
  return `${endpoint}|${direction}`;
}

export function slotKey(owner: SlotOwner): string {
  return `${owner.endpoint}|${owner.direction}|${owner.rule}`;
}

export function parseSlotKey(key: string): SlotOwner {
  const [endpoint = '', direction = 'ingress', ...rest] = key.split('|');
  return { endpoint, direction: direction as Direction, rule: rest.join('|') };
}

/** Every counter a rule set needs, in program order. */
export function slotOwners(rs: RuleSet): SlotOwner[] {
  const base = { endpoint: rs.endpoint, direction: rs.direction };
  const rule = (r: Rule): SlotOwner => ({ ...base, rule: r.id });
  return [
    ...FAIL_CLOSED.map((reason) => ({ ...base, rule: failClosedRuleId(rs.endpoint, rs.direction, reason) })),
    ...(rs.table ? [{ ...base, rule: failClosedRuleId(rs.endpoint, rs.direction, TABLE_FAIL_CLOSED) }] : []),
    ...rs.globalRules.map(rule),
    ...rs.kubernetesRules.map(rule),
    { ...base, rule: defaultRuleId(rs.endpoint, rs.direction) },
  ];
}

/**
 * slotOwners as slot keys, kept per rule set object: an incremental IR hands the same object for
 * a rule set that did not change (IR objects are never changed in place), and a node of 10k
 * endpoints numbers its thousands of rules on every apply.
 */
const slotKeysByRuleSet = new WeakMap<RuleSet, readonly string[]>();

export function slotKeysOf(rs: RuleSet): readonly string[] {
  let keys = slotKeysByRuleSet.get(rs);
  if (!keys) slotKeysByRuleSet.set(rs, (keys = slotOwners(rs).map(slotKey)));
  return keys;
}

/**
 * How `stable` made a record from the one before it: what the apply's later steps (counters to
 * zero, the counter map's size, the programs' numbers) would otherwise find again by going over
 * every key of a node's thousands of slots.
 */
export interface RecordChange {
  /**
   * The record this one was numbered from, held weakly: each record's change would otherwise keep
   * the record before it alive, and so every record the agent ever numbered (a chain as long as
   * its relabels; 6.4 MiB after 100 changes at 10k endpoints). Whoever asks still holds it.
   */
  from: WeakRef<Readonly<Record<string, number>>>;
  /** Numbers given to keys that had none before. */
  fresh: readonly number[];
  /** Numbers of keys that are gone (not handed out again by this update). */
  freed: readonly number[];
  /** The highest number in the record (0 when empty). */
  highest: number;
}

const recordChanges = new WeakMap<Readonly<Record<string, number>>, RecordChange>();

/** How `record` was numbered from its predecessor, when `stable` made it. */
export function recordChange(record: Readonly<Record<string, number>>): RecordChange | undefined {
  return recordChanges.get(record);
}

/** Whether `stable` numbered `record` from `previous` (so its change tells what came and went). */
export function numberedFrom(
  record: Readonly<Record<string, number>>,
  previous: Readonly<Record<string, number>>,
): boolean {
  return recordChanges.get(record)?.from.deref() === previous;
}

/**
 * Keeps the numbers of what still exists; newcomers take the lowest free numbers in order. A
 * number freed by this very update is not handed out again until the next one: the programs
 * still running until the swap give it its old meaning. The result lists keys in `wanted` order
 * (program order for slots: counters read back in it). `wanted` holds no key twice.
 */
function stable(wanted: readonly string[], previous: Record<string, number>): Record<string, number> {
  const before = Object.keys(previous);
  // The keys the two lists share at their start and at their end (a relabelled pod changes the
  // keys of its own rule sets only) stay: only those between them can be gone.
  const shorter = Math.min(before.length, wanted.length);
  let head = 0;
  while (head < shorter && before[head] === wanted[head]) head++;
  // Nothing came or went (most applies, for sets): the previous numbers as they are.
  if (head === before.length && head === wanted.length) return previous;
  let tail = 0;
  while (tail < shorter - head && before[before.length - 1 - tail] === wanted[wanted.length - 1 - tail])
    tail++;
  const taken = new Set(Object.values(previous));
  // Two keys with one number (a damaged description): numbered as if from scratch where they clash.
  if (taken.size !== before.length) return renumbered(wanted, previous);
  // Every key is unique on both sides: a key of `previous` outside the shared ends is gone unless
  // `wanted` has it between its own; its number stays taken until the next update.
  const out: Record<string, number> = {};
  const fresh: number[] = [];
  let next = 1;
  let highest = 0;
  for (const key of wanted) {
    let n = Object.hasOwn(previous, key) ? previous[key] : undefined;
    if (n === undefined) {
      while (taken.has(next)) next++;
      n = next;
      taken.add(n);
      fresh.push(n);
    }
    out[key] = n;
    if (n > highest) highest = n;
  }
  const freed: number[] = [];
  const middle = new Set(wanted.slice(head, wanted.length - tail));
  for (let i = head; i < before.length - tail; i++) {
    const key = before[i] as string;
    if (!middle.has(key)) freed.push(previous[key] as number);
  }
  recordChanges.set(out, { from: new WeakRef(previous), fresh, freed, highest });
  return out;
}

/** `stable` where `previous` gives one number to two keys: the first in `wanted` keeps it. */
function renumbered(wanted: readonly string[], previous: Record<string, number>): Record<string, number> {
  const kept = new Map<string, number>();
  const wantedKeys = new Set(wanted);
  const used = new Set<number>(
    Object.entries(previous)
      .filter(([key]) => !wantedKeys.has(key))
      .map(([, n]) => n),
  );
  for (const key of wanted) {
    const n = previous[key];
    if (n !== undefined && !used.has(n)) {
      kept.set(key, n);
      used.add(n);
    }
  }
  const out: Record<string, number> = {};
  let next = 1;
  for (const key of wanted) {
    let n = kept.get(key);
    if (n === undefined) {
      while (used.has(next)) next++;
      n = next;
      used.add(n);
    }
    out[key] = n;
  }
  return out;
}

/**
 * `tabled`: hook keys whose rule sets are decided by their table; default every rule set that
 * carries one (apply narrows it to the tables that fit the node).
 */
export function allocate(
  view: NodeView,
  previous: Allocation = EMPTY_ALLOCATION,
  tabled: readonly string[] = view.ruleSets
    .filter((rs) => rs.table)
    .map((rs) => hookKey(rs.endpoint, rs.direction)),
): Allocation {
  const slotKeys = view.ruleSets.flatMap((rs) => slotKeysOf(rs));
  if (new Set(slotKeys).size !== slotKeys.length)
    throw new Error(`node ${view.node}: two rules of one rule set share an id`);
  return {
    sets: stable(
      view.ipSets.map((s) => s.id),
      previous.sets,
    ),
    portSets: stable(
      view.ipPortSets.map((s) => s.id),
      previous.portSets,
    ),
    slots: stable(slotKeys, previous.slots),
    tables: stable(tabled, previous.tables ?? {}),
  };
}
