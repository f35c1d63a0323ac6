/**
 * The delta planners behind the backends' shadows (issue 21, "backends apply deltas without
 * reading everything back"): unchanged IR objects are skipped by identity without looking inside,
 * changed ones are compared by content, and what a shadow computes of the maps' contents equals
 * what a read of the same contents gives, in any order.
 */
import { describe, expect, it } from 'vitest';
import { codecs } from '../../src/bpf/index.js';
import { ContentSum, TypedContentSum } from '../../src/dataplane/ebpf/content-sum.js';
import { setLpmKey, type SetLpmKey } from '../../src/dataplane/ebpf/layout.js';
import { ipSetEntries, setEntryId } from '../../src/dataplane/ebpf/maps.js';
import {
  planMemberDelta,
  type MemberShadow,
  type WantedMembers,
} from '../../src/dataplane/ebpf/node-shadow.js';
import {
  advanceServicesShadow,
  emptyServicesShadow,
  sumsAfter,
} from '../../src/dataplane/ebpf/services-shadow.js';
import { backendKey, backendValue, svcKey, svcValue } from '../../src/dataplane/ebpf/services-layout.js';
import {
  desiredServices,
  planServiceDelta,
  planSize,
  svcKeyOf,
} from '../../src/dataplane/ebpf/services-sync.js';
import { diffPlan, kernelStateAfter } from '../../src/dataplane/iptables/diff.js';
import type { NodePlan } from '../../src/dataplane/iptables/plan.js';
import type { IR, IpSet, ServicePortTable } from '../../src/ir/types.js';

function ipSet(id: string, cidrs: string[]): IpSet {
  return { id, description: id, cidrs };
}

function wanted(index: number, set: IpSet, looked: string[] = []): WantedMembers<SetLpmKey> {
  return {
    index,
    source: set,
    entries: () => {
      looked.push(set.id);
      return ipSetEntries(set, index);
    },
  };
}

function shadowOf(...sets: [number, IpSet][]): Map<number, MemberShadow<SetLpmKey>> {
  return new Map(sets.map(([index, s]) => [index, { source: s, entries: ipSetEntries(s, index) }]));
}

const ids = (keys: readonly SetLpmKey[]): string[] => keys.map(setEntryId);

describe('eBPF set members by delta from the shadow', () => {
  const a = ipSet('a', ['198.18.0.1/32', '198.18.0.2/32']);
  const b = ipSet('b', ['198.18.1.0/24']);

  it('skips a set that is the same object at the same index without computing its members', () => {
    const looked: string[] = [];
    const d = planMemberDelta(shadowOf([1, a], [2, b]), [wanted(1, a, looked), wanted(2, b, looked)]);
    expect(looked).toEqual([]);
    expect(d.add).toEqual([]);
    expect(d.remove).toEqual([]);
  });

  it('writes only the members that differ when a set changed (a new object)', () => {
    const a2 = ipSet('a', ['198.18.0.2/32', '198.18.0.3/32']);
    const d = planMemberDelta(shadowOf([1, a], [2, b]), [wanted(1, a2), wanted(2, b)]);
    expect(ids(d.add)).toEqual(['1|198.18.0.3/32']);
    expect(ids(d.remove)).toEqual(['1|198.18.0.1/32']);
    expect(d.next.get(1)?.source).toBe(a2);
  });

  it('an equal set as another object writes nothing; a set that left loses all its members', () => {
    const same = ipSet('a', [...a.cidrs]);
    const d = planMemberDelta(shadowOf([1, a], [2, b]), [wanted(1, same)]);
    expect(d.add).toEqual([]);
    expect(ids(d.remove)).toEqual(['2|198.18.1.0/24']);
    expect([...d.next.keys()]).toEqual([1]);
  });

  it('a shadow read from the kernel (no source) is compared by content', () => {
    const read = new Map([[1, { source: undefined, entries: ipSetEntries(a, 1) }]]);
    const d = planMemberDelta(read, [wanted(1, a)]);
    expect(d.add).toEqual([]);
    expect(d.remove).toEqual([]);
  });
});

describe('content sums', () => {
  const key = (set: number, addr: string): SetLpmKey => ({ prefixlen: 160, set, addr });

  it('do not depend on the order elements are added in, and removing undoes adding', () => {
    const one = new TypedContentSum(setLpmKey, codecs.u32);
    const two = new TypedContentSum(setLpmKey, codecs.u32);
    const keys = Array.from({ length: 50 }, (_, i) => key(1 + (i % 3), `198.18.0.${i}`));
    for (const k of keys) one.add(k, 1);
    for (const k of [...keys].reverse()) two.add(k, 1);
    expect(one.sum.hex()).toBe(two.sum.hex());
    const extra = key(9, '198.19.200.1');
    one.add(extra, 1);
    expect(one.sum.hex()).not.toBe(two.sum.hex());
    one.remove(extra, 1);
    expect(one.sum.hex()).toBe(two.sum.hex());
  });

  it('tell a changed value apart', () => {
    const one = new TypedContentSum(setLpmKey, codecs.u32);
    const two = new TypedContentSum(setLpmKey, codecs.u32);
    one.add(key(1, '198.18.0.1'), 1);
    two.add(key(1, '198.18.0.1'), 0);
    expect(one.sum.hex()).not.toBe(two.sum.hex());
    expect(new ContentSum().hex()).toBe('0'.repeat(32));
  });
});

describe('eBPF service maps by delta from the shadow', () => {
  const table = (i: number, backend = i % 500): ServicePortTable => ({
    id: `b/s${i}:80/TCP`,
    service: `b/s${i}`,
    address: `198.19.${i >> 8}.${i & 0xff}`,
    port: 80,
    protocol: 'TCP',
    affinity: { mode: 'None' },
    backends: [
      { endpoint: `b/p${backend}`, address: `198.18.${backend >> 7}.${(backend & 0x7f) + 2}`, port: 8080 },
    ],
  });
  const ir = (services: ServicePortTable[]): IR => ({ services }) as unknown as IR;
  const services = Array.from({ length: 1000 }, (_, i) => table(i));

  it('one endpoint change among 1000 services looks into that service only and writes one backend', () => {
    const shadow = emptyServicesShadow();
    advanceServicesShadow(shadow, planServiceDelta(shadow.state, desiredServices(ir(services))));
    const changed = services.map((t, i) => (i === 7 ? table(7, 600) : t));
    const plan = planServiceDelta(shadow.state, desiredServices(ir(changed)));
    expect(plan.sources.map(([, p]) => p.id)).toEqual(['b/s7:80/TCP']);
    expect(planSize(plan)).toBe(1);
    expect(plan.backendWrites.map(([, v]) => v.addr)).toEqual(['198.18.4.90']);
  });

  it('an equal IR of new objects writes nothing; a service that leaves is deleted with its backends', () => {
    const shadow = emptyServicesShadow();
    advanceServicesShadow(shadow, planServiceDelta(shadow.state, desiredServices(ir(services))));
    const copies = services.map((t) => ({ ...t, backends: t.backends.map((b) => ({ ...b })) }));
    expect(planSize(planServiceDelta(shadow.state, desiredServices(ir(copies))))).toBe(0);
    const fewer = planServiceDelta(shadow.state, desiredServices(ir(services.slice(1))));
    // The service entry, its VIP's marker and its one backend slot.
    expect(fewer.serviceDeletes).toHaveLength(2);
    expect(fewer.backendDeletes).toHaveLength(1);
  });

  it("the shadow's sums follow its writes: they equal the sums of the maps' final contents", () => {
    const shadow = emptyServicesShadow();
    advanceServicesShadow(shadow, planServiceDelta(shadow.state, desiredServices(ir(services.slice(0, 50)))));
    const next = desiredServices(
      ir([...services.slice(10, 50).map((t, i) => (i === 3 ? table(13, 77) : t)), table(2000)]),
    );
    const plan = planServiceDelta(shadow.state, next);
    const predicted = sumsAfter(shadow, plan);
    advanceServicesShadow(shadow, plan);
    const svc = new TypedContentSum(svcKey, svcValue);
    for (const [kid, value] of shadow.state.services) svc.add(svcKeyOf(kid), value);
    const be = new TypedContentSum(backendKey, backendValue);
    for (const [id, slots] of shadow.state.slots)
      slots.forEach((v, slot) => {
        if (v) be.add({ id, slot }, v);
      });
    expect(predicted.services.hex()).toBe(svc.sum.hex());
    expect(predicted.backends.hex()).toBe(be.sum.hex());
    expect(shadow.services.hex()).toBe(svc.sum.hex());
  });
});

describe('iptables: the kernel as a plan leaves it', () => {
  const plan = (members: string[]): NodePlan => ({
    node: 'n1',
    sets: [{ name: 'sy-a', irId: 'a', type: 'hash:net', family: 4, members, description: 'a' }],
    tables: [
      {
        family: 4,
        table: 'filter',
        chains: [{ name: 'SY-FORWARD', rules: ['-m set --match-set sy-a src -j ACCEPT'] }],
        jumps: [{ builtin: 'FORWARD', rule: '-j SY-FORWARD' }],
      },
    ],
    fallbacks: [],
  });

  it('diffs to nothing against itself, and to the one changed set when a member changes', () => {
    const applied = plan(['198.18.0.1/32']);
    const none = diffPlan(applied, applied, kernelStateAfter(applied));
    expect(none.sets).toEqual([]);
    expect(none.tables).toEqual([]);
    expect(none.obsoleteSets).toEqual([]);
    const next = diffPlan(plan(['198.18.0.2/32']), applied, kernelStateAfter(applied));
    // Changed in place, member by member (the kernel's set has the same shape).
    expect(next.sets).toEqual([]);
    expect(next.deltas.map((d) => [d.set.name, d.add, d.del])).toEqual([
      ['sy-a', ['198.18.0.2/32'], ['198.18.0.1/32']],
    ]);
    expect(next.missingSets.size).toBe(0);
    expect(next.tables).toEqual([]);
  });
});
