/**
 * The nfnetlink rule path (rule-encoder.ts, rule-batch.ts): which rules are encoded and how, which
 * changes go as one batch and in what order. That the kernel ends up holding what `nft -f` would
 * write is test/kernel/nftables-update.test.ts's (each batched step against a from-scratch apply).
 */
import { describe, expect, it } from 'vitest';
import { concatRegister, encodeRule } from '../../src/dataplane/nftables/rule-encoder.js';
import { MAX_BATCH_BYTES, ruleBatch } from '../../src/dataplane/nftables/rule-batch.js';
import type { NftChain, NftRuleset, NftSet } from '../../src/dataplane/nftables/objects.js';

interface Attr {
  type: number;
  data: Buffer;
}

function attrs(buf: Buffer): Attr[] {
  const out: Attr[] = [];
  for (let off = 0; off + 4 <= buf.length;) {
    const len = buf.readUInt16LE(off);
    out.push({ type: buf.readUInt16LE(off + 2) & 0x3fff, data: buf.subarray(off + 4, off + len) });
    off += (len + 3) & ~3;
  }
  return out;
}

/** Each expression's name and its attributes by type. */
function expressions(buf: Buffer): { name: string; data: Map<number, Buffer> }[] {
  return attrs(buf).map((elem) => {
    const [name, data] = attrs(elem.data);
    return {
      name: (name?.data.toString('latin1') ?? '').replace(/\0$/, ''),
      data: new Map(attrs(data?.data ?? Buffer.alloc(0)).map((a) => [a.type, a.data])),
    };
  });
}

let ids = 0;
const nextId = (): number => ++ids;

describe('nftables rule encoder', () => {
  it('encodes a tier rule as nft does: implicit nfproto check before the address, port big-endian, goto, comment', () => {
    const rule = encodeRule(
      'meta l4proto tcp th dport 9000 ip daddr @sy-a-v4 counter goto flow-allow-0242b0da comment "np:ns1/pol0/egress/0"',
      nextId,
    );
    expect(rule).toBeDefined();
    const ex = expressions(rule?.expressions as Buffer);
    expect(ex.map((e) => e.name)).toEqual([
      'meta',
      'cmp',
      'payload',
      'cmp',
      'meta',
      'cmp',
      'payload',
      'lookup',
      'counter',
      'immediate',
    ]);
    // tcp, port 9000, nfproto ipv4, destination address at network header + 16.
    expect(attrs(ex[1]?.data.get(3) as Buffer)[0]?.data).toEqual(Buffer.from([6]));
    expect(attrs(ex[3]?.data.get(3) as Buffer)[0]?.data).toEqual(Buffer.from([0x23, 0x28]));
    expect(attrs(ex[5]?.data.get(3) as Buffer)[0]?.data).toEqual(Buffer.from([2]));
    expect(ex[6]?.data.get(3)?.readUInt32BE(0)).toBe(16);
    expect(ex[7]?.data.get(1)?.toString('latin1')).toBe('sy-a-v4\0');
    const verdict = attrs(attrs(ex[9]?.data.get(2) as Buffer)[0]?.data as Buffer);
    expect(verdict[0]?.data.readInt32BE(0)).toBe(-4);
    expect(verdict[1]?.data.toString('latin1')).toBe('flow-allow-0242b0da\0');
    // NFTNL_UDATA_RULE_COMMENT, length with the NUL, the text.
    expect(rule?.userdata).toEqual(Buffer.from('\x00\x15np:ns1/pol0/egress/0\x00', 'latin1'));
    expect(rule?.sets).toEqual([]);
  });

  it('encodes a flow chain rule: named set lookup inverted, concatenated key in consecutive registers, host-order tag', () => {
    const rule = encodeRule(
      'meta nfproto ipv4 meta l4proto != @flow-ported update @flows4 { ip saddr . ip daddr . meta l4proto . 0 . 0x0242b0da } return',
      nextId,
    );
    const ex = expressions(rule?.expressions as Buffer);
    expect(ex.map((e) => e.name)).toEqual([
      'meta',
      'cmp',
      'meta',
      'lookup',
      'payload',
      'payload',
      'meta',
      'immediate',
      'immediate',
      'dynset',
      'immediate',
    ]);
    expect(ex[3]?.data.get(5)?.readUInt32BE(0)).toBe(1); // NFT_LOOKUP_F_INV
    expect([ex[4], ex[5]].map((e) => e?.data.get(1)?.readUInt32BE(0))).toEqual([1, 9]);
    expect(ex[6]?.data.get(1)?.readUInt32BE(0)).toBe(10);
    expect(attrs(ex[8]?.data.get(2) as Buffer)[0]?.data).toEqual(Buffer.from('dab04202', 'hex'));
    expect(ex[9]?.data.get(1)?.toString('latin1')).toBe('flows4\0');
  });

  it('numbers concatenation registers as nft prints them', () => {
    // IPv6: two 16-byte addresses, then protocol, port, tag.
    expect([0, 4, 8, 9, 10].map(concatRegister)).toEqual([1, 2, 3, 17, 18]);
    expect([0, 1, 2, 3, 4].map(concatRegister)).toEqual([1, 9, 10, 11, 2]);
  });

  it('gives an anonymous protocol set its own id, created before the rule', () => {
    const rule = encodeRule('meta l4proto { icmp, ipv6-icmp } counter comment "x"', nextId);
    expect(rule?.sets).toHaveLength(1);
    const set = rule?.sets[0];
    expect(set?.keys).toEqual([Buffer.from([1]), Buffer.from([58])]);
    const lookup = expressions(rule?.expressions as Buffer)[1];
    expect(lookup?.data.get(1)?.toString('latin1')).toBe('__set%d\0');
    expect(lookup?.data.get(4)?.readUInt32BE(0)).toBe(set?.id);
  });

  it('leaves anything else to nft', () => {
    for (const text of [
      'iifname != @workload-ifaces counter return',
      'ct state established,related counter accept',
      'meta l4proto tcp th dport { 80, 443 } counter accept',
      'meta l4proto tcp counter dnat ip addr . port to numgen random mod 2 map { 0 : 198.18.4.1 . 8080 }',
      'meta l4proto . th dport vmap @fw-x-ports-1',
      'th dport 80 counter accept',
      `counter comment "${'x'.repeat(128)}"`,
      'counter accept drop',
    ])
      expect(encodeRule(text, nextId), text).toBeUndefined();
  });
});

function chain(name: string, rules: string[], base = false): NftChain {
  return {
    name,
    spec: base ? '{ type filter hook forward priority filter; policy accept; }' : '',
    base,
    rules,
  };
}

function set(name: string, elements: string[], kind: NftSet['kind'] = 'set'): NftSet {
  return {
    kind,
    name,
    spec: kind === 'map' ? '{ type ifname : verdict; }' : '{ type ipv4_addr; flags interval; }',
    elements,
  };
}

function ruleset(chains: NftChain[], sets: NftSet[] = [], maps: NftSet[] = []): NftRuleset {
  return { node: 'node-1', sets, maps, chains };
}

const NEWCHAIN = 3;
const DELCHAIN = 5;
const NEWRULE = 6;
const DELRULE = 8;
const NEWSET = 9;
const DELSET = 11;
const NEWSETELEM = 12;

describe('nftables rule batch', () => {
  const forward = chain('forward', ['counter oifname vmap @tw-dispatch'], true);
  const peers = set('sy-a-v4', ['198.18.0.10/32']);

  it('refills a changed chain, adds and deletes flow chains, in the order references allow', () => {
    const prev = ruleset(
      [chain('tw-p-k8s', ['counter goto flow-deny-1']), chain('flow-deny-1', ['counter drop']), forward],
      [peers],
    );
    const next = ruleset(
      [
        chain('tw-p-k8s', ['ip saddr @sy-b-v4 counter goto flow-allow-2', 'counter goto flow-deny-1']),
        chain('flow-deny-1', ['counter drop']),
        chain('flow-allow-2', ['counter return']),
        forward,
      ],
      [set('sy-b-v4', ['198.18.0.11/32'])],
    );
    const batch = ruleBatch('switchyard', prev, next);
    expect(batch?.messages.map((m) => [m.type, m.object])).toEqual([
      [NEWSET, 'set sy-b-v4'],
      [NEWSETELEM, 'set sy-b-v4'],
      [NEWCHAIN, 'chain flow-allow-2'],
      [DELRULE, 'chain tw-p-k8s'],
      [NEWRULE, 'rule 1 of chain tw-p-k8s'],
      [NEWRULE, 'rule 2 of chain tw-p-k8s'],
      [NEWRULE, 'rule 1 of chain flow-allow-2'],
      [DELSET, 'set sy-a-v4'],
    ]);
    expect(batch?.changed).toEqual(['set:sy-b-v4', 'chain:tw-p-k8s', 'chain:flow-allow-2', 'set:sy-a-v4']);
  });

  it('empties vanished chains before deleting them, maps before the chains they name', () => {
    const prev = ruleset(
      [chain('tw-p', ['counter goto flow-deny-1']), chain('flow-deny-1', ['counter drop']), forward],
      [],
      [set('tw-dispatch', ['"p" : jump tw-p'], 'map'), set('tw-p-peers-v4', [], 'map')],
    );
    const next = ruleset([forward], [], [set('tw-dispatch', [], 'map')]);
    const batch = ruleBatch('switchyard', prev, next);
    expect(batch?.messages.map((m) => [m.type, m.object])).toEqual([
      [14, 'map tw-dispatch'], // DELSETELEM: the dispatch entry goes with the flush of its map
      [DELRULE, 'chain tw-p'],
      [DELRULE, 'chain flow-deny-1'],
      [DELSET, 'map tw-p-peers-v4'],
      [DELCHAIN, 'chain tw-p'],
      [DELCHAIN, 'chain flow-deny-1'],
    ]);
  });

  it('leaves to nft: a base chain change, a new map, a rule it cannot encode, a members-only change, a batch too large', () => {
    const prev = ruleset([chain('tw-p-k8s', ['counter drop']), forward], [peers]);
    const base = ruleset(
      [chain('tw-p-k8s', ['counter drop']), chain('forward', ['counter accept'], true)],
      [peers],
    );
    expect(ruleBatch('switchyard', prev, base)).toBeUndefined();
    const newMap = ruleset([chain('tw-p-k8s', ['counter accept']), forward], [peers], [set('m', [], 'map')]);
    expect(ruleBatch('switchyard', prev, newMap)).toBeUndefined();
    const unknown = ruleset([chain('tw-p-k8s', ['ct state new counter drop']), forward], [peers]);
    expect(ruleBatch('switchyard', prev, unknown)).toBeUndefined();
    const members = ruleset(prev.chains, [set('sy-a-v4', ['198.18.0.12/32'])]);
    expect(ruleBatch('switchyard', prev, members)).toBeUndefined();
    const many = Array.from({ length: MAX_BATCH_BYTES / 64 }, (_, i) => `counter comment "rule ${i}"`);
    expect(
      ruleBatch('switchyard', prev, ruleset([chain('tw-p-k8s', many), forward], [peers])),
    ).toBeUndefined();
  });
});
