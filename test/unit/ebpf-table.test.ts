/**
 * Table mode of the eBPF backend, the pure half: port ranges as port prefixes (exact cover, fewest
 * prefixes), the byte layout of the table trie's keys and values (what the programs and the LPM
 * trie agree on), a table's encoding (slots for rule ids, IPv6 left out, class 0 a miss), the
 * node budget that keeps oversized tables on the walk, and programs that do not change when only
 * rules change.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { codecs } from '../../src/bpf/index.js';
import {
  IPPROTO,
  TABLE_KEY_KIND,
  TABLE_LOG_SLOTS,
  TABLE_OTHER_PROTOCOL,
  tablePeerKey,
  tablePortKey,
  tableValue,
} from '../../src/dataplane/ebpf/layout.js';
import { allocate, hookKey, nodeView } from '../../src/dataplane/ebpf/node.js';
import { policyProgram, programHash } from '../../src/dataplane/ebpf/program.js';
import { renderNode } from '../../src/dataplane/ebpf/render.js';
import { encodeTable, peerKey, portKey, portRangePrefixes } from '../../src/dataplane/ebpf/table-encoding.js';
import { chooseTables } from '../../src/dataplane/ebpf/tables.js';
import type { DecisionTable, PortEntry, TableEntry } from '../../src/ir/decision-table.js';
import type { IR } from '../../src/ir/types.js';
import {
  compileIR,
  globalPolicy,
  modelOf,
  namespace,
  networkPolicy,
  pod,
  type Manifest,
} from '../support/manifests.js';

function covered(prefixes: { value: number; bits: number }[]): number[] {
  return prefixes.flatMap((p) => {
    const size = 2 ** (16 - p.bits);
    return Array.from({ length: size }, (_, i) => p.value + i);
  });
}

describe('port ranges as port prefixes', () => {
  it('covers exactly the range, each port once, with aligned prefixes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 4000 }), (first, span) => {
        const last = Math.min(65535, first + span);
        const prefixes = portRangePrefixes(first, last);
        const ports = covered(prefixes);
        expect(ports).toEqual(Array.from({ length: last - first + 1 }, (_, i) => first + i));
        for (const p of prefixes) expect(p.value % 2 ** (16 - p.bits)).toBe(0);
        expect(prefixes.length).toBeLessThanOrEqual(30);
      }),
    );
  });

  it('uses the fewest prefixes (known cases)', () => {
    expect(portRangePrefixes(0, 65535)).toEqual([{ value: 0, bits: 0 }]);
    expect(portRangePrefixes(80, 80)).toEqual([{ value: 80, bits: 16 }]);
    expect(portRangePrefixes(1024, 2047)).toEqual([{ value: 1024, bits: 6 }]);
    expect(portRangePrefixes(1, 65534)).toHaveLength(30);
    expect(portRangePrefixes(6000, 6010)).toEqual([
      { value: 6000, bits: 13 },
      { value: 6008, bits: 15 },
      { value: 6010, bits: 16 },
    ]);
    expect(portRangePrefixes(82, 65535).length).toBe(13);
  });

  it('refuses what is not a port range', () => {
    expect(() => portRangePrefixes(5, 4)).toThrow(RangeError);
    expect(() => portRangePrefixes(0, 65536)).toThrow(RangeError);
  });
});

describe('table trie layout', () => {
  it('peer keys: prefixlen, kind 0, padding, the address in network order, IPv4 mapped (24 bytes)', () => {
    const key = codecs.encode(tablePeerKey, peerKey('198.18.4.0/22'));
    expect(key.toString('hex')).toBe(
      [
        '96000000', // prefixlen 32 + 96 + 22, host order
        '00000000', // kind peer, padding
        '00000000000000000000ffff', // ::ffff:
        'c6120400', // 198.18.4.0
      ].join(''),
    );
    const v6 = codecs.encode(tablePeerKey, peerKey('fd00:5957:0:1::/64'));
    expect(v6.toString('hex')).toBe(
      ['60000000', '00000000', 'fd00595700000001', '0000000000000000'].join(''),
    );
  });

  it('port keys: prefixlen, kind 1, protocol, class, the port big-endian, padding (24 bytes, as long as a peer key)', () => {
    const key = codecs.encode(tablePortKey, portKey(3, IPPROTO.TCP, { value: 6000, bits: 12 }));
    expect(key.toString('hex')).toBe(
      [
        '2c000000', // prefixlen 32 + 12
        '01', // kind port
        '06', // TCP
        '0300', // class 3 (matched in full: byte order is the host's)
        '1770', // 6000 big-endian: the prefix bits come first
        '0000',
        '00'.repeat(12), // never matched
      ].join(''),
    );
    expect(tablePortKey.size).toBe(24);
    expect(tablePeerKey.size).toBe(24);
    expect(TABLE_KEY_KIND).toEqual({ peer: 0, port: 1 });
  });

  it('values: slot, pass slot, verdict, log count, class, the Log slots', () => {
    expect(tableValue.offsets).toEqual({
      slot: 0,
      passSlot: 4,
      verdict: 8,
      logCount: 9,
      class: 10,
      logs: 12,
    });
    expect(tableValue.size).toBe(12 + 4 * TABLE_LOG_SLOTS);
  });
});

const ALLOW: Omit<TableEntry, 'rule'> = { verdict: 'allow', reason: 'kubernetes-rule', logged: [] };

function table(logged: string[] = []): DecisionTable {
  const full = (e: TableEntry): PortEntry[] => [{ ...e, first: 0, last: 65535 }];
  const deny: TableEntry = {
    verdict: 'deny',
    rule: 'ep/ingress/default',
    reason: 'kubernetes-default-deny',
    logged,
  };
  const allow80: TableEntry = { ...ALLOW, rule: 'np/ingress/0', logged };
  return {
    endpoint: 'ns/ep',
    direction: 'ingress',
    prefixes: [
      { cidr: '198.18.0.8/29', classId: 1 },
      { cidr: '198.18.0.16/32', classId: 0 },
      { cidr: 'fd00:5957::/64', classId: 1 },
    ],
    classes: [
      { id: 0, ports: { TCP: full(deny), UDP: full(deny), SCTP: full(deny) }, icmp: deny, other: deny },
      {
        id: 1,
        ports: {
          TCP: [
            { ...deny, first: 0, last: 79 },
            { ...allow80, first: 80, last: 80 },
            { ...deny, first: 81, last: 65535 },
          ],
          UDP: full(deny),
          SCTP: full(deny),
        },
        icmp: deny,
        other: { ...deny, passedBy: 'gp/ingress/1' },
      },
    ],
  };
}

const SLOTS: Record<string, number> = {
  'ep/ingress/default': 7,
  'np/ingress/0': 8,
  'gp/ingress/0': 9,
  'gp/ingress/1': 10,
};
const slot = (rule: string): number => {
  const n = SLOTS[rule];
  if (n === undefined) throw new Error(`no slot for ${rule}`);
  return n;
};

describe('a table as trie entries', () => {
  it('loads prefixes of both families of classes other than 0; per protocol a background entry and the prefixes of the rest', () => {
    const encoding = encodeTable(table(), slot);
    if (!encoding.ok) throw new Error(encoding.reason);
    const t = encoding.table;
    expect(t.prefixes).toBe(2);
    // Both families in one trie: IPv4 mapped (prefix 32 + 96 + 29), IPv6 as is (32 + 64).
    const peers = t.entries
      .map((e) => codecs.decode(tablePeerKey, e.key))
      .filter((k) => k.kind === TABLE_KEY_KIND.peer)
      .map((k) => `${k.addr}/${k.prefixlen}`);
    expect(peers).toEqual(['198.18.0.8/157', 'fd00:5957::/96']);
    // class 0: 3 full ranges + ICMP + other; class 1: TCP's background (the deny of 0–79 and
    // 81–65535) and port 80, UDP, SCTP, ICMP, other: the ranges around 80 take no prefixes.
    expect(t.entries.length).toBe(2 + 5 + 2 + 4);
    const tcp = (port: number): number | undefined => {
      // The trie's answer: the longest prefix of class 1's TCP rows that holds the port.
      let best: { bits: number; slot: number } | undefined;
      for (const e of t.entries) {
        const k = codecs.decode(tablePortKey, e.key);
        if (k.kind !== TABLE_KEY_KIND.port || k.class !== 1 || k.proto !== 6) continue;
        const bits = k.prefixlen - 32;
        const mask = bits === 0 ? 0 : (0xffff << (16 - bits)) & 0xffff;
        if ((port & mask) === (k.port & mask) && (!best || bits > best.bits))
          best = { bits, slot: e.value.slot };
      }
      return best?.slot;
    };
    expect([0, 79, 80, 81, 65535].map(tcp)).toEqual([7, 7, 8, 7, 7]);
    const other = t.entries.find((e) => {
      const k = codecs.decode(tablePortKey, e.key);
      return k.kind === TABLE_KEY_KIND.port && k.class === 1 && k.proto === TABLE_OTHER_PROTOCOL;
    });
    expect(other?.value).toMatchObject({ slot: 7, passSlot: 10, verdict: 2, logCount: 0 });
    const http = t.entries.find((e) => {
      const k = codecs.decode(tablePortKey, e.key);
      return k.kind === TABLE_KEY_KIND.port && k.class === 1 && k.port === 80 && k.prefixlen === 48;
    });
    expect(http?.value).toMatchObject({ slot: 8, verdict: 1 });
  });

  it('carries Log slots in order, and refuses more than an entry holds', () => {
    const logged = encodeTable(table(['gp/ingress/0']), slot);
    if (!logged.ok) throw new Error(logged.reason);
    expect(logged.table.entries.at(-1)?.value.logs.slice(0, 2)).toEqual([9, 0]);
    expect(logged.table.entries.at(-1)?.value.logCount).toBe(1);
    const many = Array.from({ length: TABLE_LOG_SLOTS + 1 }, () => 'gp/ingress/0');
    expect(encodeTable(table(many), slot)).toMatchObject({ ok: false });
  });

  it('hashes what it loads: another slot is another table', () => {
    const a = encodeTable(table(), slot);
    const b = encodeTable(table(), (r) => slot(r) + (r === 'np/ingress/0' ? 100 : 0));
    if (!a.ok || !b.ok) throw new Error('encoding failed');
    expect(a.table.hash).not.toBe(b.table.hash);
    expect(encodeTable(table(), slot)).toEqual(a);
  });
});

function cluster(port: number): Manifest[] {
  return [
    namespace('shop'),
    pod('shop', 'db', { labels: { app: 'db' }, ip: '198.18.0.10', node: 'n1' }),
    pod('shop', 'web', { labels: { app: 'web' }, ip: '198.18.0.11', node: 'n1' }),
    globalPolicy('audit', {
      order: 1,
      selector: { matchLabels: { app: 'db' } },
      types: ['Ingress'],
      ingress: [{ action: 'Log', protocol: 'TCP' }, { action: 'Pass' }],
    }),
    networkPolicy('shop', 'db-from-web', {
      podSelector: { matchLabels: { app: 'db' } },
      policyTypes: ['Ingress'],
      ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port }] }],
    }),
  ];
}

function tableIR(port: number): IR {
  return compileIR(modelOf(cluster(port)), { policyMode: 'table' });
}

describe('table-mode programs', () => {
  it('do not change when only rules change (a rule change is a map update)', () => {
    const a = tableIR(5432);
    const b = tableIR(6432);
    const viewA = nodeView(a, 'n1');
    const allocA = allocate(viewA);
    const allocB = allocate(nodeView(b, 'n1'), allocA);
    expect(Object.keys(allocA.tables ?? {}).sort()).toEqual(
      viewA.ruleSets.map((rs) => hookKey(rs.endpoint, rs.direction)).sort(),
    );
    for (const rs of viewA.ruleSets) {
      const other = b.ruleSets.find((r) => r.endpoint === rs.endpoint && r.direction === rs.direction);
      if (!other) throw new Error('rule set missing');
      expect(programHash(policyProgram(other, allocB).program)).toBe(
        programHash(policyProgram(rs, allocA).program),
      );
    }
    // The walk of the same rule sets does change.
    const walkA = { ...allocA, tables: {} };
    const db = (ir: IR) => ir.ruleSets.find((r) => r.endpoint === 'shop/db' && r.direction === 'ingress');
    const [dbA, dbB] = [db(a), db(b)];
    if (!dbA || !dbB) throw new Error('no db rule set');
    expect(programHash(policyProgram(dbA, walkA).program)).not.toBe(
      programHash(policyProgram(dbB, { ...allocB, tables: {} }).program),
    );
  });

  it('keep the walk for tables beyond the node budget, and say why', () => {
    const ir = tableIR(5432);
    const view = nodeView(ir, 'n1');
    const slots = allocate(view).slots;
    const all = chooseTables(view.ruleSets, slots);
    expect(all.fallbacks).toEqual([]);
    expect(all.tabled.size).toBe(view.ruleSets.length);
    const two = chooseTables(view.ruleSets, slots, { hooks: 2, entries: 1 << 20 });
    expect(two.tabled.size).toBe(2);
    expect(two.fallbacks.map((f) => f.reason)).toEqual(
      Array.from({ length: view.ruleSets.length - 2 }, () => 'the node holds 2 tables at most'),
    );
    const tiny = chooseTables(view.ruleSets, slots, { hooks: 100, entries: 4 });
    expect(tiny.tabled.size).toBe(0);
    expect(tiny.fallbacks[0]?.reason).toMatch(/trie entries exceed/);
  });

  it('render lists each table-mode program with its table', () => {
    const text = renderNode(tableIR(5432), 'n1');
    expect(text).toMatch(/decision table/);
    expect(text).toMatch(/policy/);
  });
});
