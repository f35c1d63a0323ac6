/**
 * The backend's shadow of one node's set maps: per set index, the members it wrote and the IR
 * object it wrote them from, and the content sums of both maps (content-sum.ts). An apply diffs
 * the node's sets against it — a set that is the same object as last time is skipped without
 * looking inside, any other is compared by members — and writes only the difference. Built from
 * one read of the kernel when there is none (after an agent restart, a repair, a failed apply).
 */
import type { BpfMap } from '../../bpf/index.js';
import type { IpPortSet, IpSet } from '../../ir/types.js';
import { ContentSum, TypedContentSum } from './content-sum.js';
import type { PortSetKey, SetLpmKey } from './layout.js';
import { ipSetEntries, ipPortSetEntries, portEntryId, setEntryId, type NodeMaps } from './maps.js';
import type { Allocation, NodeView } from './node.js';

/** What one set index holds: its members by id, and the IR set they were written from. */
export interface MemberShadow<K> {
  source: object | undefined;
  entries: Map<string, K>;
}

export interface NodeShadow {
  /** Kernel ids of the maps this is a shadow of: other ids mean the maps were recreated. */
  mapIds: { ipSets: number; portSets: number };
  sets: Map<number, MemberShadow<SetLpmKey>>;
  ports: Map<number, MemberShadow<PortSetKey>>;
  setSum: ContentSum;
  portSum: ContentSum;
}

/** A set the node wants at `index`, its members computed only when needed. */
export interface WantedMembers<K> {
  index: number;
  source: object;
  entries(): Map<string, K>;
}

export interface MemberDelta<K> {
  add: K[];
  remove: K[];
  /** What the map holds once the delta is written. */
  next: Map<number, MemberShadow<K>>;
}

/** Pure: the members to add and remove so that the map holds exactly `wanted`. */
export function planMemberDelta<K>(
  shadow: ReadonlyMap<number, MemberShadow<K>>,
  wanted: readonly WantedMembers<K>[],
): MemberDelta<K> {
  const add: K[] = [];
  const remove: K[] = [];
  const next = new Map<number, MemberShadow<K>>();
  for (const w of wanted) {
    const old = shadow.get(w.index);
    if (old && old.source === w.source) {
      next.set(w.index, old);
      continue;
    }
    const entries = w.entries();
    const before = old?.entries ?? new Map<string, K>();
    for (const [id, k] of entries) if (!before.has(id)) add.push(k);
    for (const [id, k] of before) if (!entries.has(id)) remove.push(k);
    next.set(w.index, { source: w.source, entries });
  }
  for (const [index, old] of shadow) if (!next.has(index)) remove.push(...old.entries.values());
  return { add, remove, next };
}

function wantedSets(view: NodeView, alloc: Allocation): WantedMembers<SetLpmKey>[] {
  return view.ipSets.map((s: IpSet) => {
    const index = alloc.sets[s.id];
    if (index === undefined) throw new Error(`no index for set ${s.id}`);
    return { index, source: s, entries: () => ipSetEntries(s, index) };
  });
}

function wantedPortSets(view: NodeView, alloc: Allocation): WantedMembers<PortSetKey>[] {
  return view.ipPortSets.map((s: IpPortSet) => {
    const index = alloc.portSets[s.id];
    if (index === undefined) throw new Error(`no index for IP-port set ${s.id}`);
    return { index, source: s, entries: () => ipPortSetEntries(s, index) };
  });
}

export interface SetDelta {
  sets: MemberDelta<SetLpmKey>;
  ports: MemberDelta<PortSetKey>;
}

export function planSetDelta(shadow: NodeShadow, view: NodeView, alloc: Allocation): SetDelta {
  return {
    sets: planMemberDelta(shadow.sets, wantedSets(view, alloc)),
    ports: planMemberDelta(shadow.ports, wantedPortSets(view, alloc)),
  };
}

/** Every member is written with the value 1 (layout.ts: membership, no payload). */
const MEMBER = 1;

/**
 * One read of a set map: its members by set index. A member holding another value than ours is
 * left out (and out of the sum): the next delta writes it again.
 */
function readMembers<K extends { set: number }>(
  map: BpfMap<K, number>,
  id: (k: K) => string,
  sum: ContentSum,
): Map<number, MemberShadow<K>> {
  const typed = new TypedContentSum(map.keyCodec, map.valueCodec, sum);
  const out = new Map<number, MemberShadow<K>>();
  for (const [key, value] of map.entries()) {
    if (value !== MEMBER) continue;
    typed.add(key, value);
    let at = out.get(key.set);
    if (!at) out.set(key.set, (at = { source: undefined, entries: new Map() }));
    at.entries.set(id(key), key);
  }
  return out;
}

export function readNodeShadow(maps: NodeMaps): NodeShadow {
  const setSum = new ContentSum();
  const portSum = new ContentSum();
  return {
    mapIds: { ipSets: maps.ipSets.info.id, portSets: maps.portSets.info.id },
    sets: readMembers(maps.ipSets, setEntryId, setSum),
    ports: readMembers(maps.portSets, portEntryId, portSum),
    setSum,
    portSum,
  };
}

/** The shadow of maps just created: empty. */
export function emptyNodeShadow(maps: NodeMaps): NodeShadow {
  return {
    mapIds: { ipSets: maps.ipSets.info.id, portSets: maps.portSets.info.id },
    sets: new Map(),
    ports: new Map(),
    setSum: new ContentSum(),
    portSum: new ContentSum(),
  };
}

/** The shadow if it is one of these maps, else one read of them. */
export function nodeShadowFor(maps: NodeMaps, kept: NodeShadow | undefined): NodeShadow {
  const fits =
    kept && kept.mapIds.ipSets === maps.ipSets.info.id && kept.mapIds.portSets === maps.portSets.info.id;
  return fits ? kept : readNodeShadow(maps);
}

/** The shadow once `delta` is written: new member maps, sums moved by the writes alone. */
export function advanceNodeShadow(shadow: NodeShadow, maps: NodeMaps, delta: SetDelta): NodeShadow {
  const fold = <K>(map: BpfMap<K, number>, sum: ContentSum, d: MemberDelta<K>): ContentSum => {
    const typed = new TypedContentSum(map.keyCodec, map.valueCodec, sum.copy());
    for (const k of d.remove) typed.remove(k, MEMBER);
    for (const k of d.add) typed.add(k, MEMBER);
    return typed.sum;
  };
  return {
    mapIds: shadow.mapIds,
    sets: delta.sets.next,
    ports: delta.ports.next,
    setSum: fold(maps.ipSets, shadow.setSum, delta.sets),
    portSum: fold(maps.portSets, shadow.portSum, delta.ports),
  };
}

/** Members in a map's shadow, to price a first read of the map. */
export function memberCount<K>(members: ReadonlyMap<number, MemberShadow<K>>): number {
  let n = 0;
  for (const m of members.values()) n += m.entries.size;
  return n;
}
