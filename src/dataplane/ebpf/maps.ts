/**
 * The per-node maps: their shapes, creating or reopening them from their pins, and bringing
 * their contents to what the IR wants by difference (adds before the program swap, removals
 * after, so neither the old nor the new programs ever see a set without a member both agree on).
 */
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  BpfMap,
  codecs,
  MapFlags,
  MapOfMaps,
  MapShapeError,
  PerCpuMap,
  type Codec,
  type MapBase,
  type PerCpuMapType,
  type PlainMapType,
} from '../../bpf/index.js';
import {
  counterValue,
  ctKey,
  ctValue,
  flowKey,
  flowValue,
  MAP,
  NODE_CONFIG_FLAG,
  nodeConfig,
  portSetKey,
  setLpmKey,
  type CounterValue,
  type NodeConfig,
  type CtKey,
  type CtValue,
  type FlowKey,
  type FlowValue,
  type PortSetKey,
  type SetLpmKey,
} from './layout.js';
import type { IpPortSet, IpSet } from '../../ir/types.js';
import { type Allocation, type NodeView } from './node.js';
import { cidr16, isIpv6, MAPPED_PREFIX_BITS } from './addr16.js';
import { PREFILTER_MIN_CAPACITY } from './prefilter.js';
import { createTablesMap } from './tables.js';

export const CT_CAPACITY = 65536;
export const SET_CAPACITY = 1 << 20;
export const PORT_SET_CAPACITY = 65536;
/**
 * Counter slots a node's array starts with: every rule of every local endpoint and direction
 * has one. Per-CPU arrays allocate every slot up front, so the array grows (by recreation) only
 * when a node needs more.
 */
export const COUNTER_SLOTS = 8192;
export const PREFILTER_LISTS = 256;
/**
 * Flow aggregates a node holds between two drains. An entry lives at most one interval (the agent
 * drains the map every FLOW_INTERVAL_MS, 1 s), so this bounds the distinct aggregates per
 * interval: 10 000 new connections a second from 10 000 different peers (the worst case: no two
 * share an aggregate) make 10 000 entries at the server's hook, 20 000 when the clients are pods
 * of the same node (their egress hook aggregates too), 40 000 with a Log rule on the way —
 * 65 536 leaves 60% headroom over that. Not preallocated: memory follows use (about
 * 100 B + 40 B × CPUs per entry), so the bound costs nothing until traffic needs it.
 */
export const FLOW_CAPACITY = 65536;

export interface NodeMaps {
  ct: BpfMap<CtKey, CtValue>;
  ipSets: BpfMap<SetLpmKey, number>;
  portSets: BpfMap<PortSetKey, number>;
  counters: PerCpuMap<number, CounterValue>;
  /** Flow aggregates, per CPU; the agent drains them (lookup and delete) every interval. */
  flows: PerCpuMap<FlowKey, FlowValue>;
  pfTrie: BpfMap<string, number>;
  pfCounters: PerCpuMap<number, CounterValue>;
  /** One element: the node's run-time switches (flow events). */
  config: BpfMap<number, NodeConfig>;
  /** One element per CPU: aggregates the full `flows` map refused. */
  flowsLost: PerCpuMap<number, bigint>;
  /** Table mode: hook index → the hook's decision table trie (an array of maps). */
  tables: MapOfMaps<number>;
}

interface PlainSpec<K, V> {
  kind: 'plain';
  type: PlainMapType;
  key: Codec<K>;
  value: Codec<V>;
  maxEntries: number;
}
interface PerCpuSpec<K, V> {
  kind: 'percpu';
  type: PerCpuMapType;
  key: Codec<K>;
  value: Codec<V>;
  maxEntries: number;
}

/** Shapes by symbolic name (the name programs use), for `compile` and for creation. */
export const MAP_SPECS = {
  [MAP.conntrack]: {
    kind: 'plain',
    type: 'lru_hash',
    key: ctKey,
    value: ctValue,
    maxEntries: CT_CAPACITY,
  } satisfies PlainSpec<CtKey, CtValue>,
  [MAP.ipSets]: {
    kind: 'plain',
    type: 'lpm_trie',
    key: setLpmKey,
    value: codecs.u32,
    maxEntries: SET_CAPACITY,
  } satisfies PlainSpec<SetLpmKey, number>,
  [MAP.portSets]: {
    kind: 'plain',
    type: 'hash',
    key: portSetKey,
    value: codecs.u32,
    maxEntries: PORT_SET_CAPACITY,
  } satisfies PlainSpec<PortSetKey, number>,
  [MAP.counters]: {
    kind: 'percpu',
    type: 'percpu_array',
    key: codecs.u32,
    value: counterValue,
    maxEntries: COUNTER_SLOTS,
  } satisfies PerCpuSpec<number, CounterValue>,
  [MAP.prefilter]: {
    kind: 'plain',
    type: 'lpm_trie',
    key: codecs.ipv4LpmKey,
    value: codecs.u32,
    maxEntries: PREFILTER_MIN_CAPACITY,
  } satisfies PlainSpec<string, number>,
  [MAP.prefilterCounters]: {
    kind: 'percpu',
    type: 'percpu_array',
    key: codecs.u32,
    value: counterValue,
    maxEntries: PREFILTER_LISTS,
  } satisfies PerCpuSpec<number, CounterValue>,
  [MAP.config]: {
    kind: 'plain',
    type: 'array',
    key: codecs.u32,
    value: nodeConfig,
    maxEntries: 1,
  } satisfies PlainSpec<number, NodeConfig>,
  [MAP.flows]: {
    kind: 'percpu',
    // A hash, not an LRU hash: a full map refuses new aggregates (and the program counts them in
    // flows_lost) instead of silently evicting ones not drained yet.
    type: 'percpu_hash',
    key: flowKey,
    value: flowValue,
    maxEntries: FLOW_CAPACITY,
  } satisfies PerCpuSpec<FlowKey, FlowValue>,
  [MAP.flowsLost]: {
    kind: 'percpu',
    type: 'percpu_array',
    key: codecs.u32,
    value: codecs.u64,
    maxEntries: 1,
  } satisfies PerCpuSpec<number, bigint>,
} as const;

export const MAP_PURPOSE: Record<string, string> = {
  [MAP.conntrack]: 'conntrack: hook + 5-tuple → state, expiry, packets',
  [MAP.ipSets]: 'IP sets: {prefixlen, set index, address} → 1',
  [MAP.portSets]: 'IP-port sets: {set index, address, port} → 1',
  [MAP.counters]: 'per-rule counters: slot → {packets, bytes} per CPU',
  [MAP.flows]: 'flow aggregates: hook, verdict, addresses, port, rule → packets, bytes, connections per CPU',
  [MAP.config]: 'node switches: flags (bit 0: flow aggregates on)',
  [MAP.flowsLost]: 'aggregates the full flows map refused, per CPU',
  [MAP.prefilter]: 'prefilter deny-lists: source CIDR → list index',
  [MAP.prefilterCounters]: 'prefilter drops: list index → {packets, bytes} per CPU',
  [MAP.tables]: "decision tables: hook index → the hook's table trie (table mode)",
};

/** Kernel object names (the symbolic names are what programs and pins use). */
function kernelName(symbolic: string): string {
  return `sy_${symbolic}`.slice(0, 15);
}

/** A spec as the kernel gets it: its kernel name, and the size asked for instead of the default. */
function sized<S extends { maxEntries: number }>(
  spec: S,
  name: string,
  maxEntries?: number,
): S & { name: string } {
  return { ...spec, name: kernelName(name), maxEntries: maxEntries ?? spec.maxEntries };
}

function plain<K, V>(spec: PlainSpec<K, V>, name: string, maxEntries?: number): BpfMap<K, V> {
  return BpfMap.create({
    ...sized(spec, name, maxEntries),
    // Set members come and go with pods: allocate them as they come (LRU maps must preallocate).
    ...(spec.type === 'hash' ? { flags: MapFlags.NO_PREALLOC } : {}),
  });
}

function perCpu<K, V>(spec: PerCpuSpec<K, V>, name: string, maxEntries?: number): PerCpuMap<K, V> {
  return PerCpuMap.create({
    ...sized(spec, name, maxEntries),
    // Flow aggregates come and go every interval: allocate them as they come.
    ...(spec.type === 'percpu_hash' ? { flags: MapFlags.NO_PREALLOC } : {}),
  });
}

export interface MapSizes {
  /** Counter slots (slot 0 is never used). */
  counterSlots?: number;
  /** Conntrack entries (an LRU hash preallocates them all). */
  conntrackCapacity?: number;
  prefilterCapacity?: number;
  /** Flow aggregates (default FLOW_CAPACITY). */
  flowCapacity?: number;
}

/** Slots for counters numbered up to `highest`, with room to grow before the next recreation. */
export function counterSlotsFor(highest: number): number {
  let size = COUNTER_SLOTS;
  while (size <= highest) size *= 2;
  return size;
}

/** Fresh unpinned maps (tests, or a first apply before pinning). */
export function createNodeMaps(sizes: MapSizes = {}): NodeMaps {
  const s = MAP_SPECS;
  const opened: MapBase[] = [];
  const track = <M extends MapBase>(m: M): M => {
    opened.push(m);
    return m;
  };
  try {
    return {
      ct: track(plain(s[MAP.conntrack], MAP.conntrack, sizes.conntrackCapacity)),
      ipSets: track(plain(s[MAP.ipSets], MAP.ipSets)),
      portSets: track(plain(s[MAP.portSets], MAP.portSets)),
      counters: track(perCpu(s[MAP.counters], MAP.counters, sizes.counterSlots)),
      flows: track(perCpu(s[MAP.flows], MAP.flows, sizes.flowCapacity)),
      pfTrie: track(
        plain(
          s[MAP.prefilter],
          MAP.prefilter,
          Math.max(sizes.prefilterCapacity ?? 0, PREFILTER_MIN_CAPACITY),
        ),
      ),
      pfCounters: track(perCpu(s[MAP.prefilterCounters], MAP.prefilterCounters)),
      config: track(plain(s[MAP.config], MAP.config)),
      flowsLost: track(perCpu(s[MAP.flowsLost], MAP.flowsLost)),
      tables: track(createTablesMap(kernelName(MAP.tables))),
    };
  } catch (e) {
    for (const m of opened) m.close();
    throw e;
  }
}

const FIELDS: Record<keyof NodeMaps, string> = {
  ct: MAP.conntrack,
  ipSets: MAP.ipSets,
  portSets: MAP.portSets,
  counters: MAP.counters,
  flows: MAP.flows,
  pfTrie: MAP.prefilter,
  pfCounters: MAP.prefilterCounters,
  config: MAP.config,
  flowsLost: MAP.flowsLost,
  tables: MAP.tables,
};

/** Maps added after the first layout: a node pinned without them gets them at its next apply. */
const LATER: readonly (keyof NodeMaps)[] = ['config', 'tables', 'flows', 'flowsLost'];
/**
 * Pins of maps the programs no longer use (the ring buffer of per-event flow records, before
 * flows were aggregated in the kernel): removed when a node is opened, once its programs are
 * about to be reloaded against the maps that replace them.
 */
const RETIRED = ['events', 'events_lost'];

/** Symbolic name → map, as Program.load wants it. */
export function programMaps(maps: NodeMaps): Record<string, MapBase> {
  const out: Record<string, MapBase> = {};
  for (const [field, name] of Object.entries(FIELDS) as [keyof NodeMaps, string][]) out[name] = maps[field];
  return out;
}

export function closeNodeMaps(maps: NodeMaps): void {
  for (const field of Object.keys(FIELDS) as (keyof NodeMaps)[]) maps[field].close();
}

export function mapPinPath(nodeDir: string, symbolic: string): string {
  return join(nodeDir, 'maps', symbolic);
}

/**
 * Reopens every map from its pin; undefined when any is missing (a first apply). Maps a newer
 * version added (LATER) are created and pinned when absent, so a node applied by an older version
 * keeps its conntrack table and counters (its programs are reloaded: the map ids changed); pins
 * of RETIRED maps are removed (the old programs hold those maps until they are replaced). A map
 * pinned by a version with another key or value layout (IPv6 widened the addresses) is replaced
 * by an empty one under the same pin, its name added to `replaced`: the apply fills sets again;
 * conntrack entries and counters of that map start over (the old programs keep the old map
 * until the swap).
 */
export function openPinnedMaps(nodeDir: string, replaced: string[] = []): NodeMaps | undefined {
  const path = (name: string): string => mapPinPath(nodeDir, name);
  const required = (Object.entries(FIELDS) as [keyof NodeMaps, string][])
    .filter(([field]) => !LATER.includes(field))
    .map(([, name]) => name);
  if (required.some((name) => !existsSync(path(name)))) return undefined;
  const s = MAP_SPECS;
  const opened: MapBase[] = [];
  const track = <M extends MapBase>(m: M): M => {
    opened.push(m);
    return m;
  };
  const pinNew = <M extends MapBase>(name: string, create: () => M): M => {
    const m = track(create());
    m.pin(path(name));
    return m;
  };
  const orCreate = <M extends MapBase>(name: string, open: () => M, create: () => M): M => {
    if (!existsSync(path(name))) return pinNew(name, create);
    try {
      return track(open());
    } catch (e) {
      if (!(e instanceof MapShapeError)) throw e;
      rmSync(path(name));
      replaced.push(name);
      return pinNew(name, create);
    }
  };
  const plainMap = <K, V>(name: string, spec: PlainSpec<K, V>, capacity?: number): BpfMap<K, V> =>
    orCreate(
      name,
      () => BpfMap.fromPin(path(name), spec.key, spec.value),
      () => plain(spec, name, capacity),
    );
  const perCpuMap = <K, V>(name: string, spec: PerCpuSpec<K, V>): PerCpuMap<K, V> =>
    orCreate(
      name,
      () => PerCpuMap.fromPin(path(name), spec.key, spec.value),
      () => perCpu(spec, name),
    );
  try {
    const maps: NodeMaps = {
      ct: plainMap(MAP.conntrack, s[MAP.conntrack]),
      ipSets: plainMap(MAP.ipSets, s[MAP.ipSets]),
      portSets: plainMap(MAP.portSets, s[MAP.portSets]),
      counters: perCpuMap(MAP.counters, s[MAP.counters]),
      pfTrie: plainMap(MAP.prefilter, s[MAP.prefilter], PREFILTER_MIN_CAPACITY),
      pfCounters: perCpuMap(MAP.prefilterCounters, s[MAP.prefilterCounters]),
      config: plainMap(MAP.config, s[MAP.config]),
      flows: perCpuMap(MAP.flows, s[MAP.flows]),
      flowsLost: perCpuMap(MAP.flowsLost, s[MAP.flowsLost]),
      tables: orCreate(
        MAP.tables,
        () => MapOfMaps.fromPin(path(MAP.tables), codecs.u32),
        () => createTablesMap(kernelName(MAP.tables)),
      ),
    };
    for (const name of RETIRED) rmSync(path(name), { force: true });
    return maps;
  } catch (e) {
    for (const m of opened) m.close();
    throw e;
  }
}

/**
 * Writes the node's switches (a map update: the programs read it per packet, none is reloaded).
 * Returns whether they changed.
 */
export function writeNodeConfig(maps: NodeMaps, opts: { flowEvents: boolean }): boolean {
  const flags = opts.flowEvents ? NODE_CONFIG_FLAG.flowEvents : 0;
  if (maps.config.lookup(0)?.flags === flags) return false;
  maps.config.update(0, { flags, pad: 0 });
  return true;
}

/** Aggregates the full `flows` map refused so far (summed over CPUs). */
export function readFlowsLost(map: PerCpuMap<number, bigint>): bigint {
  return (map.lookup(0) ?? []).reduce((sum, v) => sum + v, 0n);
}

export function pinNodeMaps(maps: NodeMaps, nodeDir: string): void {
  for (const [field, name] of Object.entries(FIELDS) as [keyof NodeMaps, string][])
    maps[field].pin(mapPinPath(nodeDir, name));
}

/** Map ids by symbolic name: programs loaded against other ids must be reloaded. */
export function mapIds(maps: NodeMaps): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [field, name] of Object.entries(FIELDS) as [keyof NodeMaps, string][])
    out[name] = maps[field].info.id;
  return out;
}

// ---- contents ---------------------------------------------------------------------------------

/** `set|cidr`, the CIDR in its own family's prefix length (IPv4 keys hold 96 + n). */
export function setEntryId(k: SetLpmKey): string {
  return `${k.set}|${k.addr}/${k.prefixlen - 32 - (isIpv6(k.addr) ? 0 : MAPPED_PREFIX_BITS)}`;
}

export function portEntryId(k: PortSetKey): string {
  return `${k.set}|${k.addr}|${k.port}`;
}

/** Trie keys of one IP set at `index`, both families (IPv4 members mapped: addr16.ts). */
export function ipSetEntries(s: IpSet, index: number): Map<string, SetLpmKey> {
  const out = new Map<string, SetLpmKey>();
  for (const cidr of s.cidrs) {
    const { address, prefixLength } = cidr16(cidr);
    const key = { prefixlen: 32 + prefixLength, set: index, addr: address };
    out.set(setEntryId(key), key);
  }
  return out;
}

/** Keys of one IP-port set at `index`, both families. */
export function ipPortSetEntries(s: IpPortSet, index: number): Map<string, PortSetKey> {
  const out = new Map<string, PortSetKey>();
  for (const m of s.members) {
    const key = { set: index, addr: m.address, port: m.port, pad: 0 };
    out.set(portEntryId(key), key);
  }
  return out;
}

/** Trie keys the node's IP sets need. */
export function desiredSetEntries(view: NodeView, alloc: Allocation): Map<string, SetLpmKey> {
  const out = new Map<string, SetLpmKey>();
  for (const s of view.ipSets) {
    const set = alloc.sets[s.id];
    if (set === undefined) throw new Error(`no index for set ${s.id}`);
    for (const [id, key] of ipSetEntries(s, set)) out.set(id, key);
  }
  return out;
}

export function desiredPortEntries(view: NodeView, alloc: Allocation): Map<string, PortSetKey> {
  const out = new Map<string, PortSetKey>();
  for (const s of view.ipPortSets) {
    const set = alloc.portSets[s.id];
    if (set === undefined) throw new Error(`no index for IP-port set ${s.id}`);
    for (const [id, key] of ipPortSetEntries(s, set)) out.set(id, key);
  }
  return out;
}

export interface Difference<K> {
  add: K[];
  remove: K[];
}

export function difference<K>(
  current: ReadonlyMap<string, K>,
  desired: ReadonlyMap<string, K>,
): Difference<K> {
  return {
    add: [...desired].filter(([id]) => !current.has(id)).map(([, k]) => k),
    remove: [...current].filter(([id]) => !desired.has(id)).map(([, k]) => k),
  };
}

/** Every key of a map, by id. */
export function readKeys<K>(map: BpfMap<K, number>, id: (k: K) => string): Map<string, K> {
  const out = new Map<string, K>();
  for (const key of map.keys()) out.set(id(key), key);
  return out;
}

/** Every entry; batch reads where the map type has them. */
export function readEntries<K, V>(map: BpfMap<K, V>): [K, V][] {
  try {
    return map.lookupBatch();
  } catch {
    return [...map.entries()];
  }
}
