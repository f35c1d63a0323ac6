/**
 * AggregateDrain: running totals of the netfilter backends' counted set elements → per-interval
 * FlowCountsEvent deltas, with established traffic joined to the aggregates that allowed it.
 */
import { describe, expect, it } from 'vitest';
import type { EventSink, FlowCountsEvent } from '../../src/dataplane/events.js';
import {
  AggregateDrain,
  flowRuleTag,
  type CounterSnapshot,
} from '../../src/dataplane/netfilter/aggregates.js';
import type { IR } from '../../src/ir/types.js';

const ALLOW = 'np:shop/db-from-web/ingress/0';
const DEFAULT_DENY = 'shop/db/ingress/default';
const ir = {
  endpoints: [{ id: 'shop/db', node: 'node-1', addresses: ['198.18.0.4'] }],
  ruleSets: [
    {
      endpoint: 'shop/db',
      direction: 'ingress',
      globalRules: [],
      kubernetesRules: [{ id: ALLOW }],
      kubernetesDefault: 'deny',
    },
  ],
} as unknown as IR;

const tuple = { protocol: 6, src: '198.18.0.2', dst: '198.18.0.4', dport: 5432 };

function collect(): { sink: EventSink; events: FlowCountsEvent[]; lost: number[] } {
  const events: FlowCountsEvent[] = [];
  const lost: number[] = [];
  return {
    events,
    lost,
    sink: { event: (e) => e.kind === 'counts' && events.push(e), lost: (n) => lost.push(n) },
  };
}

function snapshot(allowed: number, established: number, denied = 0, full = 0): CounterSnapshot {
  return {
    decisions: [
      { id: 'a', tag: flowRuleTag('allow', ALLOW), ...tuple, packets: allowed, bytes: allowed * 60 },
      ...(denied
        ? [
            {
              id: 'd',
              tag: flowRuleTag('deny', DEFAULT_DENY),
              ...tuple,
              src: '198.18.0.9',
              packets: denied,
              bytes: denied * 60,
            },
          ]
        : []),
    ],
    traffic: [{ id: 't', ...tuple, packets: established, bytes: established * 100 }],
    full,
  };
}

describe('AggregateDrain', () => {
  it('emits the growth of decisions and established traffic as one allowed aggregate', () => {
    const { sink, events } = collect();
    const drain = new AggregateDrain('node-1', () => ir, sink);
    drain.take(snapshot(2, 10), 1000, false);
    expect(events).toHaveLength(0);
    drain.take(snapshot(5, 40), 2000);
    expect(events).toEqual([
      expect.objectContaining({
        verdict: 'allow',
        rule: ALLOW,
        endpoint: 'shop/db',
        direction: 'ingress',
        sport: 0,
        connections: 3,
        packets: 3 + 30,
        bytes: 3 * 60 + 30 * 100,
        firstSeen: 1000,
        lastSeen: 2000,
      }),
    ]);
  });

  it('sends traffic to the aggregate that allowed it after its decision element is gone', () => {
    const { sink, events } = collect();
    const drain = new AggregateDrain('node-1', () => ir, sink);
    drain.take(snapshot(1, 0), 1000);
    drain.take({ decisions: [], traffic: snapshot(0, 7).traffic, full: 0 }, 2000);
    expect(events.map((e) => [e.connections, e.packets])).toEqual([
      [1, 1],
      [0, 7],
    ]);
  });

  it('counts a recreated element from zero, names deny rules, and reports a full set', () => {
    const { sink, events, lost } = collect();
    const drain = new AggregateDrain('node-1', () => ir, sink);
    drain.take(snapshot(4, 0, 0, 1), 1000, false);
    drain.take(snapshot(2, 0, 3, 4), 2000);
    expect(events.map((e) => [e.verdict, e.rule, e.connections])).toEqual([
      ['allow', ALLOW, 2],
      ['deny', DEFAULT_DENY, 3],
    ]);
    expect(lost).toEqual([3]);
  });

  it('adds a tuple’s traffic once to an aggregate that several elements decided (ICMP types)', () => {
    const { sink, events } = collect();
    const drain = new AggregateDrain('node-1', () => ir, sink);
    const icmp = { ...tuple, protocol: 1, dport: 0 };
    const tag = flowRuleTag('allow', ALLOW);
    drain.take(
      {
        decisions: [
          { id: 'echo', tag, ...icmp, packets: 1, bytes: 84 },
          { id: 'timestamp', tag, ...icmp, packets: 1, bytes: 60 },
        ],
        traffic: [{ id: 't', ...icmp, packets: 10, bytes: 840 }],
        full: 0,
      },
      1000,
    );
    expect(events.map((e) => [e.connections, e.packets, e.bytes])).toEqual([[2, 12, 984]]);
  });

  it('skips elements whose tag the running IR does not name', () => {
    const { sink, events } = collect();
    const drain = new AggregateDrain('node-1', () => ir, sink);
    drain.take(
      { decisions: [{ id: 'x', tag: 12345, ...tuple, packets: 9, bytes: 9 }], traffic: [], full: 0 },
      1000,
    );
    expect(events).toHaveLength(0);
  });
});
