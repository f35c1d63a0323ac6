/**
 * The service sync of a few changed tables (planServiceDelta's `only`): random sequences of table
 * changes, each planned from the changed tables alone against the shadow, must leave the maps
 * exactly where a sync of the whole IR would (a full plan afterwards finds nothing to do, and the
 * maps hold what the shadow says), markers of shared VIPs included.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TypedContentSum } from '../../src/dataplane/ebpf/content-sum.js';
import type { BackendValue, SvcKey, SvcValue } from '../../src/dataplane/ebpf/services-layout.js';
import {
  backendKey,
  backendValue,
  SVC_FLAG_VIP,
  svcKey,
  svcValue,
} from '../../src/dataplane/ebpf/services-layout.js';
import { advanceServicesShadow, emptyServicesShadow } from '../../src/dataplane/ebpf/services-shadow.js';
import { withOutsideAddresses } from '../../src/dataplane/ebpf/services-outside.js';
import {
  advanceServiceState,
  desiredServices,
  desiredServicesOf,
  emptyServiceState,
  planServiceDelta,
  planSize,
  svcKeyId,
  svcKeyOf,
  type DesiredServices,
  type ServiceDelta,
  type ServiceState,
} from '../../src/dataplane/ebpf/services-sync.js';
import type { IR, ServicePortTable } from '../../src/ir/types.js';
import { stringCopies } from '../support/heap-snapshot.js';

const NODES: IR['nodes'] = [
  { name: 'node-1', address: '198.19.200.1', externalAddress: '198.19.130.1' },
  { name: 'node-2', address: '198.19.200.2', externalAddress: '198.19.130.2' },
];

/** Tables of services s0…s3, each with ports 80 and 443 (two tables sharing one VIP). */
const tableArb: fc.Arbitrary<ServicePortTable> = fc
  .record({
    service: fc.integer({ min: 0, max: 3 }),
    port: fc.constantFrom(80, 443),
    backends: fc.uniqueArray(fc.integer({ min: 1, max: 6 }), { maxLength: 4 }),
    local: fc.boolean(),
    nodePort: fc.boolean(),
    lb: fc.boolean(),
    affinity: fc.boolean(),
  })
  .map((r) => ({
    id: `ns/s${r.service}:${r.port}/TCP`,
    service: `ns/s${r.service}`,
    address: `198.19.0.${10 + r.service}`,
    port: r.port,
    protocol: 'TCP' as const,
    affinity: r.affinity ? { mode: 'ClientIP' as const, timeoutSeconds: 60 } : { mode: 'None' as const },
    backends: r.backends.map((b) => ({
      endpoint: `ns/p${b}`,
      address: `198.18.0.${b}`,
      port: 8080,
      node: `node-${1 + (b % 2)}`,
    })),
    ...(r.local ? { internalTrafficPolicy: 'Local' as const } : {}),
    // Node ports and load-balancer addresses are the service's own, as in a valid IR.
    ...(r.nodePort ? { nodePort: 30000 + 10 * r.service + (r.port === 443 ? 1 : 0) } : {}),
    ...(r.lb ? { loadBalancerIPs: [`198.19.140.${r.service}`] } : {}),
  }));

/** A set of tables with unique ids, sorted as the IR holds them. */
const tablesArb = fc
  .uniqueArray(tableArb, { selector: (t) => t.id, maxLength: 8 })
  .map((ts) => ts.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)));

function irOf(services: ServicePortTable[]): IR {
  return {
    version: 1,
    nodes: NODES,
    endpoints: [],
    ipSets: [],
    ipPortSets: [],
    ruleSets: [],
    services,
    prefilters: [],
  };
}

function desiredOf(ir: IR, tables?: ServicePortTable[]): DesiredServices {
  return tables
    ? withOutsideAddresses(desiredServicesOf(ir, tables), ir, tables)
    : withOutsideAddresses(desiredServices(ir), ir);
}

/** The kernel's two maps, as a plan written into them leaves them (and the keys, for sums). */
interface Maps {
  services: Map<string, SvcValue>;
  backends: Map<string, BackendValue>;
  keys?: Map<string, SvcKey>;
}

function write(maps: Maps, plan: ServiceDelta): void {
  for (const [k, v] of plan.backendWrites) maps.backends.set(`${k.id}/${k.slot}`, v);
  for (const [k, v] of plan.serviceWrites) {
    maps.services.set(svcKeyId(k), v);
    maps.keys?.set(svcKeyId(k), k);
  }
  for (const k of plan.serviceDeletes) {
    expect(maps.services.has(svcKeyId(k))).toBe(true);
    maps.services.delete(svcKeyId(k));
  }
  for (const k of plan.backendDeletes) {
    expect(maps.backends.has(`${k.id}/${k.slot}`)).toBe(true);
    maps.backends.delete(`${k.id}/${k.slot}`);
  }
}

/** What `state` says the maps hold. */
function stateMaps(state: ServiceState): Maps {
  const backends = new Map<string, BackendValue>();
  for (const [id, slots] of state.slots) slots.forEach((b, slot) => b && backends.set(`${id}/${slot}`, b));
  return {
    services: new Map(state.services),
    backends,
  };
}

/** The content sums (the drift digest's) of what the maps hold, read as the kernel would. */
function sumsOf(maps: Maps): { services: string; backends: string } {
  const services = new TypedContentSum(svcKey, svcValue);
  for (const [kid, v] of maps.services) services.add(maps.keys?.get(kid) as SvcKey, v);
  const backends = new TypedContentSum(backendKey, backendValue);
  for (const [k, v] of maps.backends) {
    const [id, slot] = k.split('/').map(Number) as [number, number];
    backends.add({ id, slot }, v);
  }
  return { services: services.sum.hex(), backends: backends.sum.hex() };
}

/**
 * Every service entry resolved to its backends (ids are the sync's own choice; `anySlots`: and
 * which slot a backend sits in, which stays put across syncs).
 */
function resolved(maps: Maps, anySlots = false): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [kid, v] of maps.services) {
    const backends = Array.from({ length: v.count }, (_, slot) => maps.backends.get(`${v.id}/${slot}`));
    if (anySlots) backends.sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y)));
    out[kid] = { count: v.count, affinity: v.affinity, flags: v.flags, backends };
  }
  return out;
}

describe('eBPF service sync of changed tables', () => {
  it('leaves the maps where a sync of the whole IR would, over random sequences of table changes', () => {
    fc.assert(
      fc.property(tablesArb, fc.array(tablesArb, { minLength: 1, maxLength: 5 }), (first, steps) => {
        const shadow = emptyServicesShadow();
        const state = shadow.state;
        const maps: Maps = { services: new Map(), backends: new Map(), keys: new Map() };
        let ir = irOf(first);
        const initial = planServiceDelta(state, desiredOf(ir));
        write(maps, initial);
        advanceServicesShadow(shadow, initial);
        for (const next of steps) {
          const before = new Map(ir.services.map((t) => [t.id, t]));
          const after = new Map(next.map((t) => [t.id, t]));
          const ids = new Set(
            [...before.keys(), ...after.keys()].filter((id) => before.get(id) !== after.get(id)),
          );
          // Unchanged tables stay the same objects, as the incremental calculation hands them.
          const services = next.map((t) => {
            const was = before.get(t.id);
            return was && JSON.stringify(was) === JSON.stringify(t) ? was : t;
          });
          for (const t of services) if (t === before.get(t.id)) ids.delete(t.id);
          ir = irOf(services);
          const changed = services.filter((t) => ids.has(t.id));
          const plan = planServiceDelta(state, desiredOf(ir, changed), ids);
          write(maps, plan);
          advanceServicesShadow(shadow, plan);
          expect(resolved(maps)).toEqual(resolved(stateMaps(state)));
          // The shadow's sums (what the fingerprint is seeded with) are those of the maps.
          expect({ services: shadow.services.hex(), backends: shadow.backends.hex() }).toEqual(sumsOf(maps));
          expect(shadow.elements).toBe(maps.services.size + maps.backends.size);
          expect(maps.backends).toEqual(stateMaps(state).backends);
          const full = planServiceDelta(state, desiredOf(ir));
          expect(full.serviceWrites.length + full.serviceDeletes.length).toBe(0);
          expect(full.backendWrites.length + full.backendDeletes.length).toBe(0);
          // And the maps equal a fresh sync of the whole IR (ids aside).
          const fresh: Maps = { services: new Map(), backends: new Map() };
          write(fresh, planServiceDelta(emptyServiceState(), desiredOf(ir)));
          expect(resolved(maps, true)).toEqual(resolved(fresh, true));
        }
      }),
      { numRuns: 300 },
    );
  });

  it('gets back the key an entry id was made of (the shadow keeps ids alone)', () => {
    for (const key of [
      { vip: '198.19.0.10', port: 80, proto: 6, node: 0 },
      { vip: '198.19.0.10', port: 0, proto: 0, node: 0 },
      { vip: 'fd00:5957:1::a', port: 65535, proto: 17, node: 0 },
      { vip: 'fd00:5957:1::a', port: 0, proto: 0, node: 0 },
      { vip: 'fd00:5957:1::', port: 443, proto: 132, node: 7 },
      { vip: '::ffff:198.19.0.1', port: 53, proto: 17, node: 255 },
    ])
      expect(svcKeyOf(svcKeyId(key))).toEqual(key);
  });

  it('removes the VIP marker with the last table of its address, and keeps it while another has it', () => {
    const t80: ServicePortTable = {
      id: 'ns/a:80/TCP',
      service: 'ns/a',
      address: '198.19.0.10',
      port: 80,
      protocol: 'TCP',
      affinity: { mode: 'None' },
      backends: [{ endpoint: 'ns/p', address: '198.18.0.2', port: 8080 }],
    };
    const t443 = { ...t80, id: 'ns/a:443/TCP', port: 443 };
    const state = emptyServiceState();
    let ir = irOf([t443, t80]);
    advanceServiceState(state, planServiceDelta(state, desiredOf(ir)));
    const marker = '198.19.0.10';
    expect(state.services.get(marker)?.flags).toBe(SVC_FLAG_VIP);
    ir = irOf([t80]);
    let plan = planServiceDelta(state, desiredOf(ir, []), new Set([t443.id]));
    expect(plan.serviceDeletes.map(svcKeyId)).toEqual(['198.19.0.10:443/6']);
    advanceServiceState(state, plan);
    ir = irOf([]);
    plan = planServiceDelta(state, desiredOf(ir, []), new Set([t80.id]));
    expect(plan.serviceDeletes.map(svcKeyId).sort()).toEqual(['198.19.0.10', '198.19.0.10:80/6']);
    expect(plan.backendDeletes).toHaveLength(1);
  });

  it('keeps one id string per entry, and skips a port it wrote from without planning it', async () => {
    const tables: ServicePortTable[] = Array.from({ length: 5 }, (_, i) => ({
      id: `ns/s${i}:80/TCP`,
      service: `ns/s${i}`,
      address: `198.19.3.${10 + i}`,
      port: 80,
      protocol: 'TCP',
      affinity: { mode: 'None' },
      backends: [{ endpoint: `ns/p${i}`, address: `198.18.0.${2 + i}`, port: 8080 }],
    }));
    const state = emptyServiceState();
    const ir = irOf(tables);
    const desired = desiredOf(ir);
    advanceServiceState(state, planServiceDelta(state, desired));
    // The services, written and table indexes name an entry by one string; they used to hold two.
    const copies = await stringCopies(() => tables.map((t) => `${t.address}:80/6`));
    expect(copies.size).toBe(tables.length);
    for (const [id, n] of copies) expect({ id, copies: n }).toEqual({ id, copies: 1 });
    // A VIP's marker is named by the VIP, the IR table's own string: no string of its own.
    expect(state.services.get(tables[0]?.address ?? '')?.flags).toBe(SVC_FLAG_VIP);
    const vips = await stringCopies(() => tables.map((t) => `${t.address}`));
    for (const [vip, n] of vips) expect({ vip, copies: n }).toEqual({ vip, copies: 1 });
    // The same port objects again: nothing to look into, nothing to write.
    const again = planServiceDelta(state, desired);
    expect(again.sources).toHaveLength(0);
    expect(planSize(again)).toBe(0);
    // An equal port that is another object is compared by content: looked into, still nothing to write.
    const copy = { ...desired, ports: desired.ports.map((p) => ({ ...p })) };
    const compared = planServiceDelta(state, copy);
    expect(compared.sources).toHaveLength(desired.ports.length);
    expect(planSize(compared)).toBe(0);
  });
});
