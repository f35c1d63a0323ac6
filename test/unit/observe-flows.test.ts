/**
 * FlowTable: kernel events (verdicts, conntrack totals, process context) → bounded flow records.
 * Time is controlled through the `now` option; event times are explicit.
 */
import { describe, expect, it } from 'vitest';
import type {
  ConnectionEvent,
  FlowCountsEvent,
  ProcessEvent,
  Verdict,
  VerdictEvent,
} from '../../src/dataplane/events.js';
import { FlowTable, type Flow, type FlowTableOptions } from '../../src/observe/flows.js';

const T0 = Date.UTC(2025, 0, 1, 12, 0, 0);

interface Tuple {
  protocol?: number;
  src?: string;
  sport?: number;
  dst?: string;
  dport?: number;
}

function tuple(t: Tuple = {}): Required<Tuple> {
  return {
    protocol: t.protocol ?? 6,
    src: t.src ?? '198.18.1.1',
    sport: t.sport ?? 40000,
    dst: t.dst ?? '198.18.1.2',
    dport: t.dport ?? 5432,
  };
}

function verdict(
  over: Partial<Omit<VerdictEvent, 'kind'>> & { verdict?: Verdict } = {},
  t: Tuple = {},
): VerdictEvent {
  return {
    kind: 'verdict',
    time: T0,
    verdict: 'allow',
    rule: 'np:shop/db-allow-web/ingress/0',
    endpoint: 'shop/db',
    direction: 'ingress',
    bytes: 60,
    ...tuple(t),
    ...over,
  };
}

function connection(packets: number, bytes: number, t: Tuple = {}, time = T0 + 5000): ConnectionEvent {
  return { kind: 'connection', time, phase: 'update', packets, bytes, ...tuple(t) };
}

function processEvent(over: Partial<Omit<ProcessEvent, 'kind'>> = {}, t: Tuple = {}): ProcessEvent {
  return { kind: 'process', time: T0, pid: 4242, comm: 'curl', cgroupId: '777', ...tuple(t), ...over };
}

/** A table with a clock the test moves (no rate limiting unless asked). */
function table(opts: Partial<FlowTableOptions> = {}): { flows: FlowTable; clock: { t: number } } {
  const clock = { t: 1_000_000 };
  const flows = new FlowTable({
    node: 'node-2',
    maxEventsPerSecond: 1_000_000,
    now: () => clock.t,
    ...opts,
  });
  return { flows, clock };
}

function only(flows: FlowTable): Flow {
  const all = flows.list();
  expect(all).toHaveLength(1);
  return all[0] as Flow;
}

describe('FlowTable: verdicts', () => {
  it('opens a flow from a verdict with the tuple, node, protocol name, rule and policy', () => {
    const { flows } = table({
      policyOf: (r) =>
        r.startsWith('np:shop/db-allow-web/') ? 'NetworkPolicy shop/db-allow-web' : undefined,
    });
    flows.event(verdict({ bytes: 74 }));
    expect(only(flows)).toMatchObject({
      node: 'node-2',
      protocol: 'TCP',
      src: '198.18.1.1',
      sport: 40000,
      dst: '198.18.1.2',
      dport: 5432,
      direction: 'ingress',
      endpoint: 'shop/db',
      verdict: 'allow',
      rule: 'np:shop/db-allow-web/ingress/0',
      policy: 'NetworkPolicy shop/db-allow-web',
      packets: 1,
      bytes: 74,
      firstSeen: new Date(T0).toISOString(),
      lastSeen: new Date(T0).toISOString(),
    });
  });

  it('names UDP, SCTP and ICMP, and leaves unknown protocols as their number', () => {
    const { flows } = table();
    flows.event(verdict({}, { protocol: 17, dport: 53 }));
    flows.event(verdict({}, { protocol: 132, dport: 9 }));
    flows.event(verdict({}, { protocol: 1, sport: 0, dport: 0 }));
    flows.event(verdict({}, { protocol: 47, sport: 0, dport: 0 }));
    expect(
      flows
        .list()
        .map((f) => f.protocol)
        .sort(),
    ).toEqual(['47', 'ICMP', 'SCTP', 'UDP']);
  });

  it('has no policy for rules policyOf does not know (defaults, fail-closed)', () => {
    const { flows } = table({ policyOf: () => undefined });
    flows.event(verdict({ verdict: 'deny', rule: 'shop/db/ingress/default' }));
    const f = only(flows);
    expect(f.rule).toBe('shop/db/ingress/default');
    expect('policy' in f).toBe(false);
  });

  it('adds up packets and bytes of verdicts with the same verdict, endpoint, direction and 5-tuple', () => {
    const { flows } = table();
    flows.event(verdict({ bytes: 60, time: T0 }));
    flows.event(verdict({ bytes: 1500, time: T0 + 1000 }));
    flows.event(verdict({ bytes: 40, time: T0 + 2000 }));
    const f = only(flows);
    expect(f.packets).toBe(3);
    expect(f.bytes).toBe(1600);
    expect(f.firstSeen).toBe(new Date(T0).toISOString());
    expect(f.lastSeen).toBe(new Date(T0 + 2000).toISOString());
    expect(flows.stats()).toMatchObject({ events: 3, flows: 1, rateLimited: 0, evicted: 0 });
  });

  it('keeps separate flows per verdict, endpoint, direction and each part of the 5-tuple', () => {
    const { flows } = table();
    flows.event(verdict());
    flows.event(verdict({ verdict: 'deny' }));
    flows.event(verdict({ verdict: 'log' }));
    flows.event(verdict({ endpoint: 'shop/web', direction: 'egress' }));
    flows.event(verdict({ direction: 'egress' }));
    flows.event(verdict({}, { protocol: 17 }));
    flows.event(verdict({}, { src: '198.18.1.9' }));
    flows.event(verdict({}, { sport: 40001 }));
    flows.event(verdict({}, { dst: '198.18.1.9' }));
    flows.event(verdict({}, { dport: 5433 }));
    const all = flows.list();
    expect(all).toHaveLength(10);
    expect(new Set(all.map((f) => f.key)).size).toBe(10);
    expect(all.every((f) => f.packets === 1)).toBe(true);
  });

  it('list() returns copies: changing one does not change the table', () => {
    const { flows } = table();
    flows.event(verdict());
    const f = only(flows);
    f.packets = 99;
    expect(only(flows).packets).toBe(1);
  });
});

describe('FlowTable: conntrack totals', () => {
  it('fill in packets and bytes of the allowed flow with the same 5-tuple', () => {
    const { flows } = table();
    flows.event(verdict({ bytes: 60 }));
    flows.event(connection(12, 4800, {}, T0 + 7000));
    const f = only(flows);
    expect(f.packets).toBe(12);
    expect(f.bytes).toBe(4800);
    expect(f.lastSeen).toBe(new Date(T0 + 7000).toISOString());
    expect(f.firstSeen).toBe(new Date(T0).toISOString());
  });

  it('never go below what the verdicts already counted', () => {
    const { flows } = table();
    flows.event(verdict({ bytes: 1000 }));
    flows.event(verdict({ bytes: 1000 }));
    flows.event(verdict({ bytes: 1000 }));
    flows.event(connection(2, 500));
    let f = only(flows);
    expect(f.packets).toBe(3);
    expect(f.bytes).toBe(3000);
    // A larger total later does raise them; a smaller one after that does not lower them.
    flows.event(connection(10, 9000));
    flows.event(connection(5, 100));
    f = only(flows);
    expect(f.packets).toBe(10);
    expect(f.bytes).toBe(9000);
  });

  it('leave denied and logged flows with the same tuple alone', () => {
    const { flows } = table();
    flows.event(verdict({ verdict: 'deny', bytes: 60 }));
    flows.event(verdict({ verdict: 'log', bytes: 60 }));
    flows.event(verdict({ verdict: 'allow', bytes: 60 }));
    flows.event(connection(50, 50_000));
    const byVerdict = Object.fromEntries(flows.list().map((f) => [f.verdict, [f.packets, f.bytes]]));
    expect(byVerdict).toEqual({ deny: [1, 60], log: [1, 60], allow: [50, 50_000] });
  });

  it('fill both sides of a same-node connection (egress and ingress flows of one tuple)', () => {
    const { flows } = table();
    flows.event(verdict({ endpoint: 'shop/web', direction: 'egress', rule: 'shop/web/egress/default' }));
    flows.event(verdict({ endpoint: 'shop/db', direction: 'ingress' }));
    flows.event(connection(8, 800));
    expect(flows.list().map((f) => [f.endpoint, f.packets, f.bytes])).toEqual([
      ['shop/db', 8, 800],
      ['shop/web', 8, 800],
    ]);
  });

  it('change nothing for a tuple without a flow, and the reversed tuple does not match', () => {
    const { flows } = table();
    flows.event(verdict());
    flows.event(connection(20, 2000, { src: '198.18.1.2', sport: 5432, dst: '198.18.1.1', dport: 40000 }));
    flows.event(connection(20, 2000, { dport: 1 }));
    expect(only(flows)).toMatchObject({ packets: 1, bytes: 60 });
    expect(flows.stats().flows).toBe(1);
  });
});

describe('FlowTable: process context', () => {
  const podOfCgroup = (id: string): string | undefined => (id === '777' ? 'shop/web' : undefined);

  it('attaches the process when its event comes after the verdict', () => {
    const { flows } = table({ podOfCgroup });
    flows.event(verdict());
    flows.event(processEvent());
    expect(only(flows).process).toEqual({ pid: 4242, comm: 'curl', cgroupId: '777', pod: 'shop/web' });
  });

  it('attaches the process when its event comes before the verdict', () => {
    const { flows } = table({ podOfCgroup });
    flows.event(processEvent());
    expect(flows.list()).toEqual([]);
    flows.event(verdict());
    expect(only(flows).process).toEqual({ pid: 4242, comm: 'curl', cgroupId: '777', pod: 'shop/web' });
  });

  it('has no pod when the cgroup belongs to none, and only the matching tuple gets the process', () => {
    const { flows } = table({ podOfCgroup });
    flows.event(verdict());
    flows.event(verdict({}, { sport: 40001 }));
    flows.event(processEvent({ cgroupId: '999', comm: 'nc', pid: 7 }));
    // The process event is activity: its flow is now the most recent.
    const [first, other] = flows.list();
    expect(first?.sport).toBe(40000);
    expect(first?.process).toEqual({ pid: 7, comm: 'nc', cgroupId: '999' });
    expect(other?.sport).toBe(40001);
    expect(other?.process).toBeUndefined();
  });

  it('attaches to both flows of a same-node connection', () => {
    const { flows } = table({ podOfCgroup });
    flows.event(verdict({ endpoint: 'shop/web', direction: 'egress' }));
    flows.event(verdict({ endpoint: 'shop/db', direction: 'ingress' }));
    flows.event(processEvent());
    expect(flows.list().map((f) => f.process?.pod)).toEqual(['shop/web', 'shop/web']);
  });
});

describe('FlowTable: rate limit', () => {
  it('takes a burst of one second worth of events, refuses the rest and counts them', () => {
    const { flows, clock } = table({ maxEventsPerSecond: 3 });
    for (let i = 0; i < 5; i++) flows.event(verdict({}, { sport: 40000 + i }));
    expect(flows.stats()).toMatchObject({ events: 3, rateLimited: 2, flows: 3 });
    expect(
      flows
        .list()
        .map((f) => f.sport)
        .sort(),
    ).toEqual([40000, 40001, 40002]);

    // A third of a second later one token is back.
    clock.t += 334;
    flows.event(verdict({}, { sport: 40005 }));
    flows.event(verdict({}, { sport: 40006 }));
    expect(flows.stats()).toMatchObject({ events: 4, rateLimited: 3, flows: 4 });
    expect(flows.list()[0]?.sport).toBe(40005);
  });

  it('refills at the configured rate but never above one second worth', () => {
    const { flows, clock } = table({ maxEventsPerSecond: 2 });
    flows.event(verdict());
    flows.event(verdict());
    flows.event(verdict());
    expect(flows.stats()).toMatchObject({ events: 2, rateLimited: 1 });
    clock.t += 60_000;
    for (let i = 0; i < 5; i++) flows.event(verdict());
    expect(flows.stats()).toMatchObject({ events: 4, rateLimited: 4 });
    expect(only(flows).packets).toBe(4);
  });

  it('applies to every kind of event', () => {
    const { flows } = table({ maxEventsPerSecond: 1 });
    flows.event(verdict());
    flows.event(connection(100, 10_000));
    flows.event(processEvent());
    expect(flows.stats()).toMatchObject({ events: 1, rateLimited: 2 });
    expect(only(flows)).toMatchObject({ packets: 1, bytes: 60 });
    expect(only(flows).process).toBeUndefined();
  });
});

describe('FlowTable: capacity', () => {
  it('evicts the least recently active flow and counts it', () => {
    const { flows } = table({ capacity: 2 });
    flows.event(verdict({}, { sport: 1 }));
    flows.event(verdict({}, { sport: 2 }));
    // sport 1 becomes the most recently active: sport 2 goes when a third flow comes.
    flows.event(verdict({}, { sport: 1 }));
    flows.event(verdict({}, { sport: 3 }));
    expect(flows.list().map((f) => [f.sport, f.packets])).toEqual([
      [3, 1],
      [1, 2],
    ]);
    expect(flows.stats()).toMatchObject({ flows: 2, evicted: 1 });
  });

  it('counts conntrack and process updates as activity', () => {
    const { flows } = table({ capacity: 2 });
    flows.event(verdict({}, { sport: 1 }));
    flows.event(verdict({}, { sport: 2 }));
    flows.event(connection(5, 500, { sport: 1 }));
    flows.event(verdict({}, { sport: 3 }));
    expect(flows.list().map((f) => f.sport)).toEqual([3, 1]);
    flows.event(processEvent({}, { sport: 1 }));
    flows.event(verdict({}, { sport: 4 }));
    expect(flows.list().map((f) => f.sport)).toEqual([4, 1]);
    expect(flows.stats().evicted).toBe(2);
  });

  it('forgets the tuple of an evicted flow: later conntrack totals for it change nothing', () => {
    const { flows } = table({ capacity: 1 });
    flows.event(verdict({}, { sport: 1 }));
    flows.event(verdict({}, { sport: 2 }));
    expect(flows.list().map((f) => f.sport)).toEqual([2]);
    const seen: Flow[] = [];
    flows.subscribe((f) => seen.push(f));
    flows.event(connection(9, 900, { sport: 1 }));
    expect(seen).toEqual([]);
    expect(flows.list().map((f) => [f.sport, f.packets])).toEqual([[2, 1]]);
    // The index entry of the evicted flow is gone too (not just the flow).
    const byTuple = (flows as unknown as { byTuple: Map<string, Set<string>> }).byTuple;
    expect([...byTuple.keys()]).toEqual(['6|198.18.1.1|2|198.18.1.2|5432']);
    // A new verdict for the evicted tuple starts a fresh flow.
    flows.event(verdict({}, { sport: 1 }));
    expect(flows.list().map((f) => [f.sport, f.packets])).toEqual([[1, 1]]);
    expect(flows.stats().evicted).toBe(2);
  });
});

describe('FlowTable: list', () => {
  function populated(): FlowTable {
    const { flows } = table({
      podOfCgroup: (id) => (id === '777' ? 'shop/web' : undefined),
      policyOf: (r) =>
        r.startsWith('np:shop/db-allow-web/')
          ? 'NetworkPolicy shop/db-allow-web'
          : r.startsWith('gp:deny-bad/')
            ? 'GlobalPolicy deny-bad'
            : undefined,
    });
    // 1: allowed into shop/db, opened by a process of shop/web (on another node: endpoint differs)
    flows.event(verdict({}, { sport: 1 }));
    flows.event(processEvent({}, { sport: 1 }));
    // 2: denied into shop/db by the global policy
    flows.event(
      verdict({ verdict: 'deny', rule: 'gp:deny-bad/ingress/0' }, { sport: 2, src: '203.0.113.5' }),
    );
    // 3: denied by shop/db's default
    flows.event(verdict({ verdict: 'deny', rule: 'shop/db/ingress/default' }, { sport: 3 }));
    // 4: shop/web egress, allowed by its default
    flows.event(
      verdict(
        { endpoint: 'shop/web', direction: 'egress', rule: 'shop/web/egress/default' },
        { sport: 4, dst: '198.18.9.9' },
      ),
    );
    return flows;
  }

  it('lists the most recently active first and honours the limit', () => {
    const flows = populated();
    expect(flows.list().map((f) => f.sport)).toEqual([4, 3, 2, 1]);
    expect(flows.list({}, 2).map((f) => f.sport)).toEqual([4, 3]);
    flows.event(verdict({}, { sport: 2, src: '203.0.113.5' }));
    flows.event(
      verdict({ verdict: 'deny', rule: 'gp:deny-bad/ingress/0' }, { sport: 2, src: '203.0.113.5' }),
    );
    expect(flows.list({}, 3).map((f) => [f.sport, f.verdict])).toEqual([
      [2, 'deny'],
      [2, 'allow'],
      [4, 'allow'],
    ]);
  });

  it('filters by verdict', () => {
    const flows = populated();
    expect(flows.list({ verdict: 'deny' }).map((f) => f.sport)).toEqual([3, 2]);
    expect(flows.list({ verdict: 'allow' }).map((f) => f.sport)).toEqual([4, 1]);
    expect(flows.list({ verdict: 'log' })).toEqual([]);
  });

  it("filters by pod: the flow's endpoint or the pod of its process", () => {
    const flows = populated();
    expect(flows.list({ pod: 'shop/db' }).map((f) => f.sport)).toEqual([3, 2, 1]);
    expect(flows.list({ pod: 'shop/web' }).map((f) => f.sport)).toEqual([4, 1]);
    expect(flows.list({ pod: 'shop' })).toEqual([]);
  });

  it('filters by a substring of the policy label or of the rule id', () => {
    const flows = populated();
    expect(flows.list({ policy: 'deny-bad' }).map((f) => f.sport)).toEqual([2]);
    expect(flows.list({ policy: 'GlobalPolicy' }).map((f) => f.sport)).toEqual([2]);
    expect(flows.list({ policy: 'NetworkPolicy shop/' }).map((f) => f.sport)).toEqual([1]);
    expect(flows.list({ policy: '/default' }).map((f) => f.sport)).toEqual([4, 3]);
    expect(flows.list({ policy: 'nothing-like-it' })).toEqual([]);
  });

  it('combines filters and then applies the limit', () => {
    const flows = populated();
    expect(flows.list({ pod: 'shop/db', verdict: 'deny' }).map((f) => f.sport)).toEqual([3, 2]);
    expect(flows.list({ pod: 'shop/db', verdict: 'deny' }, 1).map((f) => f.sport)).toEqual([3]);
    expect(flows.list({ pod: 'shop/web', policy: 'db-allow-web' }).map((f) => f.sport)).toEqual([1]);
  });
});

describe('FlowTable: subscribers and losses', () => {
  it('tells subscribers of created and updated flows until they unsubscribe', () => {
    const { flows } = table();
    const seen: [number, number][] = [];
    const unsubscribe = flows.subscribe((f) => seen.push([f.sport, f.packets]));
    flows.event(verdict({}, { sport: 1 }));
    flows.event(verdict({}, { sport: 1 }));
    flows.event(connection(7, 700, { sport: 1 }));
    flows.event(verdict({}, { sport: 2 }));
    expect(seen).toEqual([
      [1, 1],
      [1, 2],
      [1, 7],
      [2, 1],
    ]);
    unsubscribe();
    flows.event(verdict({}, { sport: 3 }));
    flows.event(verdict({}, { sport: 1 }));
    expect(seen).toHaveLength(4);
    expect(flows.stats().flows).toBe(3);
  });

  it('does not tell subscribers of refused events', () => {
    const { flows } = table({ maxEventsPerSecond: 1 });
    const seen: Flow[] = [];
    flows.subscribe((f) => seen.push(f));
    flows.event(verdict({}, { sport: 1 }));
    flows.event(verdict({}, { sport: 2 }));
    expect(seen.map((f) => f.sport)).toEqual([1]);
  });

  it('accumulates lost events per place', () => {
    const { flows } = table();
    flows.lost(3, 'ring buffer');
    flows.lost(4, 'ring buffer');
    flows.lost(2, 'nflog');
    flows.lost(0, 'conntrack');
    expect(flows.stats().lost).toEqual({ 'ring buffer': 7, nflog: 2 });
    // stats() hands out a copy
    const s = flows.stats();
    s.lost['ring buffer'] = 0;
    expect(flows.stats().lost['ring buffer']).toBe(7);
  });
});

describe('FlowTable: kernel aggregates', () => {
  function counts(over: Partial<Omit<FlowCountsEvent, 'kind'>> = {}, t: Tuple = {}): FlowCountsEvent {
    return {
      kind: 'counts',
      verdict: 'allow',
      rule: 'np:shop/db-allow-web/ingress/0',
      endpoint: 'shop/db',
      direction: 'ingress',
      packets: 10,
      bytes: 1000,
      connections: 2,
      firstSeen: T0,
      lastSeen: T0 + 900,
      ...tuple({ sport: 0, ...t }),
      ...over,
    };
  }

  it('adds the deltas of each drain into one record per aggregate', () => {
    const { flows } = table();
    flows.event(counts());
    flows.event(
      counts({ packets: 5, bytes: 300, connections: 1, firstSeen: T0 + 1000, lastSeen: T0 + 1500 }),
    );
    const [f, ...rest] = flows.list();
    expect(rest).toHaveLength(0);
    expect(f).toMatchObject({ packets: 15, bytes: 1300, connections: 3, sport: 0, verdict: 'allow' });
    expect(f?.firstSeen).toBe(new Date(T0).toISOString());
    expect(f?.lastSeen).toBe(new Date(T0 + 1500).toISOString());
  });

  it('keeps aggregates of different rules, verdicts or ports apart', () => {
    const { flows } = table();
    flows.event(counts());
    flows.event(counts({ rule: 'np:shop/other/ingress/0' }));
    flows.event(counts({ verdict: 'deny', rule: 'shop/db/ingress/default' }));
    flows.event(counts({}, { dport: 80 }));
    expect(flows.list()).toHaveLength(4);
  });

  it('joins a process event without a source port to the aggregate, before or after it', () => {
    const { flows } = table();
    flows.event(processEvent({}, { sport: 0 }));
    flows.event(counts());
    flows.event(counts({}, { dport: 80 }));
    flows.event(processEvent({ pid: 99, comm: 'wrk' }, { sport: 0, dport: 80 }));
    const byPort = new Map(flows.list().map((f) => [f.dport, f]));
    expect(byPort.get(5432)?.process).toMatchObject({ pid: 4242, comm: 'curl' });
    expect(byPort.get(80)?.process).toMatchObject({ pid: 99, comm: 'wrk' });
  });

  it('tells subscribers once per drained aggregate', () => {
    const { flows } = table();
    const seen: Flow[] = [];
    flows.subscribe((f) => seen.push(f));
    flows.event(counts());
    flows.event(counts());
    expect(seen.map((f) => f.connections)).toEqual([2, 4]);
  });
});

describe('FlowTable: process at both ends (socket events)', () => {
  const aggregate = (protocol = 6, dport = 5432): FlowCountsEvent => ({
    kind: 'counts',
    verdict: 'allow',
    rule: 'np:shop/db-allow-web/ingress/0',
    endpoint: 'shop/db',
    direction: 'ingress',
    packets: 4,
    bytes: 400,
    connections: 1,
    firstSeen: T0,
    lastSeen: T0,
    protocol,
    src: '198.18.0.5',
    sport: 0,
    dst: '198.18.0.9',
    dport,
  });
  const socket = (over: Partial<ProcessEvent>): ProcessEvent => ({
    kind: 'process',
    side: 'socket',
    time: T0,
    protocol: 6,
    pid: 1,
    comm: 'x',
    cgroupId: '1',
    src: '',
    sport: 0,
    dst: '',
    dport: 0,
    ...over,
  });
  const pods = (id: string): string | undefined => ({ '11': 'shop/web', '22': 'shop/db' })[id];

  it('puts the client socket at the source and the accepting server at the destination, either order', () => {
    const client = socket({
      src: '198.18.0.5',
      sport: 40000,
      dst: '198.18.0.9',
      dport: 5432,
      pid: 10,
      comm: 'psql',
      cgroupId: '11',
    });
    const server = socket({
      src: '198.18.0.9',
      sport: 5432,
      dst: '198.18.0.5',
      dport: 40000,
      pid: 20,
      comm: 'postgres',
      cgroupId: '22',
    });
    for (const order of [[aggregate(), client, server] as const, [client, server, aggregate()] as const]) {
      const { flows } = table({ podOfCgroup: pods });
      for (const e of order) flows.event(e);
      const f = only(flows);
      expect(f.sourceProcess).toEqual({ pid: 10, comm: 'psql', cgroupId: '11', pod: 'shop/web' });
      expect(f.process).toEqual(f.sourceProcess);
      expect(f.destinationProcess).toEqual({ pid: 20, comm: 'postgres', cgroupId: '22', pod: 'shop/db' });
    }
  });

  it('joins an unconnected UDP receiver to every flow to its address and port', () => {
    const { flows } = table();
    flows.event(socket({ protocol: 17, src: '198.18.0.9', sport: 53, pid: 30, comm: 'dnsd' }));
    flows.event(aggregate(17, 53));
    flows.event({ ...aggregate(17, 53), src: '198.18.0.6' });
    const all = flows.list();
    expect(all).toHaveLength(2);
    for (const f of all) {
      expect(f.destinationProcess).toMatchObject({ pid: 30, comm: 'dnsd' });
      expect(f.sourceProcess).toBeUndefined();
    }
  });

  it('a socket event matching no flow either way attaches to nothing', () => {
    const { flows } = table();
    flows.event(aggregate());
    flows.event(socket({ src: '198.18.0.7', sport: 1, dst: '198.18.0.8', dport: 2 }));
    expect(only(flows).sourceProcess).toBeUndefined();
    expect(only(flows).destinationProcess).toBeUndefined();
  });
});
