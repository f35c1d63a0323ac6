/**
 * The policy programs on IPv6 frames (BPF_PROG_TEST_RUN): the same rules, sets, decision tables
 * and conntrack as IPv4, the extension-header walk with one fail-closed counter per reason it
 * refuses, ICMPv6 (neighbour discovery passes under default deny, echo and errors as ICMP), and
 * flow aggregates with IPv6 addresses. IPv4 peers never match IPv6 packets and the reverse.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mergeCpus } from '../../src/dataplane/ebpf/flow-source.js';
import { CT_STATE, NODE_CONFIG_FLAG, type FlowKey, type FlowValue } from '../../src/dataplane/ebpf/layout.js';
import { slotKey } from '../../src/dataplane/ebpf/node.js';
import { OfflineNode } from '../../src/dataplane/ebpf/offline-node.js';
import type { PolicyMode } from '../../src/ir/decision-table.js';
import { failClosedRuleId } from '../../src/ir/rule-ids.js';
import { describeKernel } from '../support/kernel.js';
import { compileIR, globalPolicy, modelOf, namespace, networkPolicy, pod } from '../support/manifests.js';
import { ethernet, frame, ipPacket, type FrameSpec } from './ebpf-frames.js';

const A = 'fd00:5957::a';
const B = 'fd00:5957::b';
const C = 'fd00:5957::c';
/** An IPv4 pod: an IPv4 peer of x/a's rules, which must not admit anything of IPv6. */
const V4 = '198.18.0.20';
const OUTSIDE_IN = 'fd00:5957:1::7';
const OUTSIDE_OUT = 'fd00:5957:2::7';

/**
 * x/a's ingress admits x/b (and the IPv4 pod x/d) on TCP 80 and UDP 53, and fd00:5957:1::/48 on
 * TCP 443; a GlobalPolicy denies fd00:5957:1::7 first. x/a's egress is open.
 */
function cluster(mode: PolicyMode) {
  return compileIR(
    modelOf([
      namespace('x'),
      pod('x', 'a', { labels: { pod: 'a' }, ip: A, node: 'n1' }),
      pod('x', 'b', { labels: { pod: 'b' }, ip: B, node: 'n1' }),
      pod('x', 'c', { labels: { pod: 'c' }, ip: C, node: 'n1' }),
      pod('x', 'd', { labels: { pod: 'b' }, ip: V4, node: 'n1' }),
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
          { from: [{ ipBlock: { cidr: 'fd00:5957:1::/48' } }], ports: [{ port: 443, protocol: 'TCP' }] },
        ],
      }),
      globalPolicy('deny-one', {
        order: 1,
        selector: { matchLabels: { pod: 'a' } },
        types: ['Ingress'],
        ingress: [{ action: 'Deny', from: [{ nets: [`${OUTSIDE_IN}/128`] }] }, { action: 'Pass' }],
      }),
    ]),
    { policyMode: mode },
  );
}

function counter(h: OfflineNode, direction: 'ingress' | 'egress', rule: string): number {
  const slot = h.alloc.slots[slotKey({ endpoint: 'x/a', direction, rule })];
  if (slot === undefined) throw new Error(`no slot for ${rule}`);
  return h.maps.counters.lookupSum(slot)?.packets ?? 0;
}

const failClosed = (h: OfflineNode, reason: string): number =>
  counter(h, 'ingress', failClosedRuleId('x/a', 'ingress', reason));

for (const mode of ['walk', 'table'] as const) {
  describeKernel(`ebpf (${mode} mode): IPv6 policy on crafted frames`, () => {
    let h: OfflineNode;
    beforeAll(() => {
      h = new OfflineNode(cluster(mode), 'n1');
      expect(Object.keys(h.alloc.tables ?? {}).length > 0).toBe(mode === 'table');
    });
    afterAll(() => h?.close());
    afterEach(() => h.clearConntrack());

    const http: FrameSpec = { src: B, dst: A, protocol: 'TCP', sport: 41000, dport: 80 };

    it('judges IPv6 by the same rules and sets: peers, ports, ipBlocks, global nets; no IPv4 peer admits IPv6', () => {
      expect(h.run('x/a', 'ingress', frame(http))).toBe('pass');
      expect(h.run('x/a', 'ingress', frame({ ...http, dport: 81 }))).toBe('drop');
      expect(h.run('x/a', 'ingress', frame({ ...http, protocol: 'UDP', dport: 53 }))).toBe('pass');
      expect(h.run('x/a', 'ingress', frame({ ...http, src: C }))).toBe('drop');
      // The IPv4 pod x/d is a peer; its address as an IPv6 address is not, and an IPv4-mapped
      // address (the form the maps store IPv4 in) fails closed on the wire.
      expect(h.run('x/a', 'ingress', frame({ ...http, src: V4, dst: '198.18.0.21' }))).toBe('pass');
      expect(h.run('x/a', 'ingress', frame({ ...http, src: '::c612:14' }))).toBe('drop');
      const mapped = failClosed(h, 'ipv6-mapped');
      expect(h.run('x/a', 'ingress', frame({ ...http, src: '::ffff:c612:14' }))).toBe('drop');
      expect(h.run('x/a', 'egress', frame({ ...http, src: A, dst: '::ffff:c612:14' }))).toBe('drop');
      expect(failClosed(h, 'ipv6-mapped')).toBe(mapped + 1);
      // The ipBlock, and the GlobalPolicy's Deny before it.
      expect(h.run('x/a', 'ingress', frame({ ...http, src: 'fd00:5957:1::8', dport: 443 }))).toBe('pass');
      expect(h.run('x/a', 'ingress', frame({ ...http, src: OUTSIDE_IN, dport: 443 }))).toBe('drop');
      expect(h.run('x/a', 'ingress', frame({ ...http, src: OUTSIDE_OUT, dport: 443 }))).toBe('drop');
      const deny = counter(h, 'ingress', 'x/a/ingress/default');
      expect(h.run('x/a', 'ingress', frame({ ...http, src: C }))).toBe('drop');
      expect(counter(h, 'ingress', 'x/a/ingress/default')).toBe(deny + 1);
    });

    it('tracks IPv6 connections: the answer passes, a new SYN on the tuple is judged', () => {
      expect(h.run('x/a', 'ingress', frame(http))).toBe('pass');
      const [entry] = [...h.maps.ct.entries()];
      expect(entry?.[0]).toMatchObject({ saddr: B, daddr: A, sport: 41000, dport: 80, proto: 6, dir: 0 });
      expect(entry?.[1].state).toBe(CT_STATE.synSent);
      const answer: FrameSpec = { src: A, dst: B, protocol: 'TCP', sport: 80, dport: 41000, tcpFlags: 0x12 };
      expect(h.run('x/a', 'egress', frame(answer))).toBe('pass');
      expect([...h.maps.ct.entries()][0]?.[1].state).toBe(CT_STATE.established);
      expect(h.run('x/a', 'ingress', frame({ ...http, tcpFlags: 0x10 }))).toBe('pass');
      // x/a's egress is open: its connection to x/c is answered, though x/c may not open one.
      const out: FrameSpec = { src: A, dst: C, protocol: 'UDP', sport: 5000, dport: 9999 };
      expect(h.run('x/a', 'ingress', frame({ ...out, src: C, dst: A, sport: 9999, dport: 5000 }))).toBe(
        'drop',
      );
      expect(h.run('x/a', 'egress', frame(out))).toBe('pass');
      expect(h.run('x/a', 'ingress', frame({ ...out, src: C, dst: A, sport: 9999, dport: 5000 }))).toBe(
        'pass',
      );
    });

    it('walks hop-by-hop, routing, destination options and atomic fragment headers to the transport', () => {
      const walked = {
        ...http,
        extHeaders: [{ type: 0 }, { type: 60, length: 2 }, { type: 43, length: 1 }, { type: 44 }],
      };
      expect(h.run('x/a', 'ingress', frame(walked))).toBe('pass');
      expect(h.run('x/a', 'ingress', frame({ ...walked, src: C }))).toBe('drop');
      expect(h.run('x/a', 'ingress', frame({ ...walked, dport: 81 }))).toBe('drop');
      // Six headers is the walk's bound.
      const six = Array.from({ length: 6 }, () => ({ type: 60 }));
      expect(h.run('x/a', 'ingress', frame({ ...http, extHeaders: six }))).toBe('pass');
    });

    it('fails closed on each IPv6 header it cannot read, counting each reason', () => {
      const before = {
        fragment: failClosed(h, 'fragment'),
        headers: failClosed(h, 'ipv6-headers'),
        malformed: failClosed(h, 'malformed'),
      };
      const run = (f: Buffer): string => h.run('x/a', 'ingress', f);
      // Fragments: the first of several (more fragments), a later one.
      expect(run(frame({ ...http, extHeaders: [{ type: 44, moreFragments: true }] }))).toBe('drop');
      expect(run(frame({ ...http, extHeaders: [{ type: 0 }, { type: 44, fragmentOffset: 10 }] }))).toBe(
        'drop',
      );
      expect(failClosed(h, 'fragment') - before.fragment).toBe(2);
      // Seven extension headers, and a transport header past the walk's reach.
      expect(run(frame({ ...http, extHeaders: Array.from({ length: 7 }, () => ({ type: 60 })) }))).toBe(
        'drop',
      );
      expect(run(frame({ ...http, extHeaders: [{ type: 60, length: 70 }] }))).toBe('drop');
      expect(failClosed(h, 'ipv6-headers') - before.headers).toBe(2);
      // Truncated: an extension header, the TCP header; a wrong version. (A frame shorter than
      // the IPv6 header is refused by PROG_TEST_RUN itself, EINVAL, so that check is not run here.)
      const whole = frame({ ...http, extHeaders: [{ type: 0 }] });
      expect(run(whole.subarray(0, 14 + 40 + 4))).toBe('drop');
      expect(run(whole.subarray(0, 14 + 40 + 8 + 10))).toBe('drop');
      const v5 = frame(http);
      v5.writeUInt8(0x50, 14);
      expect(run(v5)).toBe('drop');
      expect(failClosed(h, 'malformed') - before.malformed).toBe(3);
      // Nothing of these reached a rule or conntrack.
      expect([...h.maps.ct.keys()]).toEqual([]);
    });

    it('passes neighbour discovery under default deny; other ICMPv6 follows policy and conntrack', () => {
      const icmp = (type: number, extra: Partial<FrameSpec> = {}): FrameSpec => ({
        src: C,
        dst: A,
        protocol: 'ICMP',
        icmpType: type,
        ...extra,
      });
      // Router solicitation/advertisement, neighbour solicitation/advertisement, both directions.
      for (const type of [133, 134, 135, 136]) {
        expect(h.run('x/a', 'ingress', frame(icmp(type)))).toBe('pass');
        expect(h.run('x/a', 'egress', frame(icmp(type, { src: A, dst: C })))).toBe('pass');
      }
      // x/a's ingress has no ICMP rule: an echo request is denied by the default.
      const deny = counter(h, 'ingress', 'x/a/ingress/default');
      expect(h.run('x/a', 'ingress', frame(icmp(128, { icmpId: 5 })))).toBe('drop');
      expect(counter(h, 'ingress', 'x/a/ingress/default')).toBe(deny + 1);
      // An echo reply without a request is invalid; after x/a's request it passes.
      const invalid = failClosed(h, 'invalid');
      expect(h.run('x/a', 'ingress', frame(icmp(129, { icmpId: 6 })))).toBe('drop');
      expect(failClosed(h, 'invalid')).toBe(invalid + 1);
      expect(h.run('x/a', 'egress', frame(icmp(128, { src: A, dst: C, icmpId: 6 })))).toBe('pass');
      expect(h.run('x/a', 'ingress', frame(icmp(129, { icmpId: 6 })))).toBe('pass');
      expect(h.run('x/a', 'ingress', frame(icmp(129, { icmpId: 7 })))).toBe('drop');
      // A "port unreachable" quoting x/a's UDP packet is related; quoting another is not.
      const udp: FrameSpec = { src: A, dst: C, protocol: 'UDP', sport: 5001, dport: 9999 };
      const unreachable = (q: FrameSpec): FrameSpec =>
        icmp(1, { icmpCode: 4, icmpId: 0, quoted: ipPacket(q).subarray(0, 48) });
      expect(h.run('x/a', 'ingress', frame(unreachable(udp)))).toBe('drop');
      expect(h.run('x/a', 'egress', frame(udp))).toBe('pass');
      expect(h.run('x/a', 'ingress', frame(unreachable(udp)))).toBe('pass');
      expect(h.run('x/a', 'ingress', frame(unreachable({ ...udp, dport: 9998 })))).toBe('drop');
      // "Packet too big" quoting it too.
      expect(h.run('x/a', 'ingress', frame({ ...unreachable(udp), icmpType: 2, icmpCode: 0 }))).toBe('pass');
    });

    it('records flow aggregates with IPv6 addresses', () => {
      h.maps.config.update(0, { flags: NODE_CONFIG_FLAG.flowEvents, pad: 0 });
      try {
        h.maps.flows.lookupAndDeleteBatch();
        expect(h.run('x/a', 'ingress', frame(http))).toBe('pass');
        expect(h.run('x/a', 'ingress', frame({ ...http, src: C, sport: 41001 }))).toBe('drop');
        const aggregates: [FlowKey, FlowValue][] = h.maps.flows
          .lookupAndDeleteBatch()
          .map(([k, v]) => [k, mergeCpus(v)]);
        const seen = aggregates.map(
          ([k, v]) => `${k.saddr} ${k.daddr} ${k.proto} ${k.dport} ${k.verdict} ${v.packets}`,
        );
        expect(seen.sort()).toEqual([`${B} ${A} 6 80 1 1`, `${C} ${A} 6 80 2 1`]);
      } finally {
        h.maps.config.update(0, { flags: 0, pad: 0 });
      }
    });
  });
}

describe('ipv6 frames helper', () => {
  it('builds IPv6 frames with extension headers', () => {
    const f = frame({ src: A, dst: B, protocol: 'TCP', extHeaders: [{ type: 0 }, { type: 44 }] });
    expect(f.readUInt16BE(12)).toBe(0x86dd);
    expect(f.readUInt8(14 + 6)).toBe(0);
    expect(f.readUInt8(14 + 40)).toBe(44);
    expect(f.readUInt8(14 + 48)).toBe(6);
    expect(ethernet(0x86dd, Buffer.alloc(0)).length).toBe(14);
  });
});
