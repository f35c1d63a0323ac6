/**
 * The nftables flow records without a kernel: the keys the rules write decode back to the tuple
 * and tag (both families, ports and port 0), and netlink answers as the kernel sends them (a
 * GETSETELEM dump in parts, with one or several expressions per element, a set's and a counter's
 * answer, errors and interrupted dumps) parse to elements, handles and totals.
 */
import { describe, expect, it } from 'vitest';
import type { DecisionCounter, TrafficCounter } from '../../src/dataplane/netfilter/aggregates.js';
import { flowRuleTag } from '../../src/dataplane/netfilter/aggregates.js';
import { decisionVisitor, trafficVisitor } from '../../src/dataplane/nftables/flow-counters.js';
import {
  decodeKey,
  flowSetObjects,
  keyLength,
  updateStatement,
  updateVariants,
} from '../../src/dataplane/nftables/flow-sets.js';
import { parseMessages, type ElementVisitor } from '../../src/dataplane/nftables/nfnetlink.js';
import { netlinkAttribute } from '../../src/netns/netlink.js';

const NESTED = 0x8000;
const nest = (type: number, ...children: Buffer[]): Buffer =>
  netlinkAttribute(type | NESTED, Buffer.concat(children));
const u64 = (type: number, v: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(v));
  return netlinkAttribute(type, b);
};
const str = (type: number, s: string): Buffer => netlinkAttribute(type, Buffer.from(`${s}\0`));

/** A key as the kernel stores a concatenation: each field padded to 4 bytes, the tag host-order. */
function key(src: number[], dst: number[], proto: number, port: number, tag?: number): Buffer {
  const b = Buffer.alloc(src.length * 2 + 8 + (tag === undefined ? 0 : 4));
  Buffer.from(src).copy(b, 0);
  Buffer.from(dst).copy(b, src.length);
  b[src.length * 2] = proto;
  b.writeUInt16BE(port, src.length * 2 + 4);
  if (tag !== undefined) b.writeUInt32LE(tag, src.length * 2 + 8);
  return b;
}

const counterExpr = (packets: number, bytes: number): Buffer[] => [
  str(1, 'counter'), // NFTA_EXPR_NAME
  nest(2, u64(1, bytes), u64(2, packets)), // NFTA_EXPR_DATA: NFTA_COUNTER_BYTES, _PACKETS
];

/** One NFTA_LIST_ELEM: key, a timeout and expiration (as dynamic sets carry), the counter. */
function element(k: Buffer, packets: number, bytes: number, several = false): Buffer {
  const expr = several
    ? nest(10, nest(1, str(1, 'limit'), nest(2)), nest(1, ...counterExpr(packets, bytes))) // NFTA_SET_ELEM_EXPRESSIONS
    : nest(7, ...counterExpr(packets, bytes)); // NFTA_SET_ELEM_EXPR
  return nest(1, nest(1, netlinkAttribute(1, k)), u64(4, 60000), u64(5, 59000), expr);
}

function message(type: number, flags: number, body: Buffer[]): Buffer {
  const payload = Buffer.concat([Buffer.from([1, 0, 0, 0]), ...body]);
  const m = Buffer.alloc(16 + payload.length);
  m.writeUInt32LE(m.length, 0);
  m.writeUInt16LE(type, 4);
  m.writeUInt16LE(flags, 6);
  payload.copy(m, 16);
  return m;
}

const NFT = (t: number): number => (10 << 8) | t;
const MULTI = 0x2;
const done = (): Buffer => message(3, MULTI, [Buffer.alloc(4)]);
const elementsMessage = (elements: Buffer[], flags = MULTI): Buffer =>
  message(NFT(12), flags, [str(1, 'switchyard'), str(2, 'flows4'), nest(3, ...elements)]);

function collect(): { visit: ElementVisitor; got: { key: string; packets: number; bytes: number }[] } {
  const got: { key: string; packets: number; bytes: number }[] = [];
  return {
    got,
    visit: (buf, off, len, packets, bytes) =>
      got.push({ key: buf.toString('hex', off, off + len), packets, bytes }),
  };
}

describe('nftables flow sets: layout', () => {
  it('declares decision sets keyed with the tag and traffic sets without, both families', () => {
    const sets = flowSetObjects(128);
    expect(sets.map((s) => `${s.kind} ${s.name}`)).toEqual([
      'set flows4',
      'set flows6',
      'set traffic4',
      'set traffic6',
      'set flow-ported',
      'counter flows-full',
    ]);
    expect(sets[0]?.spec).toBe(
      '{ type ipv4_addr . ipv4_addr . inet_proto . inet_service . mark; flags dynamic,timeout; timeout 60s; size 128; counter; }',
    );
    expect(sets.filter((s) => s.name !== 'flow-ported').every((s) => s.elements.length === 0)).toBe(true);
    // The protocols keyed on their port: one named set the flow chains all look up.
    expect(sets.find((s) => s.name === 'flow-ported')?.elements).toEqual(['tcp', 'udp', 'sctp']);
  });

  it('covers every packet with exactly one update per family: ports for TCP, UDP, SCTP, 0 for the rest', () => {
    expect(updateVariants().map((v) => v.condition)).toEqual([
      'meta nfproto ipv4 meta l4proto @flow-ported',
      'meta nfproto ipv4 meta l4proto != @flow-ported',
      'meta nfproto ipv6 meta l4proto @flow-ported',
      'meta nfproto ipv6 meta l4proto != @flow-ported',
    ]);
    expect(updateStatement('flows', 'v6', false, 0x2a)).toBe(
      'update @flows6 { ip6 saddr . ip6 daddr . meta l4proto . 0 . 0x0000002a }',
    );
    expect(updateStatement('traffic', 'v4', true)).toBe(
      'update @traffic4 { ip saddr . ip daddr . meta l4proto . th dport }',
    );
    expect(() => updateStatement('flows', 'v4', true)).toThrow(/tag/);
  });

  it('decodes keys as the kernel stores them: addresses, protocol, port, host-order tag', () => {
    const tag = flowRuleTag('deny', 'x/a/ingress/default');
    const v4 = key([198, 18, 0, 3], [198, 18, 0, 4], 6, 5432, tag);
    expect(v4.length).toBe(keyLength('flows', 'v4'));
    expect(decodeKey('flows', 'v4', v4)).toEqual({
      src: '198.18.0.3',
      dst: '198.18.0.4',
      protocol: 6,
      dport: 5432,
      tag,
    });
    const a = [0xfd, 0, 0x59, 0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x14];
    const b = [0xfd, 0, 0x59, 0x57, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    expect(decodeKey('traffic', 'v6', key(a, b, 58, 0))).toEqual({
      src: 'fd00:5957::1:14',
      dst: 'fd00:5957:1::1',
      protocol: 58,
      dport: 0,
    });
    // A key of the wrong size for the set is not guessed at.
    expect(decodeKey('flows', 'v4', key([1, 2, 3, 4], [5, 6, 7, 8], 6, 80))).toBeUndefined();
  });
});

describe('nftables flow sets: netlink answers', () => {
  const k1 = key([198, 18, 0, 2], [198, 18, 0, 4], 6, 80, 7);
  const k2 = key([198, 18, 0, 9], [198, 18, 0, 4], 1, 0, 7);

  it('reads a dump in parts: elements with one or several expressions, then NLMSG_DONE', () => {
    const { visit, got } = collect();
    const part1 = elementsMessage([element(k1, 3, 180)]);
    const first = parseMessages(part1, part1.length, visit);
    expect(first).toEqual({ done: false, interrupted: false });
    const part2 = Buffer.concat([elementsMessage([element(k2, 2 ** 40, 2 ** 50 + 1, true)]), done()]);
    expect(parseMessages(part2, part2.length, visit)).toEqual({ done: true, interrupted: false });
    expect(got).toEqual([
      { key: k1.toString('hex'), packets: 3, bytes: 180 },
      { key: k2.toString('hex'), packets: 2 ** 40, bytes: 2 ** 50 + 1 },
    ]);
  });

  it('reports refusals, interrupted dumps, a set’s handle and a counter object', () => {
    const error = Buffer.alloc(20);
    error.writeInt32LE(-2, 0); // -ENOENT, then the request's header
    const refused = message(2, 0, []);
    const withError = Buffer.concat([refused.subarray(0, 16), error]);
    withError.writeUInt32LE(withError.length, 0);
    expect(parseMessages(withError, withError.length)).toMatchObject({ done: true, errno: 2 });

    const interrupted = Buffer.concat([elementsMessage([element(k1, 1, 60)], MULTI | 0x10), done()]);
    expect(parseMessages(interrupted, interrupted.length, () => undefined).interrupted).toBe(true);

    const set = message(NFT(9), 0, [str(1, 'switchyard'), str(2, 'flows4'), u64(16, 4242)]);
    expect(parseMessages(set, set.length)).toEqual({ done: true, interrupted: false, handle: 4242 });

    const obj = message(NFT(18), 0, [
      str(1, 'switchyard'),
      str(2, 'flows-full'),
      nest(4, u64(1, 900), u64(2, 15)),
      u64(6, 77),
    ]);
    expect(parseMessages(obj, obj.length)).toEqual({
      done: true,
      interrupted: false,
      handle: 77,
      counter: { packets: 15, bytes: 900 },
    });
  });

  it('visitors turn elements into counters whose ids name the set instance and the key', () => {
    const decisions: DecisionCounter[] = [];
    const traffic: TrafficCounter[] = [];
    const msg = Buffer.concat([elementsMessage([element(k1, 3, 180)]), done()]);
    parseMessages(msg, msg.length, decisionVisitor('v4', 'flows4#12', decisions));
    const t = key([198, 18, 0, 2], [198, 18, 0, 4], 6, 80);
    const tmsg = Buffer.concat([elementsMessage([element(t, 9, 900), element(k1, 1, 1)]), done()]);
    parseMessages(tmsg, tmsg.length, trafficVisitor('v4', 'traffic4#13', traffic));
    expect(decisions).toEqual([
      {
        id: `flows4#12 ${k1.toString('hex')}`,
        tag: 7,
        protocol: 6,
        src: '198.18.0.2',
        dst: '198.18.0.4',
        dport: 80,
        packets: 3,
        bytes: 180,
      },
    ]);
    // The decision-sized key in a traffic set is not a traffic element.
    expect(traffic).toEqual([
      {
        id: `traffic4#13 ${t.toString('hex')}`,
        protocol: 6,
        src: '198.18.0.2',
        dst: '198.18.0.4',
        dport: 80,
        packets: 9,
        bytes: 900,
      },
    ]);
  });
});

describe('flow chains across renders', () => {
  it('hands back the same flow chain objects for the same rules, so the diff skips them by identity', async () => {
    const { decisions } = await import('../../src/dataplane/nftables/decision.js');
    const render = (): ReturnType<ReturnType<typeof decisions>['objects']>['chains'] => {
      const d = decisions({ flowLogs: true });
      d.decide('tcp dport 80', 'allow', 'np:a/p/ingress/0');
      d.decide('', 'deny', 'a/p/ingress/default');
      d.log('', 'gnp:g/log/0');
      return d.objects().chains;
    };
    const [first, second] = [render(), render()];
    expect(second.map((c) => c.name)).toEqual(first.map((c) => c.name));
    second.forEach((c, i) => expect(c).toBe(first[i]));
    const other = decisions({ flowLogs: true });
    other.decide('', 'allow', 'np:a/p/ingress/1');
    expect(other.objects().chains.some((c) => first.includes(c) && c.name.startsWith('flow-allow'))).toBe(
      false,
    );
  });
});
