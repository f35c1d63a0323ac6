/**
 * Issue 21, netfilter label changes: when only set members change, nftables writes the element
 * changes alone (over nfnetlink, encoded as nft 1.0.6 encodes them) and iptables adds and deletes
 * ipset members in place; anything else falls back to the backends' full-diff paths.
 */
import { describe, expect, it } from 'vitest';
import { diffPlan, kernelStateAfter, setDelta } from '../../src/dataplane/iptables/diff.js';
import type { NodePlan, SetSpec } from '../../src/dataplane/iptables/plan.js';
import { deltaScript, undoDeltaScript } from '../../src/dataplane/iptables/render-sets.js';
import { ELEMENT_INTERVAL_END, kernelElements, shapeOf } from '../../src/dataplane/nftables/elements.js';
import { MAX_DELTA_ELEMENTS, memberDelta } from '../../src/dataplane/nftables/member-delta.js';
import { elementMessages, parseMessages } from '../../src/dataplane/nftables/nfnetlink.js';
import type { NftRuleset, NftSet } from '../../src/dataplane/nftables/objects.js';

const hex = (b: Buffer): string => b.toString('hex');

describe('nftables element encoding (as nft --debug=netlink shows it)', () => {
  it('an interval is its first address and, flagged END, the address after its last', () => {
    const [start, end] = kernelElements('ipv4-interval', '198.18.0.5/32');
    expect(hex(start?.key as Buffer)).toBe('c6120005');
    expect(start?.flags).toBe(0);
    expect(hex(end?.key as Buffer)).toBe('c6120006');
    expect(end?.flags).toBe(ELEMENT_INTERVAL_END);
    // Host bits are cleared; a bare address is a /32.
    expect(kernelElements('ipv4-interval', '10.1.2.3/8').map((e) => hex(e.key))).toEqual([
      '0a000000',
      '0b000000',
    ]);
    expect(kernelElements('ipv4-interval', '198.18.0.7').map((e) => hex(e.key))).toEqual([
      'c6120007',
      'c6120008',
    ]);
  });

  it('an interval reaching the top has no end element and is marked open', () => {
    const elements = kernelElements('ipv4-interval', '255.255.255.0/24');
    expect(elements).toHaveLength(1);
    expect(elements[0]?.open).toBe(true);
    expect(kernelElements('ipv6-interval', 'fd00:5957:1::/48').map((e) => hex(e.key))).toEqual([
      'fd005957000100000000000000000000',
      'fd005957000200000000000000000000',
    ]);
  });

  it('address . port pads the port to 4 bytes; an interface name is 16 bytes', () => {
    expect(hex(kernelElements('ipv4-port', '198.18.0.5 . 80')[0]?.key as Buffer)).toBe('c612000500500000');
    expect(hex(kernelElements('ifname', '"veth1"')[0]?.key as Buffer)).toBe(
      '76657468310000000000000000000000',
    );
  });

  it('verdict maps carry the verdict on the start element only', () => {
    const [start, end] = kernelElements('ipv4-interval-verdict', '198.18.0.0/24 : goto sy-x');
    expect(start?.verdict).toEqual({ code: 'goto', chain: 'sy-x' });
    expect(end?.verdict).toBeUndefined();
    expect(kernelElements('ifname-verdict', '"v1" : jump c')[0]?.verdict).toEqual({
      code: 'jump',
      chain: 'c',
    });
    // Deleting goes by key alone.
    expect(kernelElements('ifname-verdict', '"v1"')[0]?.verdict).toBeUndefined();
  });

  it('names the element and the set shape when a text does not parse', () => {
    expect(() => kernelElements('ipv4-interval', '198.18.0.300/32')).toThrow(
      /198\.18\.0\.300.*ipv4-interval/,
    );
    expect(() => kernelElements('ifname', '"a-name-far-too-long"')).toThrow(/interface name/);
  });

  it('knows the shapes a label change touches, and no others', () => {
    expect(shapeOf('set', '{ type ipv4_addr; flags interval; }')).toBe('ipv4-interval');
    expect(shapeOf('map', '{ type ifname : verdict; }')).toBe('ifname-verdict');
    expect(shapeOf('map', '{ type ipv4_addr . inet_proto . inet_service : verdict; }')).toBeUndefined();
    expect(shapeOf('set', '{ type ipv4_addr; flags dynamic,timeout; timeout 60s; }')).toBeUndefined();
  });
});

function set(name: string, elements: string[], spec = '{ type ipv4_addr; flags interval; }'): NftSet {
  return { kind: 'set', name, spec, elements };
}

function ruleset(sets: NftSet[], rules = ['ip saddr @a counter return']): NftRuleset {
  return {
    node: 'n1',
    sets,
    maps: [],
    chains: [{ name: 'c', spec: '', base: false, rules }],
  };
}

describe('nftables members-only delta', () => {
  it('writes only the members that changed, deletions by kernel element', () => {
    const rest = ['198.18.0.5/32', '198.18.0.6/32'];
    const prev = ruleset([
      set('a', ['198.18.0.1/32', '198.18.0.2/32', ...rest]),
      set('b', ['198.18.0.9/32']),
    ]);
    const next = ruleset([set('a', ['198.18.0.1/32', '198.18.0.3/32', ...rest]), prev.sets[1] as NftSet]);
    const delta = memberDelta(prev, next);
    expect(delta).toHaveLength(1);
    expect(delta?.[0]?.name).toBe('a');
    expect(delta?.[0]?.flush).toBe(false);
    expect(delta?.[0]?.remove.map((e) => hex(e.key))).toEqual(['c6120002', 'c6120003']);
    expect(delta?.[0]?.add.map((e) => hex(e.key))).toEqual(['c6120003', 'c6120004']);
  });

  it('is empty when nothing changed', () => {
    const rs = ruleset([set('a', ['198.18.0.1/32'])]);
    expect(memberDelta(rs, ruleset([set('a', ['198.18.0.1/32'])]))).toEqual([]);
  });

  it('falls back (undefined) when a chain, a declaration or a set shape changes, or a set comes or goes', () => {
    const prev = ruleset([set('a', ['198.18.0.1/32'])]);
    expect(memberDelta(prev, ruleset([set('a', ['198.18.0.2/32'])], ['counter drop']))).toBeUndefined();
    expect(memberDelta(prev, ruleset([set('a', ['198.18.0.1/32'], '{ type ipv4_addr; }')]))).toBeUndefined();
    expect(memberDelta(prev, ruleset([set('a', ['198.18.0.1/32']), set('b', [])]))).toBeUndefined();
    const svc = '{ type ipv4_addr . ipv4_addr; }';
    expect(
      memberDelta(ruleset([set('s', ['198.18.0.1 . 198.18.0.2'], svc)]), ruleset([set('s', [], svc)])),
    ).toBeUndefined();
  });

  it('falls back when the change is too large for one batch', () => {
    const many = Array.from({ length: MAX_DELTA_ELEMENTS + 1 }, (_, i) => `198.18.${i >> 8}.${i & 255}/32`);
    const keep = Array.from({ length: MAX_DELTA_ELEMENTS * 2 }, (_, i) => `198.19.${i >> 8}.${i & 255}/32`);
    expect(memberDelta(ruleset([set('a', keep)]), ruleset([set('a', [...keep, ...many])]))).toBeUndefined();
  });

  it('refills a set whose members mostly changed', () => {
    const delta = memberDelta(ruleset([set('a', ['198.18.0.1/32'])]), ruleset([set('a', ['198.18.0.5/32'])]));
    expect(delta?.[0]?.flush).toBe(true);
    expect(delta?.[0]?.remove).toEqual([]);
    expect(delta?.[0]?.add).toHaveLength(2);
  });

  it('sends one message per set and kind, whose elements read back as the keys', () => {
    const prev = ruleset([set('a', ['198.18.0.1/32', '198.18.0.2/32', '198.18.0.4/32'])]);
    const next = ruleset([set('a', ['198.18.0.1/32', '198.18.0.3/32', '198.18.0.4/32'])]);
    const messages = elementMessages('switchyard', memberDelta(prev, next) ?? []);
    expect(messages.map((m) => m.object)).toEqual(['set a', 'set a']);
    const keys: string[][] = [];
    for (const m of messages) {
      const header = Buffer.alloc(16);
      header.writeUInt32LE(16 + m.body.length, 0);
      header.writeUInt16LE((10 << 8) | 12, 4); // parsed as NEWSETELEM: the same attribute layout
      const seen: string[] = [];
      parseMessages(Buffer.concat([header, m.body]), 16 + m.body.length, (b, off, len) =>
        seen.push(b.subarray(off, off + len).toString('hex')),
      );
      keys.push(seen);
    }
    expect(keys).toEqual([
      ['c6120002', 'c6120003'],
      ['c6120003', 'c6120004'],
    ]);
  });
});

function ipset(name: string, members: string[], extra: Partial<SetSpec> = {}): SetSpec {
  return { name, irId: name, type: 'hash:net', family: 4, members, description: name, ...extra };
}

function plan(sets: SetSpec[]): NodePlan {
  return {
    node: 'n1',
    sets,
    tables: [
      {
        family: 4,
        table: 'filter',
        chains: [{ name: 'SY-FORWARD', rules: ['-m set --match-set sy-a src -j ACCEPT'] }],
        jumps: [{ builtin: 'FORWARD', rule: '-j SY-FORWARD' }],
      },
    ],
    fallbacks: [],
  };
}

describe('iptables members-only delta', () => {
  const members = ['198.18.0.1/32', '198.18.0.2/32', '198.18.0.3/32'];

  it('changes a set in place, with no table to restore, when only members changed', () => {
    const applied = plan([ipset('sy-a', members)]);
    const next = plan([ipset('sy-a', ['198.18.0.1/32', '198.18.0.3/32', '198.18.0.9/32'])]);
    const diff = diffPlan(next, applied, kernelStateAfter(applied));
    expect(diff.sets).toEqual([]);
    expect(diff.tables).toEqual([]);
    expect(diff.deltas.map((d) => [d.set.name, d.add, d.del])).toEqual([
      ['sy-a', ['198.18.0.9/32'], ['198.18.0.2/32']],
    ]);
  });

  it('adds before it deletes, and undoes the lines that ran, last first', () => {
    const d = setDelta(
      ipset('sy-a', members),
      ipset('sy-a', ['198.18.0.1/32', '198.18.0.3/32', '198.18.0.9/32']),
    );
    expect(deltaScript(d ? [d] : [])).toBe('add -exist sy-a 198.18.0.9/32\ndel -exist sy-a 198.18.0.2/32\n');
    expect(undoDeltaScript(d ? [d] : [], 2)).toBe(
      'add -exist sy-a 198.18.0.2/32\ndel -exist sy-a 198.18.0.9/32\n',
    );
    expect(undoDeltaScript(d ? [d] : [], 1)).toBe('del -exist sy-a 198.18.0.9/32\n');
  });

  it('builds and swaps a set whose type, family or size class changes, and never touches flow sets', () => {
    const big = Array.from({ length: 65536 }, (_, i) => `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}/32`);
    expect(setDelta(ipset('sy-a', big), ipset('sy-a', [...big, '198.18.0.1/32']))).toBeUndefined();
    expect(setDelta(ipset('sy-a', members), ipset('sy-a', members, { family: 6 }))).toBeUndefined();
    expect(
      setDelta(ipset('sy-a', members), ipset('sy-a', members, { type: 'hash:ip,port' })),
    ).toBeUndefined();
    const flow = { flow: { timeoutS: 60, maxelem: 1024 } };
    expect(setDelta(ipset('sy-f', [], flow), ipset('sy-f', [], flow))).toBeUndefined();
    // A set not in the kernel is created and filled, never changed in place.
    const applied = plan([]);
    const diff = diffPlan(plan([ipset('sy-a', members)]), applied, kernelStateAfter(applied));
    expect(diff.deltas).toEqual([]);
    expect(diff.sets.map((s) => s.name)).toEqual(['sy-a']);
  });
});
