/**
 * The eBPF backend's pure half: `render` (what `switchyard compile --backend ebpf` prints) is
 * deterministic and needs no kernel; the listing carries the rule structure of the IR; set
 * indices and counter slots are allocated stably, so a membership change alone generates the
 * very same programs (only maps change).
 */
import { describe, expect, it } from 'vitest';
import { disassemble } from '../../src/bpf/index.js';
import { createEbpfBackend } from '../../src/dataplane/ebpf/index.js';
import { desiredSetEntries } from '../../src/dataplane/ebpf/maps.js';
import { allocate, nodeView, type NodeView } from '../../src/dataplane/ebpf/node.js';
import { prefilterEntries } from '../../src/dataplane/ebpf/prefilter.js';
import { allocateWithTables } from '../../src/dataplane/ebpf/tables.js';
import { policyProgram, programHash } from '../../src/dataplane/ebpf/program.js';
import type { IR } from '../../src/ir/types.js';
import {
  globalPolicy,
  modelOf,
  namespace,
  networkPolicy,
  pod,
  prefilter,
  type Manifest,
  compileIR,
} from '../support/manifests.js';

function cluster(labelsOfB: Record<string, string> = { app: 'web' }): Manifest[] {
  return [
    namespace('shop', { team: 'blue' }),
    pod('shop', 'db', {
      labels: { app: 'db' },
      ip: '198.18.0.10',
      node: 'n1',
      ports: [{ name: 'sql', containerPort: 5432 }],
    }),
    pod('shop', 'web', { labels: labelsOfB, ip: '198.18.0.11', node: 'n1' }),
    pod('shop', 'cache', { labels: { app: 'cache' }, ip: '198.18.0.12', node: 'n2' }),
    globalPolicy('guard', {
      order: 10,
      selector: { matchLabels: { app: 'db' } },
      types: ['Ingress'],
      ingress: [
        { action: 'Log', protocol: 'TCP', ports: [{ port: 22 }] },
        { action: 'Deny', from: [{ nets: ['198.18.200.0/24'] }] },
        { action: 'Pass', from: [{ namespaceSelector: { matchLabels: { team: 'blue' } } }] },
        { action: 'Deny' },
      ],
    }),
    networkPolicy('shop', 'db-from-web', {
      podSelector: { matchLabels: { app: 'db' } },
      policyTypes: ['Ingress'],
      ingress: [
        {
          from: [{ podSelector: { matchLabels: { app: 'web' } } }],
          ports: [{ port: 'sql' }, { port: 6000, endPort: 6010 }],
        },
      ],
    }),
    prefilter('blocklist', { cidrs: ['198.18.200.0/24', '198.18.201.7/32'] }),
  ];
}

const ir = (labelsOfB?: Record<string, string>): IR => compileIR(modelOf(cluster(labelsOfB)));

describe('ebpf render', () => {
  const backend = createEbpfBackend();

  it('is deterministic and pure (same text for the same IR, from a fresh copy too)', () => {
    const a = backend.render(ir(), 'n1');
    const b = backend.render(structuredClone(ir()), 'n1');
    expect(b.text).toEqual(a.text);
    expect(a.backend).toBe('ebpf');
    expect(a.node).toBe('n1');
  });

  it('lists maps, their contents, and one program per endpoint and direction with the rule structure', () => {
    const text = backend.render(ir(), 'n1').text;
    for (const map of [
      'ct',
      'ipsets',
      'portsets',
      'counters',
      'flows',
      'flows_lost',
      'pf_trie',
      'pf_trie6',
      'pf_counters',
    ])
      expect(text).toMatch(new RegExp(`^#   ${map} `, 'm'));
    expect(text).toMatch(/^# program sy_i_\w{8}: shop\/db ingress policy, tcx egress on sy\w+/m);
    expect(text).toMatch(/^# program sy_e_\w{8}: shop\/db egress policy, tcx ingress on sy\w+/m);
    expect(text.match(/^# program sy_[ie]_/gm)?.length).toBe(4); // db and web, both directions
    expect(text).toMatch(/^# program sy_prefilter: XDP/m);
    expect(text).toContain('list 0 blocklist: 2 prefixes: 198.18.200.0/24, 198.18.201.7/32');
    expect(text).toContain('gp:guard/ingress/0: log TCP ports 22');
    expect(text).toContain('#   default: deny');

    // db's ingress program in order: Log (TCP 22, aggregate), Deny (set), Pass (set), Deny, then the
    // Kubernetes tier (named port 5432 and 6000-6010 from web) and its default.
    const start = text.indexOf('shop/db ingress policy');
    const db = text.slice(start, text.indexOf('# program', start));
    const listing = db.slice(db.indexOf('\n    '));
    const order = ['r0_next:', 'r1_next:', 'r2_next:', 'k8s:', 'allow:', 'deny:'];
    const positions = order.map((l) => listing.indexOf(l));
    expect(positions.every((p) => p >= 0)).toBe(true);
    expect([...positions].sort((x, y) => x - y)).toEqual(positions);
    expect(listing).toContain('if r9 != 0x6 goto'); // protocol TCP
    expect(listing).toContain('if r8 < 0x16 goto'); // port 22
    expect(listing).toContain('if r8 < 0x1770 goto'); // 6000…
    expect(listing).toContain('if r8 > 0x177a goto'); // …6010
    expect(listing).toContain('<sub_in_set>');
    expect(listing).toContain('<sub_flow>');
    expect(listing).toContain('r1 = map[flows]');
    expect(listing).toContain('r1 = map[ct]');
    expect(listing).toContain('r1 = map[ipsets]');
    // The unconditional Deny ends the global tier: nothing falls through to the Kubernetes tier
    // (only Pass jumps there), and the dead r3_next label is not placed.
    expect(listing).not.toContain('r3_next:');
  });

  it('generates identical programs when only set membership changes', () => {
    const before = nodeView(ir(), 'n1');
    const after = nodeView(ir({ app: 'web', extra: 'yes' }), 'n1');
    const relabeled = nodeView(ir({ app: 'other' }), 'n1');
    const alloc = allocate(before);
    expect(allocate(relabeled, alloc)).toEqual(alloc);
    for (const view of [after, relabeled]) {
      const next = allocate(view, alloc);
      view.ruleSets
        .filter((rs) => rs.endpoint === 'shop/db')
        .forEach((rs, i) => {
          const old = policyProgram(
            before.ruleSets.filter((r) => r.endpoint === 'shop/db')[i] as typeof rs,
            alloc,
          );
          expect(programHash(policyProgram(rs, next).program)).toBe(programHash(old.program));
        });
    }
    // …while the set contents differ: web left the "app=web" set.
    const members = (v: typeof before): string[] =>
      [...desiredSetEntries(v, allocate(v, alloc)).keys()].sort();
    expect(members(relabeled)).not.toEqual(members(before));
  });

  it('numbers a walk-mode node in one allocation, the same as allocate gives it', () => {
    const view = nodeView(ir(), 'n1');
    const previous = allocate(nodeView(ir({ app: 'other' }), 'n1'));
    const { alloc, tables } = allocateWithTables(view, previous);
    expect(alloc).toEqual(allocate(view, previous, []));
    expect(tables).toEqual({ tabled: new Map(), fallbacks: [] });
  });

  it('refuses a node whose rules name a set the IR does not carry', () => {
    const whole = ir();
    const named = nodeView(whole, 'n1').ipSets[0]?.id;
    expect(named).toBeDefined();
    const broken: IR = { ...whole, ipSets: whole.ipSets.filter((s) => s.id !== named) };
    expect(() => nodeView(broken, 'n1')).toThrow(`IR references unknown IP set ${named}`);
  });

  it('keeps numbers of what stays; a number freed by an update is reused only by the next one', () => {
    const view = nodeView(ir(), 'n1');
    const first = allocate(view);
    const slots = Object.values(first.slots);
    expect(new Set(slots).size).toBe(slots.length);
    expect(Math.min(...slots)).toBe(1);
    const shifted = {
      ...first,
      slots: Object.fromEntries(Object.entries(first.slots).map(([k, v]) => [k, v + 100])),
    };
    expect(allocate(view, shifted).slots).toEqual(shifted.slots);

    const sets = (...ids: string[]): NodeView => ({
      ...view,
      ruleSets: [],
      ipPortSets: [],
      ipSets: ids.map((id) => ({ id, description: id, cidrs: [] })),
    });
    const a = allocate(sets('s1', 's2'));
    expect(a.sets).toEqual({ s1: 1, s2: 2 });
    // s1 leaves as s3 arrives: the programs still running until the swap read index 1 as s1.
    const b = allocate(sets('s2', 's3'), a);
    expect(b.sets).toEqual({ s2: 2, s3: 3 });
    const c = allocate(sets('s2', 's3', 's4'), b);
    expect(c.sets).toEqual({ s2: 2, s3: 3, s4: 1 });
  });

  it('counts a prefix covered by an earlier deny-list under that list', () => {
    const entries = prefilterEntries([
      { name: 'a', index: 0, setId: 'a', cidrs: ['198.18.0.0/16'] },
      { name: 'b', index: 1, setId: 'b', cidrs: ['198.18.5.0/24', '198.19.0.0/24'] },
    ]);
    expect(Object.fromEntries(entries)).toEqual({
      '198.18.0.0/16': 0,
      '198.18.5.0/24': 0,
      '198.19.0.0/24': 1,
    });
  });

  it('keeps each family apart and counts an IPv6 prefix covered by an earlier list under that list', () => {
    const entries = prefilterEntries([
      { name: 'a', index: 0, setId: 'a', cidrs: ['198.18.0.0/16', 'fd00:5957:1::/48'] },
      {
        name: 'b',
        index: 1,
        setId: 'b',
        cidrs: ['198.18.5.0/24', 'fd00:5957:1:2::/64', 'fd00:5957:2::1/128', '::/0'],
      },
    ]);
    expect(Object.fromEntries(entries)).toEqual({
      '198.18.0.0/16': 0,
      'fd00:5957:1::/48': 0,
      '198.18.5.0/24': 0,
      'fd00:5957:1:2::/64': 0,
      'fd00:5957:2::1/128': 1,
      // ::/0 holds list a's /48 but is not inside it: list b's own.
      '::/0': 1,
    });
  });

  it('comments every block and rule, so the listing reads like the policy (and the code stays the same)', () => {
    const text = backend.render(ir(), 'n1').text;
    const start = text.indexOf('shop/db ingress policy');
    const db = text.slice(start, text.indexOf('# program', start));
    const comments = db
      .split('\n')
      .filter((l) => l.startsWith('    ; '))
      .map((l) => l.slice(6));
    const expected = [
      'parse: clear the conntrack key, then Ethernet',
      "conntrack: the time, then this packet's own connection",
      'fail closed (fragment): count in slot',
      'global tier: rules in order, Log goes on, Pass skips to Kubernetes',
      'rule gp:guard/ingress/0: log TCP ports 22 (counter slot',
      'rule gp:guard/ingress/1: deny peer in ',
      'rule gp:guard/ingress/2: pass peer in ',
      'rule gp:guard/ingress/3: deny (counter slot',
      'Kubernetes tier: any matching rule allows',
      'allow: record the connection in conntrack (with the slot), its aggregate, pass',
      'deny: the aggregate, drop',
      'subprogram count(slot r1, bytes r2)',
      'subprogram flow(slot r1, frame r2, ctx r3, verdict r4, connections r5)',
    ];
    const at = expected.map((e) => comments.findIndex((c) => c.startsWith(e)));
    expect(at.filter((i) => i < 0).map((_, k) => expected[k])).toEqual([]);
    expect([...at].sort((x, y) => x - y)).toEqual(at);
    expect(comments.some((c) => /^rule np:shop\/db-from-web\/ingress\/0: allow TCP ports 5432/.test(c))).toBe(
      true,
    );
    // Comments live beside the code: the listing without them is the instructions alone.
    const view = nodeView(ir(), 'n1');
    const rs = view.ruleSets.find((r) => r.endpoint === 'shop/db' && r.direction === 'ingress');
    const g = policyProgram(rs as NonNullable<typeof rs>, allocate(view));
    expect(g.program.comments?.size).toBeGreaterThan(10);
    const bare = disassemble(g.program, { comments: new Map() });
    expect(
      disassemble(g.program)
        .split('\n')
        .filter((l) => !l.startsWith('; ')),
    ).toEqual(bare.split('\n'));
  });

  it('emits listings the disassembler reads back (every jump resolved to a label)', () => {
    const view = nodeView(ir(), 'n1');
    const alloc = allocate(view);
    for (const rs of view.ruleSets) {
      const g = policyProgram(rs, alloc);
      expect(g.name).toMatch(/^sy_[ie]_[0-9a-f]{8}$/);
      const listing = disassemble(g.program);
      expect(listing).not.toMatch(/goto pc[+-]\d+$/m);
    }
  });
});
