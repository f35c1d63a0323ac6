/**
 * Service map contents by difference against what the maps hold (ServiceState: the backend's
 * shadow of its writes, or one read of the kernel; never `previous`): services are cluster-wide
 * and every node's apply runs this, so the first brings the maps to the IR and the others find
 * nothing to do (services.ts tells which from the digest the last writer recorded).
 *
 * Order keeps every intermediate state usable by a connect running meanwhile:
 *   1. backend slots (a slot below a service's count is always filled);
 *   2. service entries and VIP markers (new services appear complete; counts grow or shrink);
 *   3. service entries and markers that leave;
 *   4. backend slots beyond the new counts, and those of services that left.
 * Slots are kept stable: a backend that stays keeps its slot, so ClientIP affinity (which checks
 * that the remembered slot still holds the same backend) survives unrelated endpoint changes.
 * A service id that is freed is not reused by the same sync (its old slots are deleted last).
 */
import type { BpfMap } from '../../bpf/index.js';
import type { IR, ServicePortTable } from '../../ir/types.js';
import { IPPROTO } from './layout.js';
import {
  SVC_FLAG_LOCAL,
  SVC_FLAG_VIP,
  SVC_MAX_NODE_INDEX,
  type BackendKey,
  type BackendValue,
  type SvcKey,
  type SvcValue,
} from './services-layout.js';
import { compactAdd, compactGet, compactRemove, type CompactIndex } from '../../util/compact-index.js';
import { exact, flat } from '../../util/intern.js';

export interface DesiredServicePort {
  /** The IR's ServicePortTable id. */
  id: string;
  key: SvcKey;
  /** ClientIP timeout in seconds; 0 = no affinity. */
  affinity: number;
  backends: BackendValue[];
  /** SVC_FLAG_LOCAL for a service entry under internalTrafficPolicy Local; absent: 0. */
  flags?: number;
  /**
   * The ServicePortTable id it comes from, and whether its address is a VIP (DesiredServices.vips
   * holds it because of this port): what lets a sync of a few changed tables find the entries and
   * markers that are theirs (planServiceDelta's `only`). Absent on ports of other maps.
   */
  table?: string;
  marksVip?: boolean;
}

export interface DesiredServices {
  ports: DesiredServicePort[];
  vips: string[];
  /** What could not be honoured, with why. */
  skipped: string[];
}

export interface ServiceMaps {
  services: BpfMap<SvcKey, SvcValue>;
  backends: BpfMap<BackendKey, BackendValue>;
}

export interface CurrentServices {
  services: [SvcKey, SvcValue][];
  backends: [BackendKey, BackendValue][];
}

export interface ServiceSyncPlan {
  backendWrites: [BackendKey, BackendValue][];
  serviceWrites: [SvcKey, SvcValue][];
  serviceDeletes: SvcKey[];
  backendDeletes: BackendKey[];
}

/** A plan, and the desired ports it looked into (not skipped by identity): what a shadow records. */
export interface ServiceDelta extends ServiceSyncPlan {
  sources: [string, DesiredServicePort][];
}

const isIpv4 = (a: string): boolean => !a.includes(':');

export function svcKeyId(k: SvcKey): string {
  // A VIP's marker (port, protocol and node 0) is named by the VIP itself: the string the IR's
  // table already holds, not one more per VIP (10,000 at 10k services, 0.3 MiB).
  if (k.port === 0 && k.proto === 0 && k.node === 0) return k.vip;
  // The shadow keeps one per entry (10,000 at 10k services): flat, not a concatenation's pieces.
  return flat(k.node === 0 ? `${k.vip}:${k.port}/${k.proto}` : `${k.vip}:${k.port}/${k.proto}@${k.node}`);
}

/**
 * The key an svcKeyId was made of (the shadow keeps the ids alone). The VIP may be an IPv6
 * address (colons), never holds `/` or `@`; port, protocol and node are numbers. An id without
 * `/` is a VIP's marker.
 */
export function svcKeyOf(kid: string): SvcKey {
  if (!kid.includes('/')) return { vip: kid, port: 0, proto: 0, node: 0 };
  const at = kid.indexOf('@');
  const node = at < 0 ? 0 : Number(kid.slice(at + 1));
  const rest = at < 0 ? kid : kid.slice(0, at);
  const slash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':', slash);
  return {
    vip: rest.slice(0, colon),
    port: Number(rest.slice(colon + 1, slash)),
    proto: Number(rest.slice(slash + 1)),
    node,
  };
}

function backendId(b: BackendValue): string {
  return `${b.addr}:${b.port}`;
}

function markerKey(vip: string): SvcKey {
  return { vip, port: 0, proto: 0, node: 0 };
}

/**
 * What every VIP marker holds: one object for all of them (the shadow keeps a value per entry,
 * 10,000 markers at 10k services). Never changed in place, like every value the shadow keeps.
 */
const MARKER_VALUE: SvcValue = Object.freeze({ count: 0, id: 0, affinity: 0, flags: SVC_FLAG_VIP });

/**
 * svcKeyId of a VIP's marker. Made anew each time: a memo of them was a 10k-entry map kept for
 * good (0.8 MiB) to save a full sync's string building (a few ms for 10k VIPs); a sync of a few
 * tables asks for a few.
 */
function markerKeyId(vip: string): string {
  return svcKeyId(markerKey(vip));
}

/**
 * Node indices for internalTrafficPolicy Local (svcKey.node, the pod → node map): 1.. in the
 * order of node names, the same in every agent of the scope. Memoized by the IR's node list (an
 * incremental IR hands the same array while nodes do not change).
 */
export type NodeIndex = ReadonlyMap<string, number>;

const nodeIndices = new WeakMap<IR['nodes'], NodeIndex>();

export function nodeIndexOf(nodes: IR['nodes']): NodeIndex {
  let index = nodeIndices.get(nodes);
  if (!index) {
    const names = nodes.map((n) => n.name).sort();
    index = new Map(names.slice(0, SVC_MAX_NODE_INDEX).map((name, i) => [name, i + 1]));
    nodeIndices.set(nodes, index);
  }
  return index;
}

/**
 * What one ServicePortTable wants in the maps, memoized by the table object (and the node index):
 * an incremental IR hands the same object for a service that did not change, and the planner then
 * skips it by identity (see planServiceDelta). Under internalTrafficPolicy Local the service's own
 * entry carries SVC_FLAG_LOCAL and every backend (for clients no agent placed on a node), and each
 * node with backends gets an entry of its own (svcKey.node) holding only those.
 */
const EMPTY_INDEX: NodeIndex = new Map();
/**
 * The memo: a table's ports, and for a Local one the node index they were placed with. The ports
 * of every other table are kept alone (no wrapper per table: 10k of them at 10k services).
 */
const desiredPorts = new WeakMap<
  ServicePortTable,
  DesiredServicePort[] | { index: NodeIndex; ports: DesiredServicePort[] }
>();

function desiredPortsOf(t: ServicePortTable, indexOf: () => NodeIndex): DesiredServicePort[] {
  const known = desiredPorts.get(t);
  const local = t.internalTrafficPolicy === 'Local';
  if (Array.isArray(known)) {
    if (!local) return known;
  } else if (known && local && known.index === indexOf()) return known.ports;
  const index = local ? indexOf() : EMPTY_INDEX;
  const family4 = isIpv4(t.address);
  const seen = new Set<string>();
  const backends: BackendValue[] = [];
  const nodes: (string | undefined)[] = [];
  for (const b of [...t.backends].sort((x, y) =>
    x.endpoint < y.endpoint ? -1 : x.endpoint > y.endpoint ? 1 : 0,
  )) {
    const v = { addr: b.address, port: b.port, pad: 0 };
    // A cluster IP's backends are of its family (a dual-stack Service has a table per family).
    if (isIpv4(b.address) !== family4 || seen.has(backendId(v))) continue;
    seen.add(backendId(v));
    backends.push(v);
    nodes.push(b.node);
  }
  const key = { vip: t.address, port: t.port, proto: IPPROTO[t.protocol], node: 0 };
  const affinity = t.affinity.mode === 'ClientIP' ? Math.max(1, t.affinity.timeoutSeconds) : 0;
  // Kept while the table lives (desiredPorts): backends as an array of their length (util/intern.ts).
  const ports: DesiredServicePort[] = [
    { id: t.id, key, affinity, backends: exact(backends), table: t.id, marksVip: true },
  ];
  if (t.internalTrafficPolicy === 'Local') {
    (ports[0] as DesiredServicePort).flags = SVC_FLAG_LOCAL;
    const byNode = new Map<number, BackendValue[]>();
    backends.forEach((b, i) => {
      const node = index.get(nodes[i] ?? '');
      if (node !== undefined) byNode.set(node, [...(byNode.get(node) ?? []), b]);
    });
    for (const [node, local] of [...byNode].sort((a, b) => a[0] - b[0]))
      ports.push({
        id: `${t.id}#${node}`,
        key: { ...key, node },
        affinity,
        backends: local,
        table: t.id,
        marksVip: true,
      });
  }
  desiredPorts.set(t, local ? { index, ports } : ports);
  return ports;
}

/**
 * What the IR wants in the maps: service ports of both families (16-byte keys, IPv4 mapped) with
 * their backends in a stable order.
 */
export function desiredServices(ir: IR): DesiredServices {
  return desiredServicesOf(ir, ir.services);
}

/** What `tables` of the IR want in the maps (desiredServices of just these tables). */
export function desiredServicesOf(ir: IR, tables: Iterable<ServicePortTable>): DesiredServices {
  const ports: DesiredServicePort[] = [];
  const vips = new Set<string>();
  const skipped: string[] = [];
  let index: NodeIndex | undefined;
  const indexOf = (): NodeIndex => (index ??= nodeIndexOf(ir.nodes));
  for (const t of tables) {
    vips.add(t.address);
    for (const p of desiredPortsOf(t, indexOf)) ports.push(p);
  }
  if (index && ir.nodes.length > SVC_MAX_NODE_INDEX)
    skipped.push(
      `internalTrafficPolicy Local: pods on nodes after the first ${SVC_MAX_NODE_INDEX} (by name) reach every backend`,
    );
  // In first-seen order: sorting 10k addresses on every sync buys nothing (markers are keyed).
  return { ports, vips: [...vips], skipped };
}

export function readServices(maps: ServiceMaps): CurrentServices {
  const all = <K, V>(m: BpfMap<K, V>): [K, V][] => {
    try {
      return m.lookupBatch();
    } catch {
      return [...m.entries()];
    }
  };
  return { services: all(maps.services), backends: all(maps.backends) };
}

/** Backends in their slots after the change: stayers keep their slot, newcomers fill the holes. */
function placeBackends(
  current: (BackendValue | undefined)[],
  desired: readonly BackendValue[],
): BackendValue[] {
  const want = new Map(desired.map((b) => [backendId(b), b]));
  const out: (BackendValue | undefined)[] = Array.from({ length: desired.length });
  const placed = new Set<string>();
  current.forEach((b, slot) => {
    if (b && slot < desired.length && want.has(backendId(b)) && !placed.has(backendId(b))) {
      out[slot] = b;
      placed.add(backendId(b));
    }
  });
  const rest = desired.filter((b) => !placed.has(backendId(b)));
  for (let slot = 0; slot < out.length; slot++) if (!out[slot]) out[slot] = rest.shift();
  return out as BackendValue[];
}

/**
 * What the service maps hold, in the form the planner reads: the shadow of what was written, or
 * one read of the kernel (serviceState).
 */
export interface ServiceState {
  /**
   * Service entries and VIP markers: their values by svcKeyId. The key is not kept beside its id
   * (svcKeyOf gives it back when an entry is deleted): 30,000 key objects and entry pairs fewer
   * at 10k services.
   */
  services: Map<string, SvcValue>;
  /** Backend slots by service id. */
  slots: Map<number, (BackendValue | undefined)[]>;
  /**
   * The desired port each service entry was last written from: that same object again is skipped
   * unread. Not kept the other way round (port → entry): a port's entry is its key's svcKeyId,
   * made again when planned (~5 ms for 10k ports, a full plan's), where a map of 10k ports and
   * its own copies of the ids held ~0.7 MiB for good.
   */
  written: Map<string, DesiredServicePort>;
  /** Service table id → the entries (svcKeyId) written from its ports (DesiredServicePort.table). */
  tables: CompactIndex;
  /** VIP → the entries written from ports that mark it (DesiredServicePort.marksVip). */
  claims: CompactIndex;
  /** No service id above it is in use (entries and slot lists); computed when first needed. */
  maxId?: number;
}

/** A state with nothing in it. */
export function emptyServiceState(): ServiceState {
  return {
    services: new Map(),
    slots: new Map(),
    written: new Map(),
    tables: new Map(),
    claims: new Map(),
  };
}

export function serviceState(current: CurrentServices): ServiceState {
  const slots = new Map<number, (BackendValue | undefined)[]>();
  for (const [k, v] of current.backends) {
    const list = slots.get(k.id) ?? [];
    list[k.slot] = v;
    slots.set(k.id, list);
  }
  return {
    services: new Map(current.services.map(([key, value]) => [svcKeyId(key), value])),
    slots,
    written: new Map(),
    tables: new Map(),
    claims: new Map(),
  };
}

export function planServiceSync(current: CurrentServices, desired: DesiredServices): ServiceSyncPlan {
  const { backendWrites, serviceWrites, serviceDeletes, backendDeletes } = planServiceDelta(
    serviceState(current),
    desired,
  );
  return { backendWrites, serviceWrites, serviceDeletes, backendDeletes };
}

/**
 * The writes that turn `state` into `desired`, without changing `state`. A desired port that is
 * the very object its entry was written from is skipped without looking inside (the common case
 * at scale: an unchanged service); any other is compared by content.
 *
 * `only`: `desired` holds the ports of these service tables alone (desiredServicesOf), and every
 * other table stays as written; then only the entries written from these tables, their slots and
 * the markers of their VIPs are looked at: a change of one service costs that service, not a walk
 * of every entry. It needs a state whose entries were all written from tables (a full sync of
 * desiredServices into it, every port noting its table), which the caller knows.
 */
export function planServiceDelta(
  state: ServiceState,
  desired: DesiredServices,
  only?: ReadonlySet<string>,
): ServiceDelta {
  const plan: ServiceDelta = {
    backendWrites: [],
    serviceWrites: [],
    serviceDeletes: [],
    backendDeletes: [],
    sources: [],
  };
  const have = state.services;
  // Ids in use anywhere stay taken for this sync (collected when the first new service needs one).
  let used: Set<number> | undefined;
  let nextId = 1;
  const freshId = (): number => {
    if (only) {
      // Above every id in use (no walk to find a hole); ids are 32 bits.
      state.maxId ??= highestId(state);
      nextId = Math.max(nextId, state.maxId + 1);
      return nextId++;
    }
    used ??= new Set<number>([...[...have.values()].map((v) => v.id), ...state.slots.keys()]);
    while (used.has(nextId)) nextId++;
    used.add(nextId);
    return nextId;
  };

  // Entries of unchanged ports are found by object identity and their own (hashed) key strings.
  // Keys and ids in use, and how many of them the maps hold: when every entry and slot list of the
  // maps is in use (keys and ids are unique), nothing is deleted and the maps are not walked.
  const wanted: string[] = [];
  const keptIds: number[] = [];
  let entryHits = 0;
  let slotHits = 0;
  const keep = (kid: string, present: boolean): void => {
    wanted.push(kid);
    if (present) entryHits++;
  };
  const keepId = (id: number): void => {
    keptIds.push(id);
    if (state.slots.has(id)) slotHits++;
  };
  for (const p of desired.ports) {
    const kid = svcKeyId(p.key);
    const before = have.get(kid);
    if (before && state.written.get(kid) === p && (before.flags & SVC_FLAG_VIP) === 0) {
      keep(kid, true);
      keepId(before.id);
      continue;
    }
    keep(kid, before !== undefined);
    const existing = before && (before.flags & SVC_FLAG_VIP) === 0 ? before : undefined;
    plan.sources.push([kid, p]);
    const id = existing?.id ?? freshId();
    keepId(id);
    const old = existing ? (state.slots.get(id) ?? []) : [];
    const same =
      old.length === p.backends.length &&
      p.backends.every((b, slot) => {
        const was = old[slot];
        return was !== undefined && was.addr === b.addr && was.port === b.port;
      });
    const placed = same ? p.backends : placeBackends(old, p.backends);
    placed.forEach((b, slot) => {
      const was = old[slot];
      if (!was || backendId(was) !== backendId(b)) plan.backendWrites.push([{ id, slot }, b]);
    });
    const value: SvcValue = { count: placed.length, id, affinity: p.affinity, flags: p.flags ?? 0 };
    if (
      !existing ||
      existing.count !== value.count ||
      existing.affinity !== value.affinity ||
      existing.flags !== value.flags
    )
      plan.serviceWrites.push([p.key, value]);
    old.forEach((b, slot) => {
      if (b && slot >= placed.length) plan.backendDeletes.push({ id, slot });
    });
  }
  if (only) {
    planTablesLeft(state, desired, only, wanted, keptIds, plan);
    return plan;
  }
  for (const vip of desired.vips) {
    const kid = markerKeyId(vip);
    const marker = have.get(kid);
    keep(kid, marker !== undefined);
    if (marker?.flags !== SVC_FLAG_VIP) plan.serviceWrites.push([markerKey(vip), MARKER_VALUE]);
  }
  if (entryHits !== have.size) {
    const inUse = new Set(wanted);
    for (const kid of have.keys()) if (!inUse.has(kid)) plan.serviceDeletes.push(svcKeyOf(kid));
  }
  // Slots of ids no desired service kept: services that left, or leftovers of a crash.
  if (slotHits !== state.slots.size) {
    const inUse = new Set(keptIds);
    for (const [id, slots] of state.slots)
      if (!inUse.has(id))
        slots.forEach((b, slot) => {
          if (b) plan.backendDeletes.push({ id, slot });
        });
  }
  return plan;
}

/** The highest service id in use in `state` (entries and slot lists). */
function highestId(state: ServiceState): number {
  let max = 0;
  for (const value of state.services.values()) if (value.id > max) max = value.id;
  for (const id of state.slots.keys()) if (id > max) max = id;
  return max;
}

/**
 * The rest of a plan of some tables (planServiceDelta's `only`), once their desired ports are
 * planned: the entries they had and no longer want go with their slots, and the marker of a VIP
 * they named goes when no entry claims it any more (or comes when one does).
 */
function planTablesLeft(
  state: ServiceState,
  desired: DesiredServices,
  only: ReadonlySet<string>,
  wanted: readonly string[],
  keptIds: readonly number[],
  plan: ServiceDelta,
): void {
  const had = new Set<string>();
  for (const table of only) for (const kid of compactGet(state.tables, table)) had.add(kid);
  const inUse = new Set(wanted);
  const idsInUse = new Set(keptIds);
  const vips = new Set(desired.vips);
  for (const kid of had) {
    const vip = state.written.get(kid);
    if (vip?.marksVip) vips.add(vip.key.vip);
    if (inUse.has(kid)) continue;
    const entry = state.services.get(kid);
    if (!entry) continue;
    plan.serviceDeletes.push(svcKeyOf(kid));
    if (idsInUse.has(entry.id)) continue;
    (state.slots.get(entry.id) ?? []).forEach((b, slot) => {
      if (b) plan.backendDeletes.push({ id: entry.id, slot });
    });
  }
  const wantedVips = new Set(desired.vips);
  for (const vip of vips) {
    const claimed = wantedVips.has(vip) || compactGet(state.claims, vip).some((kid) => !had.has(kid));
    const marker = state.services.get(markerKeyId(vip));
    if (claimed && marker?.flags !== SVC_FLAG_VIP) plan.serviceWrites.push([markerKey(vip), MARKER_VALUE]);
    else if (!claimed && marker) plan.serviceDeletes.push(markerKey(vip));
  }
}

/** Forgets that entry `kid` was written from `p` (its table and VIP claim). */
function unnote(state: ServiceState, kid: string, p: DesiredServicePort): void {
  if (p.table !== undefined) compactRemove(state.tables, p.table, kid);
  if (p.marksVip) compactRemove(state.claims, p.key.vip, kid);
}

/** Brings `state` to what the maps hold once `plan` is written (a shadow follows its writes). */
export function advanceServiceState(state: ServiceState, plan: ServiceDelta): void {
  const grown = new Set<number>();
  for (const [k, v] of plan.backendWrites) {
    const list = state.slots.get(k.id) ?? [];
    list[k.slot] = v;
    state.slots.set(k.id, list);
    grown.add(k.id);
  }
  // A list grown slot by slot has room for 17 or more (V8); kept for long, each is cut to its length.
  for (const id of grown) state.slots.set(id, exact(state.slots.get(id) as (BackendValue | undefined)[]));
  // One id string per entry for every index that names it (the planner made those of the ports).
  const planned = new Map<string, string>();
  for (const [kid] of plan.sources) planned.set(kid, kid);
  for (const [key, value] of plan.serviceWrites) {
    const kid = svcKeyId(key);
    state.services.set(planned.get(kid) ?? kid, value);
    if (state.maxId !== undefined && value.id > state.maxId) state.maxId = value.id;
  }
  for (const key of plan.serviceDeletes) {
    const kid = svcKeyId(key);
    const source = state.written.get(kid);
    if (source) unnote(state, kid, source);
    state.services.delete(kid);
    state.written.delete(kid);
  }
  for (const k of plan.backendDeletes) {
    const list = state.slots.get(k.id);
    if (!list) continue;
    list[k.slot] = undefined;
    while (list.length > 0 && list[list.length - 1] === undefined) list.pop();
    if (list.length === 0) state.slots.delete(k.id);
  }
  for (const [kid, p] of plan.sources) {
    const old = state.written.get(kid);
    if (old) unnote(state, kid, old);
    state.written.set(kid, p);
    if (p.table !== undefined) compactAdd(state.tables, p.table, kid);
    if (p.marksVip) compactAdd(state.claims, p.key.vip, kid);
  }
}

/**
 * Calls `visit` for each element a plan writes or deletes, with the value the element had before
 * (undefined: none) and after (undefined: deleted); for keeping content sums of the maps.
 */
export function visitPlanElements(
  state: ServiceState,
  plan: ServiceSyncPlan,
  visit: {
    service(key: SvcKey, before: SvcValue | undefined, after: SvcValue | undefined): void;
    backend(key: BackendKey, before: BackendValue | undefined, after: BackendValue | undefined): void;
  },
): void {
  for (const [k, v] of plan.backendWrites) visit.backend(k, state.slots.get(k.id)?.[k.slot], v);
  for (const [k, v] of plan.serviceWrites) visit.service(k, state.services.get(svcKeyId(k)), v);
  for (const k of plan.serviceDeletes) visit.service(k, state.services.get(svcKeyId(k)), undefined);
  for (const k of plan.backendDeletes) visit.backend(k, state.slots.get(k.id)?.[k.slot], undefined);
}

export function planSize(plan: ServiceSyncPlan): number {
  return (
    plan.backendWrites.length +
    plan.serviceWrites.length +
    plan.serviceDeletes.length +
    plan.backendDeletes.length
  );
}

export function applyServiceSync(maps: ServiceMaps, plan: ServiceSyncPlan): void {
  if (plan.backendWrites.length > 0) maps.backends.updateBatch(plan.backendWrites);
  if (plan.serviceWrites.length > 0) maps.services.updateBatch(plan.serviceWrites);
  if (plan.serviceDeletes.length > 0) maps.services.deleteBatch(plan.serviceDeletes);
  if (plan.backendDeletes.length > 0) maps.backends.deleteBatch(plan.backendDeletes);
}
