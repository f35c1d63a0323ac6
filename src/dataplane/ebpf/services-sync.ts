/**
 * Service map contents by difference against what the kernel holds (not against `previous`):
 * services are cluster-wide and every node's apply runs this, so the first brings the maps to
 * the IR and the others find nothing to do.
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
import type { IR } from '../../ir/types.js';
import { IPPROTO } from './layout.js';
import {
  SVC_FLAG_VIP,
  type BackendKey,
  type BackendValue,
  type SvcKey,
  type SvcValue,
} from './services-layout.js';

export interface DesiredServicePort {
  /** The IR's ServicePortTable id. */
  id: string;
  key: SvcKey;
  /** ClientIP timeout in seconds; 0 = no affinity. */
  affinity: number;
  backends: BackendValue[];
}

export interface DesiredServices {
  ports: DesiredServicePort[];
  vips: string[];
  /** Tables left out (IPv6 VIPs), with why. */
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

const isIpv4 = (a: string): boolean => !a.includes(':');

export function svcKeyId(k: SvcKey): string {
  return `${k.vip}:${k.port}/${k.proto}`;
}

function backendId(b: BackendValue): string {
  return `${b.addr}:${b.port}`;
}

function markerKey(vip: string): SvcKey {
  return { vip, port: 0, proto: 0, pad: 0 };
}

/** What the IR wants in the maps: IPv4 service ports with their backends in a stable order. */
export function desiredServices(ir: IR): DesiredServices {
  const ports: DesiredServicePort[] = [];
  const vips = new Set<string>();
  const skipped: string[] = [];
  for (const t of ir.services) {
    if (!isIpv4(t.address)) {
      skipped.push(`${t.id}: IPv6 service addresses are not load-balanced by the eBPF backend`);
      continue;
    }
    vips.add(t.address);
    const seen = new Set<string>();
    const backends: BackendValue[] = [];
    for (const b of [...t.backends].sort((x, y) =>
      x.endpoint < y.endpoint ? -1 : x.endpoint > y.endpoint ? 1 : 0,
    )) {
      const v = { addr: b.address, port: b.port, pad: 0 };
      if (!isIpv4(b.address) || seen.has(backendId(v))) continue;
      seen.add(backendId(v));
      backends.push(v);
    }
    ports.push({
      id: t.id,
      key: { vip: t.address, port: t.port, proto: IPPROTO[t.protocol], pad: 0 },
      affinity: t.affinity.mode === 'ClientIP' ? Math.max(1, t.affinity.timeoutSeconds) : 0,
      backends,
    });
  }
  return { ports, vips: [...vips].sort(), skipped };
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

export function planServiceSync(current: CurrentServices, desired: DesiredServices): ServiceSyncPlan {
  const plan: ServiceSyncPlan = {
    backendWrites: [],
    serviceWrites: [],
    serviceDeletes: [],
    backendDeletes: [],
  };
  const have = new Map(current.services.map(([k, v]) => [svcKeyId(k), { key: k, value: v }]));
  const slotsOf = new Map<number, (BackendValue | undefined)[]>();
  for (const [k, v] of current.backends) {
    const slots = slotsOf.get(k.id) ?? [];
    slots[k.slot] = v;
    slotsOf.set(k.id, slots);
  }
  // Ids in use anywhere stay taken for this sync.
  const used = new Set<number>([...current.services.map(([, v]) => v.id), ...slotsOf.keys()]);
  let nextId = 1;
  const freshId = (): number => {
    while (used.has(nextId)) nextId++;
    used.add(nextId);
    return nextId;
  };

  const wanted = new Set<string>();
  for (const p of desired.ports) {
    const kid = svcKeyId(p.key);
    wanted.add(kid);
    const before = have.get(kid);
    const existing = before && before.value.flags === 0 ? before.value : undefined;
    const id = existing?.id ?? freshId();
    const old = existing ? (slotsOf.get(id) ?? []) : [];
    // The common case at scale, an unchanged service, skips the placement's allocations.
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
    const value: SvcValue = { count: placed.length, id, affinity: p.affinity, flags: 0 };
    if (!existing || existing.count !== value.count || existing.affinity !== value.affinity)
      plan.serviceWrites.push([p.key, value]);
    old.forEach((b, slot) => {
      if (b && slot >= placed.length) plan.backendDeletes.push({ id, slot });
    });
    slotsOf.delete(id);
  }
  for (const vip of desired.vips) {
    const key = markerKey(vip);
    wanted.add(svcKeyId(key));
    if (have.get(svcKeyId(key))?.value.flags !== SVC_FLAG_VIP)
      plan.serviceWrites.push([key, { count: 0, id: 0, affinity: 0, flags: SVC_FLAG_VIP }]);
  }
  for (const [kid, { key }] of have) if (!wanted.has(kid)) plan.serviceDeletes.push(key);
  // Slots of ids no desired service kept: services that left, or leftovers of a crash.
  for (const [id, slots] of slotsOf)
    slots.forEach((b, slot) => {
      if (b) plan.backendDeletes.push({ id, slot });
    });
  return plan;
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
