/**
 * The generated policy programs on hand-written frames (BPF_PROG_TEST_RUN): what fails closed and
 * is counted, the conntrack state machine (SYN → reply → FIN/RST, expiry, a SYN reusing a closed
 * tuple), ICMP replies and errors, node-originated traffic, flow aggregates (Log rules, allowed
 * connections with their later packets, denied packets, a full map), garbage collection, and programs of 10 to 3000 rules — with their cost per packet.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Assembler, Program, TcAction } from '../../src/bpf/index.js';
import { collectGarbage, monotonicNs } from '../../src/dataplane/ebpf/conntrack.js';
import { mergeCpus } from '../../src/dataplane/ebpf/flow-source.js';
import {
  CT_STATE,
  ctValue,
  FLOW_VERDICT,
  NODE_CONFIG_FLAG,
  type CtKey,
  type CtValue,
  type FlowKey,
  type FlowValue,
} from '../../src/dataplane/ebpf/layout.js';
import { readFlowsLost } from '../../src/dataplane/ebpf/maps.js';
import { slotKey } from '../../src/dataplane/ebpf/node.js';
import { failClosedRuleId } from '../../src/ir/rule-ids.js';
import type { IR, Rule, RuleSet } from '../../src/ir/types.js';
import { describeKernel } from '../support/kernel.js';
import {
  globalPolicy,
  modelOf,
  namespace,
  networkPolicy,
  pod,
  type Manifest,
  compileIR,
} from '../support/manifests.js';
import { OfflineNode, skbContext } from '../../src/dataplane/ebpf/offline-node.js';
import { ethernet, frame, ipPacket, type FrameSpec } from './ebpf-frames.js';

const A = '198.18.0.10';
const B = '198.18.0.11';
const C = '198.18.0.12';

/** x/a, x/b, x/c on one node; x/a's ingress admits x/b on TCP 80 (and UDP 53), x/a's egress is open. */
function cluster(extra: Manifest[] = []): IR {
  return compileIR(
    modelOf([
      namespace('x'),
      pod('x', 'a', { labels: { pod: 'a' }, ip: A, node: 'n1' }),
      pod('x', 'b', { labels: { pod: 'b' }, ip: B, node: 'n1' }),
      pod('x', 'c', { labels: { pod: 'c' }, ip: C, node: 'n1' }),
      networkPolicy('x', 'a-from-b', {
        podSelector: { matchLabels: { pod: 'a' } },
        policyTypes: ['Ingress'],
        ingress: [
          {
            from: [{ podSelector: { matchLabels: { pod: 'b' } } }],
            ports: [
              { port: 80, protocol: 'TCP' },
              { port: 53, protocol: 'UDP' },
            ],
          },
        ],
      }),
      ...extra,
    ]),
  );
}

function counter(h: OfflineNode, endpoint: string, direction: 'ingress' | 'egress', rule: string): number {
  const slot = h.alloc.slots[slotKey({ endpoint, direction, rule })];
  if (slot === undefined) throw new Error(`no slot for ${rule}`);
  return h.maps.counters.lookupSum(slot)?.packets ?? 0;
}

function ctEntries(h: OfflineNode): [CtKey, CtValue][] {
  return [...h.maps.ct.entries()];
}

describeKernel('ebpf: policy programs on crafted frames', () => {
  let h: OfflineNode;

  beforeAll(() => {
    h = new OfflineNode(cluster(), 'n1');
  });
  afterAll(() => h?.close());
  afterEach(() => h.clearConntrack());

  it('fails closed on fragments, malformed and non-IP frames (ARP passes), counting each', () => {
    const failClosed = (reason: string): number =>
      counter(h, 'x/a', 'egress', failClosedRuleId('x/a', 'egress', reason));
    const before = {
      fragment: failClosed('fragment'),
      malformed: failClosed('malformed'),
    };
    const tcp: FrameSpec = { src: A, dst: B, protocol: 'TCP', dport: 80 };
    // An EtherType of IPv6 with no IPv6 header (version 0): malformed.
    expect(h.run('x/a', 'egress', ethernet(0x86dd, Buffer.alloc(60)))).toBe('drop');
    expect(h.run('x/a', 'egress', ethernet(0x0806, Buffer.alloc(28)))).toBe('pass');
    expect(h.run('x/a', 'egress', frame({ ...tcp, moreFragments: true }))).toBe('drop');
    expect(h.run('x/a', 'egress', frame({ ...tcp, fragmentOffset: 10 }))).toBe('drop');
    expect(h.run('x/a', 'egress', ethernet(0x8100, Buffer.alloc(60)))).toBe('drop');
    expect(h.run('x/a', 'egress', frame(tcp).subarray(0, 14 + 20 + 10))).toBe('drop');
    const badVersion = frame(tcp);
    badVersion.writeUInt8(0x65, 14);
    expect(h.run('x/a', 'egress', badVersion)).toBe('drop');
    expect(h.run('x/a', 'egress', Buffer.alloc(14))).toBe('drop');
    expect(failClosed('fragment') - before.fragment).toBe(2);
    expect(failClosed('malformed') - before.malformed).toBe(5);
    // With IP options the same packet is judged normally.
    expect(h.run('x/a', 'egress', frame({ ...tcp, ipOptionWords: 10 }))).toBe('pass');
  });

  it('judges protocols it does not parse by protocol-less rules only', () => {
    // GRE to x/a: x/a's only rule needs TCP or UDP ports, so the default (deny) decides.
    expect(h.run('x/a', 'ingress', frame({ src: B, dst: A, protocol: 47 }))).toBe('drop');
    // x/b has no policy: everything goes.
    expect(h.run('x/b', 'ingress', frame({ src: A, dst: B, protocol: 47 }))).toBe('pass');
  });

  it('tracks TCP: SYN, the answer, FIN, RST; a SYN reusing a closed or established tuple is judged again', () => {
    const syn: FrameSpec = { src: B, dst: A, protocol: 'TCP', sport: 41000, dport: 80, tcpFlags: 0x02 };
    const synAck: FrameSpec = { src: A, dst: B, protocol: 'TCP', sport: 80, dport: 41000, tcpFlags: 0x12 };
    expect(h.run('x/a', 'ingress', frame(syn))).toBe('pass');
    let [entry] = ctEntries(h);
    expect(entry?.[0]).toMatchObject({ saddr: B, daddr: A, sport: 41000, dport: 80, proto: 6, dir: 0 });
    expect(entry?.[1].state).toBe(CT_STATE.synSent);
    expect(h.run('x/a', 'egress', frame(synAck))).toBe('pass');
    [entry] = ctEntries(h);
    expect(entry?.[1]).toMatchObject({ state: CT_STATE.established, flags: 1 });
    expect(h.run('x/a', 'ingress', frame({ ...syn, tcpFlags: 0x11 }))).toBe('pass');
    [entry] = ctEntries(h);
    expect(entry?.[1].state).toBe(CT_STATE.closing);
    expect(h.run('x/a', 'egress', frame({ ...synAck, tcpFlags: 0x14 }))).toBe('pass');
    [entry] = ctEntries(h);
    expect(entry?.[1].state).toBe(CT_STATE.closed);
    expect(Number(entry?.[1].packets)).toBe(4);

    // x/c is not admitted. A closed entry for its tuple passes stragglers but not a new SYN.
    const fromC: FrameSpec = { src: C, dst: A, protocol: 'TCP', sport: 42000, dport: 80, tcpFlags: 0x10 };
    const now = monotonicNs();
    const key: CtKey = { ifindex: 1, dir: 0, proto: 6, pad: 0, saddr: C, daddr: A, sport: 42000, dport: 80 };
    const closed: CtValue = {
      created: now,
      lastSeen: now,
      expires: now + 10_000_000_000n,
      packets: 1n,
      bytes: 60n,
      state: CT_STATE.closed,
      flags: 1,
      pad: 0,
      slot: 0,
    };
    h.maps.ct.update(key, closed);
    expect(h.run('x/a', 'ingress', frame(fromC))).toBe('pass');
    expect(h.run('x/a', 'ingress', frame({ ...fromC, tcpFlags: 0x02 }))).toBe('drop');
    // Nor does an answered, established entry whose close this hook never saw (its link detached
    // while the connection closed): a SYN opens a new connection on the old tuple and is judged.
    h.maps.ct.update(key, { ...closed, state: CT_STATE.established });
    expect(h.run('x/a', 'ingress', frame(fromC))).toBe('pass');
    expect(h.run('x/a', 'ingress', frame({ ...fromC, tcpFlags: 0x02 }))).toBe('drop');
    // An expired entry is as good as none.
    h.maps.ct.update(key, { ...closed, state: CT_STATE.established, expires: now - 1n });
    expect(h.run('x/a', 'ingress', frame(fromC))).toBe('drop');
  });

  it('passes ICMP echo replies and errors of known connections only', () => {
    const ping: FrameSpec = { src: A, dst: C, protocol: 'ICMP', icmpType: 8, icmpId: 777 };
    const pong: FrameSpec = { src: C, dst: A, protocol: 'ICMP', icmpType: 0, icmpId: 777 };
    const invalid = (): number => counter(h, 'x/a', 'ingress', failClosedRuleId('x/a', 'ingress', 'invalid'));
    const before = invalid();
    expect(h.run('x/a', 'ingress', frame(pong))).toBe('drop');
    expect(invalid()).toBe(before + 1);
    expect(h.run('x/a', 'egress', frame(ping))).toBe('pass');
    expect(h.run('x/a', 'ingress', frame(pong))).toBe('pass');
    expect(h.run('x/a', 'ingress', frame({ ...pong, icmpId: 778 }))).toBe('drop');

    // x/a sends UDP to x/c:9999; x/c answers "port unreachable" quoting it: RELATED.
    const udp: FrameSpec = { src: A, dst: C, protocol: 'UDP', sport: 5000, dport: 9999 };
    const unreachable = (quoted: FrameSpec): FrameSpec => ({
      src: C,
      dst: A,
      protocol: 'ICMP',
      icmpType: 3,
      icmpCode: 3,
      icmpId: 0,
      quoted: ipPacket(quoted).subarray(0, 28),
    });
    expect(h.run('x/a', 'ingress', frame(unreachable(udp)))).toBe('drop');
    expect(h.run('x/a', 'egress', frame(udp))).toBe('pass');
    expect(h.run('x/a', 'ingress', frame(unreachable(udp)))).toBe('pass');
    expect(h.run('x/a', 'ingress', frame(unreachable({ ...udp, dport: 9998 })))).toBe('drop');
  });

  it("lets the node's own traffic reach its pods, and the pods answer it", () => {
    const probe: FrameSpec = { src: '198.18.255.1', dst: A, protocol: 'TCP', sport: 43000, dport: 8080 };
    expect(h.run('x/a', 'ingress', frame(probe), 1)).toBe('drop');
    expect(h.run('x/a', 'ingress', frame(probe), 0)).toBe('pass');
    const answer: FrameSpec = {
      src: A,
      dst: '198.18.255.1',
      protocol: 'TCP',
      sport: 8080,
      dport: 43000,
      tcpFlags: 0x12,
    };
    expect(h.run('x/a', 'egress', frame(answer))).toBe('pass');
  });

  it('collects expired entries and entries of hooks that are gone', () => {
    const now = monotonicNs();
    const value = (expires: bigint): CtValue => ({
      created: now,
      lastSeen: now,
      expires,
      packets: 1n,
      bytes: 1n,
      state: CT_STATE.udp,
      flags: 0,
      pad: 0,
      slot: 0,
    });
    const key = (ifindex: number, sport: number): CtKey => ({
      ifindex,
      dir: 1,
      proto: 17,
      pad: 0,
      saddr: A,
      daddr: B,
      sport,
      dport: 53,
    });
    h.maps.ct.update(key(1, 1), value(now + 60_000_000_000n));
    h.maps.ct.update(key(1, 2), value(now - 1n));
    h.maps.ct.update(key(99, 3), value(now + 60_000_000_000n));
    expect(collectGarbage(h.maps.ct, new Set([1]))).toEqual({ scanned: 3, expired: 1, orphaned: 1 });
    expect(ctEntries(h).map(([k]) => k.sport)).toEqual([1]);
    expect(ctValue.size).toBe(48);
  });
});

/** The node's flow aggregates, drained (lookup and delete), CPUs merged, slots named by rule id. */
function drainAggregates(
  h: OfflineNode,
): (Omit<FlowKey, 'slot' | 'pad' | 'pad2'> & FlowValue & { rule: string })[] {
  const rules = new Map(Object.entries(h.alloc.slots).map(([key, slot]) => [slot, key.split('|')[2] ?? '']));
  return h.maps.flows.lookupAndDeleteBatch().map(([k, values]) => {
    const { slot, pad, pad2, ...key } = k;
    void pad;
    void pad2;
    return { ...key, ...mergeCpus(values), rule: rules.get(slot) ?? `slot ${slot}` };
  });
}

function flowsLost(h: OfflineNode): number {
  return Number(readFlowsLost(h.maps.flowsLost));
}

function setFlows(h: OfflineNode, on: boolean): void {
  h.maps.config.update(0, { flags: on ? NODE_CONFIG_FLAG.flowEvents : 0, pad: 0 });
}

describeKernel('ebpf: flow aggregates', () => {
  it('Log rules add every packet they match to their aggregate, with flows on or off', () => {
    const ir = cluster([
      globalPolicy('audit', {
        order: 1,
        selector: { matchLabels: { pod: 'a' } },
        types: ['Ingress'],
        ingress: [{ action: 'Log', protocol: 'TCP' }, { action: 'Pass' }],
      }),
    ]);
    const h = new OfflineNode(ir, 'n1');
    try {
      setFlows(h, false);
      const syn = (src: string, sport: number): Buffer =>
        frame({ src, dst: A, protocol: 'TCP', sport, dport: 80 });
      expect(h.run('x/a', 'ingress', syn(B, 40001))).toBe('pass');
      expect(h.run('x/a', 'ingress', syn(C, 40002))).toBe('drop');
      // A retransmitted SYN of the denied connection: logged again, a second attempt.
      expect(h.run('x/a', 'ingress', syn(C, 40002))).toBe('drop');
      expect(
        h.run('x/a', 'ingress', frame({ src: C, dst: A, protocol: 'UDP', sport: 40003, dport: 53 })),
      ).toBe('drop');
      const logged = drainAggregates(h).sort((x, y) => x.saddr.localeCompare(y.saddr));
      const len = syn(B, 1).length;
      // Flows off: the Log rule's aggregates only (it is policy), none for the allow or the denies.
      expect(logged).toMatchObject([
        { rule: 'gp:audit/ingress/0', verdict: FLOW_VERDICT.log, saddr: B, daddr: A, dport: 80, proto: 6 },
        { rule: 'gp:audit/ingress/0', verdict: FLOW_VERDICT.log, saddr: C, daddr: A, dport: 80, proto: 6 },
      ]);
      expect(logged.map((a) => [a.packets, a.bytes, a.connections])).toEqual([
        [1, len, 1],
        [2, 2 * len, 2],
      ]);
      expect(logged.every((a) => a.first > 0 && a.last >= a.first)).toBe(true);
    } finally {
      h.close();
    }
  });

  it("adds an allowed connection's packets in its original direction to the deciding rule's aggregate", () => {
    const ir = cluster();
    const ruleId = ir.ruleSets
      .find((rs) => rs.endpoint === 'x/a' && rs.direction === 'ingress')
      ?.kubernetesRules.find((r) => r.protocol === 'TCP')?.id as string;
    const h = new OfflineNode(ir, 'n1');
    try {
      setFlows(h, true);
      const rule = h.alloc.slots[slotKey({ endpoint: 'x/a', direction: 'ingress', rule: ruleId })];
      expect(rule).toBeDefined();
      const out = (flags: number, payload = 0): Buffer =>
        frame({
          src: B,
          dst: A,
          protocol: 'TCP',
          sport: 41000,
          dport: 80,
          tcpFlags: flags,
          payload: Buffer.alloc(payload),
        });
      const back = (flags: number): Buffer =>
        frame({ src: A, dst: B, protocol: 'TCP', sport: 80, dport: 41000, tcpFlags: flags });
      const original = [out(0x02), out(0x10), out(0x18, 300), out(0x18, 1000), out(0x11)];
      const replies = [back(0x12), back(0x18), back(0x11)];
      expect(h.run('x/a', 'ingress', original[0] as Buffer)).toBe('pass');
      expect(h.run('x/a', 'egress', replies[0] as Buffer)).toBe('pass');
      for (const f of original.slice(1)) expect(h.run('x/a', 'ingress', f)).toBe('pass');
      for (const f of replies.slice(1)) expect(h.run('x/a', 'egress', f)).toBe('pass');

      const aggregates = drainAggregates(h);
      // One aggregate for the hook, rule and tuple without the source port; replies add nothing.
      expect(aggregates).toHaveLength(1);
      const [agg] = aggregates;
      const bytes = (fs: Buffer[]): number => fs.reduce((n, f) => n + f.length, 0);
      expect(agg).toMatchObject({
        rule: ruleId,
        verdict: FLOW_VERDICT.allow,
        saddr: B,
        daddr: A,
        dport: 80,
        proto: 6,
        dir: 0,
        packets: original.length,
        bytes: bytes(original),
        connections: 1,
      });
      // The conntrack entry counts both directions and names the rule.
      const [[, ct] = []] = ctEntries(h);
      expect(ct).toMatchObject({ packets: BigInt(original.length + replies.length), slot: rule });
      expect(Number(ct?.bytes)).toBe(bytes(original) + bytes(replies));

      // Drained since: the next packet of the connection starts the aggregate afresh, without a connection.
      expect(h.run('x/a', 'ingress', out(0x10))).toBe('pass');
      expect(drainAggregates(h)).toMatchObject([{ packets: 1, bytes: out(0x10).length, connections: 0 }]);
      // Flows off: the established path leaves the map alone.
      setFlows(h, false);
      expect(h.run('x/a', 'ingress', out(0x10))).toBe('pass');
      expect(drainAggregates(h)).toEqual([]);
    } finally {
      h.close();
    }
  });

  it('adds dropped packets to the deny aggregate, counting the ones that would open a connection', () => {
    const h = new OfflineNode(cluster(), 'n1');
    try {
      setFlows(h, true);
      const fromC = (flags: number, sport: number): Buffer =>
        frame({ src: C, dst: A, protocol: 'TCP', sport, dport: 80, tcpFlags: flags });
      // Two SYNs (a retransmission looks like a new attempt), a stray ACK, a RST, another port's SYN.
      for (const f of [fromC(0x02, 42000), fromC(0x02, 42000), fromC(0x10, 42001), fromC(0x04, 42002)])
        expect(h.run('x/a', 'ingress', f)).toBe('drop');
      expect(h.run('x/a', 'ingress', frame({ src: C, dst: A, protocol: 'TCP', dport: 81 }))).toBe('drop');
      // ICMP: no port in the aggregate; every packet of another protocol would open a connection.
      expect(h.run('x/a', 'ingress', frame({ src: C, dst: A, protocol: 'ICMP', icmpId: 99 }))).toBe('drop');
      // A frame that fails closed before its addresses are read: the fail-closed slot, no addresses, no connection.
      expect(h.run('x/a', 'ingress', ethernet(0x86dd, Buffer.alloc(60)))).toBe('drop');
      const byKey = new Map(drainAggregates(h).map((a) => [`${a.rule} ${a.saddr} ${a.proto} ${a.dport}`, a]));
      expect(byKey.get(`x/a/ingress/default ${C} 6 80`)).toMatchObject({
        verdict: FLOW_VERDICT.deny,
        packets: 4,
        connections: 2,
        bytes: 4 * fromC(0x02, 1).length,
      });
      expect(byKey.get(`x/a/ingress/default ${C} 6 81`)).toMatchObject({ packets: 1, connections: 1 });
      expect(byKey.get(`x/a/ingress/default ${C} 1 0`)).toMatchObject({ packets: 1, connections: 1 });
      expect(byKey.get(`${failClosedRuleId('x/a', 'ingress', 'malformed')} :: 0 0`)).toMatchObject({
        verdict: FLOW_VERDICT.deny,
        packets: 1,
        connections: 0,
        bytes: 74,
      });
      expect(byKey.size).toBe(4);
      // The per-rule counter saw the same dropped packets.
      expect(counter(h, 'x/a', 'ingress', 'x/a/ingress/default')).toBe(6);
    } finally {
      h.close();
    }
  });

  it('counts what a full map refuses, and records again once drained', () => {
    const h = new OfflineNode(cluster(), 'n1', {
      counterSlots: 1024,
      conntrackCapacity: 1024,
      flowCapacity: 4,
    });
    try {
      setFlows(h, true);
      const to = (dport: number): Buffer => frame({ src: C, dst: A, protocol: 'UDP', dport });
      for (let port = 1000; port < 1006; port++) expect(h.run('x/a', 'ingress', to(port))).toBe('drop');
      // Existing aggregates keep counting while the map is full.
      expect(h.run('x/a', 'ingress', to(1000))).toBe('drop');
      expect(flowsLost(h)).toBe(2);
      const kept = drainAggregates(h);
      expect(kept).toHaveLength(4);
      expect(kept.reduce((n, a) => n + a.packets, 0)).toBe(5);
      expect(h.run('x/a', 'ingress', to(1005))).toBe('drop');
      expect(drainAggregates(h)).toMatchObject([{ dport: 1005, packets: 1 }]);
      expect(flowsLost(h)).toBe(2);
    } finally {
      h.close();
    }
  });

  it("records nothing for the node's own connections to its pods", () => {
    const h = new OfflineNode(cluster(), 'n1');
    try {
      setFlows(h, true);
      const probe: FrameSpec = { src: '198.18.255.1', dst: A, protocol: 'TCP', sport: 43000, dport: 8080 };
      expect(h.run('x/a', 'ingress', frame(probe), 0)).toBe('pass');
      expect(h.run('x/a', 'ingress', frame({ ...probe, tcpFlags: 0x10 }), 0)).toBe('pass');
      expect(drainAggregates(h)).toEqual([]);
    } finally {
      h.close();
    }
  });
});

/** One endpoint's ingress: N deny rules that each need TCP, port 80 and a peer-set lookup that fails. */
function bigIR(rules: number): IR {
  const policy = { kind: 'GlobalPolicy' as const, name: 'big' };
  const globalRules: Rule[] = Array.from({ length: rules }, (_, i) => ({
    id: `gp:big/ingress/${i}`,
    policy,
    ruleIndex: i,
    action: 'deny',
    protocol: 'TCP',
    ports: [{ first: 80, last: 80 }],
    peerSet: 'sy-elsewhere',
  }));
  const rs = (direction: 'ingress' | 'egress'): RuleSet => ({
    endpoint: 'x/a',
    direction,
    globalRules: direction === 'ingress' ? globalRules : [],
    kubernetesRules: [],
    kubernetesDefault: direction === 'ingress' ? 'deny' : 'allow',
    globalPolicies: [policy],
    kubernetesPolicies: [],
  });
  return {
    version: 1,
    nodes: [{ name: 'n1', address: '198.18.255.1' }],
    endpoints: [
      {
        id: 'x/a',
        namespace: 'x',
        name: 'a',
        node: 'n1',
        addresses: [A],
        labels: {},
        namespaceLabels: {},
        ports: [],
        hostInterface: 'syxa',
      },
    ],
    ipSets: [{ id: 'sy-elsewhere', description: 'elsewhere', cidrs: ['198.18.9.0/24'] }],
    ipPortSets: [],
    ruleSets: [rs('egress'), rs('ingress')],
    services: [],
    prefilters: [],
  };
}

describeKernel('ebpf: program size and cost per packet', () => {
  const REPEAT = 20_000;
  const results: Record<string, number | string> = {};
  const data = frame({ src: B, dst: A, protocol: 'TCP', sport: 40000, dport: 80 });

  afterAll(() => console.log(`ebpf ns/packet (PROG_TEST_RUN, repeat ${REPEAT}): ${JSON.stringify(results)}`));

  it('measures the empty-program baseline', () => {
    const empty = Program.load({
      name: 'sy_empty',
      type: 'sched_cls',
      instructions: new Assembler().exitWith(TcAction.NEXT).assemble(),
    });
    try {
      results.empty = empty.testRun({
        data,
        repeat: REPEAT,
        context: skbContext(),
        contextOutSize: 0,
      }).durationNs;
    } finally {
      empty.close();
    }
  });

  for (const n of [0, 10, 100, 1000, 3000]) {
    it(`loads and runs a program of ${n} rules (every rule looked at, default deny)`, () => {
      const started = performance.now();
      const h = new OfflineNode(bigIR(n), 'n1');
      try {
        results[`load${n}Ms`] = Math.round(performance.now() - started);
        const program = h.program('x/a', 'ingress');
        results[`rules${n}Instructions`] = program.info().verifiedInstructions;
        const r = program.testRun({ data, repeat: REPEAT, context: skbContext(), contextOutSize: 0 });
        expect(r.retval).toBe(2);
        results[`rules${n}`] = r.durationNs;
        // A peer in the set: the first rule decides.
        expect(
          h.run('x/a', 'ingress', frame({ src: '198.18.9.1', dst: A, protocol: 'TCP', dport: 80 })),
        ).toBe('drop');
        expect(
          h.run('x/a', 'ingress', frame({ src: '198.18.9.1', dst: A, protocol: 'TCP', dport: 81 })),
        ).toBe('drop');
        expect(
          counter(h, 'x/a', 'ingress', n > 0 ? 'gp:big/ingress/0' : 'x/a/ingress/default'),
        ).toBeGreaterThan(0);
      } finally {
        h.close();
      }
    });
  }

  it('measures an established connection (conntrack hit, no rule looked at)', () => {
    const h = new OfflineNode(bigIR(1000), 'n1');
    try {
      const out = frame({ src: A, dst: B, protocol: 'TCP', sport: 40000, dport: 80 });
      expect(h.run('x/a', 'egress', out)).toBe('pass');
      expect(h.run('x/a', 'egress', out)).toBe('pass');
      const reply = frame({ src: B, dst: A, protocol: 'TCP', sport: 80, dport: 40000, tcpFlags: 0x10 });
      const r = h
        .program('x/a', 'ingress')
        .testRun({ data: reply, repeat: REPEAT, context: skbContext(), contextOutSize: 0 });
      expect(r.retval).toBe(-1);
      results.established = r.durationNs;
    } finally {
      h.close();
    }
  });
});

describe('ebpf frames helper', () => {
  it('builds frames the programs parse', () => {
    const f = frame({ src: A, dst: B, protocol: 'UDP', sport: 1, dport: 2, ipOptionWords: 1 });
    expect(f.readUInt16BE(12)).toBe(0x0800);
    expect(f.readUInt8(14)).toBe(0x46);
    expect(f.readUInt16BE(14 + 24 + 2)).toBe(2);
  });
});
