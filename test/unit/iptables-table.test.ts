/**
 * Table mode of the iptables backend (render-table.ts), without a kernel. The rendered rules are
 * run by a small interpreter (iptables-interpreter.ts) for packets at every edge of every prefix
 * and port range, and must give what the rule walk's rendering gives — verdict, the rule comments
 * that count the packet (counters), the flow sets that aggregate it (Log rules and decisions) —
 * and what the
 * table's `lookup` says; on hand-written policies with every feature, the examples, and random
 * models. Also: the cost of a packet does not follow the number of rules, names fit the kernel's
 * limits, and a one-rule change is a new set generation and a few new chains.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { countersFromSaved } from '../../src/dataplane/iptables/counters.js';
import { diffPlan, kernelStateAfter } from '../../src/dataplane/iptables/diff.js';
import { IptablesBackend } from '../../src/dataplane/iptables/index.js';
import type { KernelState, KernelTable, SavedTable } from '../../src/dataplane/iptables/kernel.js';
import {
  DEFAULT_ALLOW_COMMENT,
  DEFAULT_DENY_COMMENT,
  endpointChain,
  flowSetName,
  parseEndpointChain,
} from '../../src/dataplane/iptables/names.js';
import { planForNode } from '../../src/dataplane/iptables/render.js';
import { flowRuleTag } from '../../src/dataplane/netfilter/aggregates.js';
import { PORT_PROTOCOLS, type DecisionTable } from '../../src/ir/decision-table.js';
import { lookup } from '../../src/ir/table-lookup.js';
import { defaultRuleId } from '../../src/ir/rule-ids.js';
import type { IR, RuleSet } from '../../src/ir/types.js';
import { loadManifests } from '../../src/model/index.js';
import type { Model } from '../../src/model/types.js';
import { formatAddress, parseCidr } from '../../src/util/ip.js';
import { modelArb } from '../support/arbitraries.js';
import {
  compileIR,
  globalPolicy,
  type ContainerPortSpec,
  modelOf,
  namespace,
  networkPolicy,
  pod,
  type Manifest,
} from '../support/manifests.js';
import { runChain, type Outcome, type Packet } from './iptables-interpreter.js';

const WEB_PORTS: ContainerPortSpec[] = [
  { name: 'http', containerPort: 80 },
  { name: 'dns', containerPort: 53, protocol: 'UDP' },
  { name: 'sig', containerPort: 9, protocol: 'SCTP' },
];

/** Tiers, Pass, Log, ipBlock except, named ports, port ranges, UDP, SCTP, ICMP, IPv6 blocks. */
function manifests(dbPort = 80): Manifest[] {
  return [
    namespace('shop', { team: 'shop' }),
    namespace('other', { team: 'other' }),
    pod('shop', 'web', { labels: { app: 'web' }, ip: '198.18.1.1', node: 'node-a', ports: WEB_PORTS }),
    pod('shop', 'db', { labels: { app: 'db' }, ip: '198.18.1.2', node: 'node-a', ports: WEB_PORTS }),
    pod('other', 'client', { labels: { app: 'client' }, ip: '198.18.2.1', node: 'node-b' }),
    pod('other', 'web', {
      labels: { app: 'web' },
      ip: '198.18.2.2',
      node: 'node-b',
      ports: [{ name: 'http', containerPort: 8080 }],
    }),
    globalPolicy('guard', {
      order: 10,
      selector: { matchLabels: { app: 'db' } },
      ingress: [
        { action: 'Log' },
        { action: 'Pass', from: [{ namespaceSelector: { matchLabels: { team: 'shop' } } }] },
        { action: 'Deny', protocol: 'ICMP' },
        { action: 'Allow', protocol: 'UDP', ports: [{ port: 53 }] },
        { action: 'Deny' },
      ],
      egress: [
        { action: 'Log', protocol: 'SCTP' },
        { action: 'Deny', protocol: 'SCTP' },
      ],
    }),
    networkPolicy('shop', 'db-from-web', {
      podSelector: { matchLabels: { app: 'db' } },
      ingress: [
        {
          from: [{ podSelector: { matchLabels: { app: 'web' } } }],
          ports: [{ port: dbPort }, { port: 5000, endPort: 5100 }, { protocol: 'SCTP', port: 9 }],
        },
        { from: [{ ipBlock: { cidr: '198.18.0.0/16', except: ['198.18.2.0/24'] } }], ports: [{ port: 443 }] },
        { from: [{ ipBlock: { cidr: '2001:db8::/32' } }] },
      ],
    }),
    networkPolicy('shop', 'web-out', {
      podSelector: { matchLabels: { app: 'web' } },
      policyTypes: ['Egress'],
      egress: [
        {
          to: [{ podSelector: { matchLabels: { app: 'web' } }, namespaceSelector: {} }],
          ports: [{ port: 'http' }],
        },
        {
          to: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['198.18.2.0/24'] } }],
          ports: [{ protocol: 'UDP', port: 53 }],
        },
        { ports: [{ protocol: 'SCTP', port: 9 }] },
      ],
    }),
  ];
}

/** Both renderings of one model, flow logs on (the default): same allocation, same rules. */
function both(model: Model): { walk: IR; table: IR } {
  return { walk: compileIR(model), table: compileIR(model, { policyMode: 'table' }) };
}

function shift(cidr: string, which: 'first' | 'last', by: bigint): string | undefined {
  const c = parseCidr(cidr);
  if (!c) return undefined;
  const bits = BigInt((c.family === 4 ? 32 : 128) - c.prefix);
  const v = (which === 'first' ? c.base : c.base + (1n << bits) - 1n) + by;
  if (v < 0n || v >= 1n << BigInt(c.family === 4 ? 32 : 128)) return undefined;
  return formatAddress({ family: c.family, value: v });
}

/** Every prefix's edges ±1, the pods, and addresses under no prefix. */
function remotes(ir: IR, table: DecisionTable): string[] {
  const out = new Set(['0.0.0.0', '255.255.255.255', '10.9.9.9', '::', '2001:db8::1', 'fd00:5957::9']);
  for (const e of ir.endpoints) for (const a of e.addresses) out.add(a);
  for (const p of table.prefixes)
    for (const [w, by] of [
      ['first', -1n],
      ['first', 0n],
      ['last', 0n],
      ['last', 1n],
    ] as const) {
      const a = shift(p.cidr, w, by);
      if (a) out.add(a);
    }
  return [...out];
}

function ports(table: DecisionTable): number[] {
  const out = new Set<number>();
  for (const c of table.classes)
    for (const p of PORT_PROTOCOLS) for (const e of c.ports[p]) for (const v of [e.first, e.last]) out.add(v);
  return [...out];
}

function familyOf(address: string): 4 | 6 {
  return address.includes(':') ? 6 : 4;
}

/** What a packet must get in table mode according to the table itself. */
function fromLookup(table: DecisionTable, rs: RuleSet, p: Packet): Omit<Outcome, 'steps' | 'lookups'> {
  const family = familyOf(p.remote);
  if (p.protocol === 'GRE') throw new Error('lookup has no other protocols');
  const e = lookup(table, p.remote, p.protocol, p.dport);
  const isDefault = e.rule === defaultRuleId(rs.endpoint, rs.direction);
  const decided = isDefault ? (e.verdict === 'deny' ? DEFAULT_DENY_COMMENT : DEFAULT_ALLOW_COMMENT) : e.rule;
  return {
    verdict: e.verdict,
    counted: [...e.logged, ...(e.passedBy === undefined ? [] : [e.passedBy]), decided],
    aggregated: [
      ...e.logged.map((id) => flowSetName(family, flowRuleTag('log', id))),
      flowSetName(family, flowRuleTag(e.verdict, e.rule)),
    ],
    notAggregated: [],
  };
}

function packetsFor(ir: IR, rs: RuleSet, table: DecisionTable): Packet[] {
  const out: Packet[] = [];
  const portList = ports(table);
  for (const remote of remotes(ir, table)) {
    for (const protocol of ['TCP', 'UDP', 'SCTP'] as const)
      for (const dport of portList) out.push({ remote, direction: rs.direction, protocol, dport });
    out.push({ remote, direction: rs.direction, protocol: 'ICMP' });
    out.push({ remote, direction: rs.direction, protocol: 'GRE' });
  }
  return out;
}

/** Table rendering = walk rendering = lookup, for every local rule set of every node. */
function agree(walk: IR, table: IR, sample?: (packets: Packet[]) => Packet[]): number {
  let checked = 0;
  for (const node of table.nodes.map((n) => n.name)) {
    const walkPlan = planForNode(walk, node);
    const tablePlan = planForNode(table, node);
    for (const rs of table.ruleSets) {
      if (table.endpoints.find((e) => e.id === rs.endpoint)?.node !== node) continue;
      const dt = rs.table;
      expect(dt, `${rs.endpoint} ${rs.direction} has a table`).toBeDefined();
      if (!dt) continue;
      const start = endpointChain(rs.endpoint, rs.direction, 'main');
      const all = packetsFor(table, rs, dt);
      for (const p of sample ? sample(all) : all) {
        const family = familyOf(p.remote);
        const { steps: _s, lookups: _sl, ...got } = runChain(tablePlan, family, start, p);
        const { steps: _w, lookups: _wl, ...want } = runChain(walkPlan, family, start, p);
        const what = `${node} ${rs.endpoint} ${rs.direction} ${p.remote} ${p.protocol} ${String(p.dport)}`;
        if (JSON.stringify(got) !== JSON.stringify(want)) expect(got, `${what} (walk)`).toEqual(want);
        if (p.protocol !== 'GRE') {
          const expected = fromLookup(dt, rs, p);
          if (JSON.stringify(got) !== JSON.stringify(expected))
            expect(got, `${what} (lookup)`).toEqual(expected);
        }
        checked++;
      }
    }
  }
  return checked;
}

describe('iptables table mode: same packets, counters and logs as the walk', () => {
  it('on every feature: tiers, Pass, Log, ipBlock except, named ports, ranges, UDP, SCTP, ICMP, IPv6', () => {
    const { walk, table } = both(modelOf(manifests()));
    expect(agree(walk, table)).toBeGreaterThan(1000);
  });

  it.each([
    ['xyz', ['examples/xyz']],
    ['walkthrough+global', ['examples/walkthrough', 'examples/global']],
  ])('on the %s example', (_, paths) => {
    const { walk, table } = both(loadManifests(paths));
    expect(agree(walk, table)).toBeGreaterThan(0);
  });

  it('on random models', () => {
    fc.assert(
      fc.property(modelArb, fc.integer({ min: 1, max: 1000 }), (model, seed) => {
        const { walk, table } = both(model);
        // Every 7th packet (offset by the seed): enough edges per run, and quick.
        agree(walk, table, (ps) => ps.filter((_, i) => (i + seed) % 7 === 0));
      }),
      { numRuns: 40 },
    );
  });
});

/** One NetworkPolicy with `n` rules, each from its own /24 to its own port. */
function manyRules(n: number): Model {
  const rules = Array.from({ length: n }, (_, i) => ({
    from: [{ ipBlock: { cidr: `10.${i >> 8}.${i & 255}.0/24` } }],
    ports: [{ port: 1000 + i }],
  }));
  return modelOf([
    namespace('a'),
    pod('a', 'srv', { labels: { app: 'srv' }, ip: '198.18.5.1', node: 'node-1' }),
    networkPolicy('a', 'many', { podSelector: { matchLabels: { app: 'srv' } }, ingress: rules }),
  ]);
}

describe('iptables table mode: cost per packet', () => {
  /** Most rules any of the probes took: each rule's own peer and port, and misses around them. */
  function worst(ir: IR, n: number, probes = 50): number {
    const plan = planForNode(ir, 'node-1');
    const start = endpointChain('a/srv', 'ingress', 'main');
    let most = 0;
    for (let i = 0; i < n; i += Math.max(1, Math.floor(n / probes)))
      for (const dport of [1000 + i, 999 + i, 5])
        for (const remote of [`10.${i >> 8}.${i & 255}.7`, '10.200.0.1'])
          most = Math.max(
            most,
            runChain(plan, 4, start, { remote, direction: 'ingress', protocol: 'TCP', dport }).steps,
          );
    return most;
  }

  it('grows with log(rules) in table mode, linearly in walk mode', () => {
    const small = both(manyRules(10));
    const large = both(manyRules(1000));
    const table10 = worst(small.table, 10);
    const table1000 = worst(large.table, 1000);
    const walk1000 = worst(large.walk, 1000, 2);
    console.log(
      `rules evaluated per new connection: table 10→${table10}, 1000→${table1000}; walk 1000→${walk1000}`,
    );
    expect(
      large.table.ruleSets.find((r) => r.endpoint === 'a/srv' && r.direction === 'ingress')?.table,
    ).toBeDefined();
    expect(table1000).toBeLessThan(60);
    expect(table1000 - table10).toBeLessThan(30);
    expect(walk1000).toBeGreaterThan(1000);
  });
});

describe('iptables table mode: objects', () => {
  const { table } = both(modelOf(manifests()));
  const plan = planForNode(table, 'node-a');

  it('names its sets sy-t…-<level><digit>-<generation> and its chains SY-FWT/TWT-…, within the kernel limits', () => {
    const tableSets = plan.sets.filter((s) => s.versioned);
    expect(tableSets.length).toBeGreaterThan(0);
    for (const s of tableSets) {
      expect(s.name).toMatch(/^sy-t[ei][46]-[0-9a-f]{9}-[0-9a-f]{2}-[0-9a-f]{7}$/);
      expect(`${s.name}-tmp`.length).toBeLessThanOrEqual(31);
      expect(s.type).toBe('hash:net');
    }
    const chains = plan.tables.flatMap((t) => t.chains.map((c) => c.name));
    const tableChains = chains.filter((c) => /^SY-[FT]WT-/.test(c));
    expect(tableChains.length).toBeGreaterThan(0);
    for (const c of tableChains) {
      expect(c.length).toBeLessThanOrEqual(28);
      expect(parseEndpointChain(c)?.tier).toBe('table');
    }
    // The walk's IR sets are not loaded for rule sets that have a table (only flow sets remain).
    expect(plan.sets.filter((s) => !s.versioned && !s.flow)).toEqual([]);
  });

  it('prints the table sets as built in place (no -tmp, no swap) in compile output', () => {
    const text = new IptablesBackend({ flowLogs: false }).render(table, 'node-a').text;
    expect(text).toMatch(/^create sy-ti4-\S+ hash:net family inet /m);
    expect(text).toMatch(/^add sy-ti4-\S+ 198\.18\./m);
    expect(text).not.toMatch(/-tmp|^swap /m);
  });

  it('turns a one-rule change into a new set generation and a few chains, the old set obsolete', () => {
    const next = both(modelOf(manifests(8080))).table;
    const nextPlan = planForNode(next, 'node-a');
    // The kernel as `plan` leaves it, without our jumps (so the diff inserts them).
    const applied = kernelStateAfter(plan);
    const kernel: KernelState = {
      ...applied,
      tables: new Map(
        [...applied.tables].map(([key, t]): [string, KernelTable] => [key, { ...t, jumps: [] }]),
      ),
    };
    const diff = diffPlan(nextPlan, plan, kernel);
    const written = diff.tables.flatMap((t) => t.change.write.map((c) => c.name));
    const total = nextPlan.tables.reduce((n, t) => n + t.chains.length, 0);
    expect(written.length).toBeGreaterThan(0);
    expect(written.length).toBeLessThan(total / 2);
    // Only db's ingress changed: nothing of web's chains is written.
    expect(written.some((c) => c.includes(endpointChain('shop/web', 'egress', 'main').slice(6)))).toBe(false);
    for (const s of diff.sets) {
      expect(s.versioned).toBe(true);
      expect(diff.missingSets.has(s.name)).toBe(true);
    }
    for (const s of diff.obsoleteSets) expect(s).toMatch(/^sy-ti/);
  });

  it('counts table outcomes per endpoint and rule id from iptables-save -c', () => {
    const t = plan.tables.find((x) => x.family === 4 && x.table === 'filter');
    const tables: SavedTable[] = [
      {
        family: 4,
        table: 'filter',
        chains: new Map(
          (t?.chains ?? []).map((c) => [
            c.name,
            c.rules.map((args) => ({ chain: c.name, args, packets: 3, bytes: 120 })),
          ]),
        ),
        jumps: [],
      },
    ];
    const rows = countersFromSaved(tables);
    const db = rows.filter((r) => r.endpoint === 'shop/db' && r.direction === 'ingress');
    expect(db.map((r) => r.rule)).toEqual(
      expect.arrayContaining([
        'gp:guard/ingress/0',
        'gp:guard/ingress/1',
        'np:shop/db-from-web/ingress/0.0',
        'shop/db/ingress/default',
      ]),
    );
    expect(rows.some((r) => r.endpoint?.startsWith('unknown:'))).toBe(false);
  });
});
