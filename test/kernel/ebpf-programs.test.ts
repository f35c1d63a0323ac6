/**
 * The generated policy programs on hand-written frames (BPF_PROG_TEST_RUN): what fails closed and
 * is counted, the conntrack state machine (SYN → reply → FIN/RST, expiry, a SYN reusing a closed
 * tuple), ICMP replies and errors, node-originated traffic, Log events through the ring buffer,
 * garbage collection, and programs of 10 to 3000 rules — with their cost per packet.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Assembler, Program, RingBufReader, TcAction } from '../../src/bpf/index.js';
import { collectGarbage, monotonicNs } from '../../src/dataplane/ebpf/conntrack.js';
import { CT_STATE, ctValue, logEvent, type CtKey, type CtValue } from '../../src/dataplane/ebpf/layout.js';
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

  it('fails closed on IPv6, fragments, malformed and non-IP frames (ARP passes), counting each', () => {
    const failClosed = (reason: string): number =>
      counter(h, 'x/a', 'egress', failClosedRuleId('x/a', 'egress', reason));
    const before = {
      ipv6: failClosed('ipv6'),
      fragment: failClosed('fragment'),
      malformed: failClosed('malformed'),
    };
    const tcp: FrameSpec = { src: A, dst: B, protocol: 'TCP', dport: 80 };
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
    expect(failClosed('ipv6') - before.ipv6).toBe(1);
    expect(failClosed('fragment') - before.fragment).toBe(2);
    expect(failClosed('malformed') - before.malformed).toBe(4);
    // With IP options the same packet is judged normally.
    expect(h.run('x/a', 'egress', frame({ ...tcp, ipOptionWords: 10 }))).toBe('pass');
  });

  it('judges protocols it does not parse by protocol-less rules only', () => {
    // GRE to x/a: x/a's only rule needs TCP or UDP ports, so the default (deny) decides.
    expect(h.run('x/a', 'ingress', frame({ src: B, dst: A, protocol: 47 }))).toBe('drop');
    // x/b has no policy: everything goes.
    expect(h.run('x/b', 'ingress', frame({ src: A, dst: B, protocol: 47 }))).toBe('pass');
  });

  it('tracks TCP: SYN, the answer, FIN, RST; a SYN reusing a closed tuple is judged again', () => {
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
      pad2: 0,
    };
    h.maps.ct.update(key, closed);
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
      pad2: 0,
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

describeKernel('ebpf: Log rules', () => {
  it('sends one ring buffer event per logged packet and goes on to the next rule', () => {
    const ir = cluster([
      globalPolicy('audit', {
        order: 1,
        selector: { matchLabels: { pod: 'a' } },
        types: ['Ingress'],
        ingress: [{ action: 'Log', protocol: 'TCP' }, { action: 'Pass' }],
      }),
    ]);
    const h = new OfflineNode(ir, 'n1');
    const reader = new RingBufReader(h.maps.events);
    try {
      expect(
        h.run('x/a', 'ingress', frame({ src: B, dst: A, protocol: 'TCP', sport: 40001, dport: 80 })),
      ).toBe('pass');
      expect(
        h.run('x/a', 'ingress', frame({ src: C, dst: A, protocol: 'TCP', sport: 40002, dport: 80 })),
      ).toBe('drop');
      expect(
        h.run('x/a', 'ingress', frame({ src: C, dst: A, protocol: 'UDP', sport: 40003, dport: 53 })),
      ).toBe('drop');
      const events: ReturnType<typeof logEvent.decode>[] = [];
      reader.consumeDecoded(logEvent, (e) => events.push(e));
      const slot =
        h.alloc.slots[slotKey({ endpoint: 'x/a', direction: 'ingress', rule: 'gp:audit/ingress/0' })];
      expect(events.map((e) => [e.saddr, e.daddr, e.sport, e.dport, e.proto, e.dir, e.slot])).toEqual([
        [B, A, 40001, 80, 6, 0, slot],
        [C, A, 40002, 80, 6, 0, slot],
      ]);
    } finally {
      reader.close();
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
