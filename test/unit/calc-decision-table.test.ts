/**
 * The decision table (src/calc/decision-table.ts) against the reference evaluator: hand-written
 * cases for each feature of the rule walk, then a property over random models that `lookup`
 * equals `Oracle.evaluateSide` in verdict, deciding rule, reason, logged rules and Pass rule for
 * packets at every edge of every set and port range, and at random.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildDecisionTable, Oracle } from '../../src/calc/index.js';
import { classOf, lookup } from '../../src/ir/table-lookup.js';
import {
  MAX_TABLE_ENTRIES,
  PORT_PROTOCOLS,
  tableSize,
  type DecisionTable,
  type TableEntry,
} from '../../src/ir/decision-table.js';
import { defaultRuleId } from '../../src/ir/rule-ids.js';
import type { IR, Protocol, RuleSet } from '../../src/ir/types.js';
import { loadManifests } from '../../src/model/index.js';
import type { GlobalPolicy, GlobalRule, Model, PolicyPort } from '../../src/model/types.js';
import { familyBits, formatAddress, parseAddress, parseCidr, type Family } from '../../src/util/ip.js';
import { modelArb } from '../support/arbitraries.js';
import {
  Cluster,
  compileIR,
  globalPolicy,
  namespace,
  networkPolicy,
  pod,
  type Manifest,
} from '../support/manifests.js';

const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP', 'ICMP'];

/** The Oracle's answer in the table's terms. */
function expected(
  oracle: Oracle,
  rs: RuleSet,
  remote: string,
  protocol: Protocol,
  dport?: number,
): TableEntry {
  const v = oracle.evaluateSide(rs.endpoint, rs.direction, remote, protocol, dport);
  return {
    verdict: v.allowed ? 'allow' : 'deny',
    rule: v.rule?.id ?? defaultRuleId(rs.endpoint, rs.direction),
    reason: v.reason,
    logged: v.logged.map((r) => r.id),
    ...(v.passedBy ? { passedBy: v.passedBy.id } : {}),
  };
}

/** The table's answer without its port range, to compare with `expected`. */
function actual(table: DecisionTable, remote: string, protocol: Protocol, dport?: number): TableEntry {
  const { verdict, rule, reason, logged, passedBy } = lookup(table, remote, protocol, dport);
  return { verdict, rule, reason, logged, ...(passedBy === undefined ? {} : { passedBy }) };
}

function tableOf(ir: IR, rs: RuleSet): DecisionTable {
  const built = buildDecisionTable(ir, rs);
  if (!built.ok) throw new Error(`table of ${rs.endpoint} ${rs.direction} overflows`);
  return built.table;
}

const IP = {
  'shop/web': '198.18.1.1',
  'shop/db': '198.18.1.2',
  'other/client': '198.18.2.1',
  'other/web': '198.18.2.2',
} as const;
const OUTSIDE = '203.0.113.7';

/** shop (team=shop) holds web and db, other holds client and a second web with another http port. */
function cluster(policies: Manifest[]): Cluster {
  return new Cluster([
    namespace('shop', { team: 'shop' }),
    namespace('other', { team: 'other' }),
    pod('shop', 'web', {
      labels: { app: 'web' },
      ip: IP['shop/web'],
      ports: [{ name: 'http', containerPort: 8080 }],
    }),
    pod('shop', 'db', {
      labels: { app: 'db' },
      ip: IP['shop/db'],
      ports: [{ name: 'pg', containerPort: 5432 }],
    }),
    pod('other', 'client', { labels: { app: 'client' }, ip: IP['other/client'] }),
    pod('other', 'web', {
      labels: { app: 'web' },
      ip: IP['other/web'],
      ports: [{ name: 'http', containerPort: 9090 }],
    }),
    ...policies,
  ]);
}

/** A cluster, one of its rule sets and its table, with the Oracle to compare against. */
function setup(policies: Manifest[], endpoint: string, direction: 'ingress' | 'egress' = 'ingress') {
  const c = cluster(policies);
  const oracle = new Oracle(c.ir);
  const rs = oracle.ruleSet(endpoint, direction);
  const table = tableOf(c.ir, rs);
  const check = (remote: string, protocol: Protocol, dport?: number): TableEntry => {
    const got = actual(table, remote, protocol, dport);
    expect(got, `${remote} ${protocol} ${String(dport)}`).toEqual(
      expected(oracle, rs, remote, protocol, dport),
    );
    return got;
  };
  return { ir: c.ir, rs, table, check };
}

describe('decision table: the rule walk', () => {
  it('an endpoint with no policy allows everything by default, in one class', () => {
    const { table, check, rs } = setup([], 'shop/db');
    expect(table.prefixes).toEqual([]);
    expect(tableSize(table)).toEqual({ prefixes: 0, entries: 5 });
    expect(table.classes[0]?.other).toMatchObject({ verdict: 'allow', reason: 'no-policy' });
    for (const p of PROTOCOLS)
      expect(check(OUTSIDE, p, p === 'ICMP' ? undefined : 443)).toEqual({
        verdict: 'allow',
        rule: defaultRuleId(rs.endpoint, rs.direction),
        reason: 'no-policy',
        logged: [],
      });
  });

  it('global rules decide in order: a Deny before an Allow wins for its peers only', () => {
    const { rs, check } = setup(
      [
        globalPolicy('guard', {
          order: 1,
          selector: { matchLabels: { app: 'db' } },
          ingress: [
            { action: 'Deny', from: [{ namespaceSelector: { matchLabels: { team: 'other' } } }] },
            { action: 'Allow' },
          ],
        }),
      ],
      'shop/db',
    );
    const [deny, allow] = rs.globalRules;
    expect(check(IP['other/client'], 'TCP', 5432)).toMatchObject({ verdict: 'deny', rule: deny?.id });
    expect(check(IP['other/web'], 'ICMP')).toMatchObject({ verdict: 'deny', rule: deny?.id });
    expect(check(IP['shop/web'], 'TCP', 5432)).toMatchObject({ verdict: 'allow', rule: allow?.id });
    expect(check(OUTSIDE, 'UDP', 53)).toMatchObject({ verdict: 'allow', reason: 'global-rule' });
  });

  it('Pass hands over to the Kubernetes tier, whose default then denies', () => {
    const { rs, check } = setup(
      [
        globalPolicy('protect-db', {
          order: 1,
          selector: { matchLabels: { app: 'db' } },
          ingress: [
            { action: 'Pass', from: [{ namespaceSelector: { matchLabels: { team: 'shop' } } }] },
            { action: 'Deny' },
          ],
        }),
        networkPolicy('shop', 'default-deny', { podSelector: {}, policyTypes: ['Ingress'] }),
      ],
      'shop/db',
    );
    expect(check(IP['shop/web'], 'TCP', 5432)).toEqual({
      verdict: 'deny',
      rule: defaultRuleId('shop/db', 'ingress'),
      reason: 'kubernetes-default-deny',
      logged: [],
      passedBy: rs.globalRules[0]?.id,
    });
    expect(check(IP['other/client'], 'TCP', 5432)).toMatchObject({ rule: rs.globalRules[1]?.id });
  });

  it('Log rules that fire are collected in order, and the walk goes on', () => {
    const { rs, check } = setup(
      [
        globalPolicy('audit', {
          order: 1,
          ingress: [
            { action: 'Log' },
            { action: 'Log', protocol: 'TCP', ports: [{ port: 5432 }] },
            { action: 'Deny', protocol: 'UDP' },
          ],
        }),
      ],
      'shop/db',
    );
    const [all, pg, udp] = rs.globalRules.map((r) => r.id);
    expect(check(OUTSIDE, 'TCP', 5432)).toMatchObject({
      verdict: 'allow',
      reason: 'no-policy',
      logged: [all, pg],
    });
    expect(check(OUTSIDE, 'TCP', 5433)).toMatchObject({ logged: [all] });
    expect(check(OUTSIDE, 'UDP', 5432)).toMatchObject({ verdict: 'deny', rule: udp, logged: [all] });
  });
});

describe('decision table: peer classes', () => {
  it('an ipBlock with except becomes the set\u2019s disjoint prefixes; the except falls to the rest', () => {
    const { ir, rs, table, check } = setup(
      [
        networkPolicy('shop', 'from-block', {
          podSelector: { matchLabels: { app: 'db' } },
          ingress: [{ from: [{ ipBlock: { cidr: '198.18.0.0/16', except: ['198.18.2.0/24'] } }] }],
        }),
      ],
      'shop/db',
    );
    const set = ir.ipSets.find((s) => s.id === rs.kubernetesRules[0]?.peerSet);
    expect(table.prefixes).toEqual(set?.cidrs.map((cidr) => ({ cidr, classId: 1 })));
    expect(classOf(table, '198.18.2.9')).toBe(0);
    for (const remote of ['198.18.0.0', '198.18.1.255', '198.18.3.0', '198.18.255.255'])
      expect(check(remote, 'TCP', 1)).toMatchObject({ verdict: 'allow', reason: 'kubernetes-rule' });
    for (const remote of ['198.18.2.0', '198.18.2.255', '198.17.255.255', '198.19.0.0'])
      expect(check(remote, 'TCP', 1)).toMatchObject({ verdict: 'deny', reason: 'kubernetes-default-deny' });
  });

  it('a named port resolves per destination: each member address is its own class and port', () => {
    const { table, check } = setup(
      [
        networkPolicy('other', 'client-to-web', {
          podSelector: { matchLabels: { app: 'client' } },
          policyTypes: ['Egress'],
          egress: [{ to: [{ podSelector: {}, namespaceSelector: {} }], ports: [{ port: 'http' }] }],
        }),
      ],
      'other/client',
      'egress',
    );
    expect(table.prefixes.map((p) => p.cidr)).toEqual([`${IP['shop/web']}/32`, `${IP['other/web']}/32`]);
    expect(check(IP['shop/web'], 'TCP', 8080).verdict).toBe('allow');
    expect(check(IP['shop/web'], 'TCP', 9090).verdict).toBe('deny');
    expect(check(IP['other/web'], 'TCP', 9090).verdict).toBe('allow');
    expect(check(IP['other/web'], 'TCP', 8080).verdict).toBe('deny');
    expect(check(IP['shop/db'], 'TCP', 8080).verdict).toBe('deny');
    expect(check(IP['shop/web'], 'UDP', 8080).verdict).toBe('deny');
    const web = table.classes[classOf(table, IP['shop/web'])];
    expect(web?.ports.TCP.map((e) => [e.first, e.last, e.verdict])).toEqual([
      [0, 8079, 'deny'],
      [8080, 8080, 'allow'],
      [8081, 65535, 'deny'],
    ]);
  });
});

describe('decision table: port ranges and ICMP', () => {
  it('a port range is cut exactly at its edges', () => {
    const { rs, table, check } = setup(
      [
        globalPolicy('no-5000s', {
          order: 1,
          ingress: [{ action: 'Deny', protocol: 'UDP', ports: [{ port: 5000, endPort: 5002 }] }],
        }),
      ],
      'shop/db',
    );
    expect(table.classes[0]?.ports.UDP.map((e) => [e.first, e.last, e.verdict])).toEqual([
      [0, 4999, 'allow'],
      [5000, 5002, 'deny'],
      [5003, 65535, 'allow'],
    ]);
    expect(table.classes[0]?.ports.TCP).toHaveLength(1);
    for (const port of [0, 4999, 5000, 5001, 5002, 5003, 65535]) check(OUTSIDE, 'UDP', port);
    expect(check(OUTSIDE, 'UDP', 5002).rule).toBe(rs.globalRules[0]?.id);
  });

  it('ICMP has one entry and ignores ports; rules with ports never match it', () => {
    const { table, check } = setup(
      [
        globalPolicy('icmp', {
          order: 1,
          ingress: [
            { action: 'Allow', ports: [{ port: 22 }] },
            { action: 'Deny', protocol: 'ICMP' },
          ],
        }),
      ],
      'shop/db',
    );
    expect(table.classes[0]?.icmp).toMatchObject({ verdict: 'deny', reason: 'global-rule' });
    expect(check(OUTSIDE, 'ICMP').verdict).toBe('deny');
    expect(check(OUTSIDE, 'ICMP', 22).verdict).toBe('deny');
    expect(check(OUTSIDE, 'TCP', 22)).toMatchObject({ verdict: 'allow', reason: 'global-rule' });
    expect(check(OUTSIDE, 'TCP', 23)).toMatchObject({ verdict: 'allow', reason: 'no-policy' });
  });
});

describe('decision table: other IP protocols', () => {
  it('only rules naming no protocol, port or port set decide them', () => {
    const { table } = setup(
      [
        globalPolicy('icmp-only', { order: 1, ingress: [{ action: 'Deny', protocol: 'ICMP' }] }),
        globalPolicy('tcp-web', {
          order: 2,
          ingress: [{ action: 'Deny', protocol: 'TCP', ports: [{ port: 80 }] }],
        }),
        globalPolicy('anything', { order: 3, ingress: [{ action: 'Allow' }] }),
      ],
      'shop/db',
    );
    const rest = table.classes[0];
    expect(rest?.icmp).toMatchObject({ verdict: 'deny', rule: expect.stringContaining('icmp-only') });
    expect(rest?.other).toMatchObject({ verdict: 'allow', rule: expect.stringContaining('anything') });
  });
});

describe('decision table: IPv6 and the ends of the address space', () => {
  it('IPv6 peers get IPv6 prefixes, sorted after IPv4', () => {
    const { table, check } = setup(
      [
        globalPolicy('v6', {
          order: 1,
          ingress: [
            { action: 'Deny', from: [{ nets: ['2001:db8::/32'], notNets: ['2001:db8::/48'] }] },
            { action: 'Allow', from: [{ nets: ['198.51.100.0/24'] }] },
          ],
        }),
      ],
      'shop/db',
    );
    const cidrs = table.prefixes.map((p) => p.cidr);
    expect(cidrs[0]).toBe('198.51.100.0/24');
    expect(cidrs.slice(1).every((c) => parseCidr(c)?.family === 6)).toBe(true);
    expect(cidrs).toContain('2001:db8:1::/48');
    expect(cidrs).toContain('2001:db8:8000::/33');
    expect(check('2001:db8:1::1', 'TCP', 80).verdict).toBe('deny');
    expect(check('2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', 'ICMP').verdict).toBe('deny');
    expect(check('2001:db8::1', 'TCP', 80)).toMatchObject({ verdict: 'allow', reason: 'no-policy' });
    expect(check('2001:db9::', 'TCP', 80)).toMatchObject({ verdict: 'allow', reason: 'no-policy' });
    expect(check('198.51.100.255', 'TCP', 80)).toMatchObject({ verdict: 'allow', reason: 'global-rule' });
  });

  it('the first and last address of each family can be classes of their own', () => {
    const { table, check } = setup(
      [
        globalPolicy('ends', {
          order: 1,
          ingress: [
            {
              action: 'Deny',
              from: [
                {
                  nets: [
                    '0.0.0.0/32',
                    '255.255.255.255/32',
                    '::/128',
                    'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128',
                  ],
                },
              ],
            },
          ],
        }),
      ],
      'shop/db',
    );
    expect(table.prefixes.map((p) => p.cidr)).toEqual([
      '0.0.0.0/32',
      '255.255.255.255/32',
      '::/128',
      'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128',
    ]);
    for (const remote of ['0.0.0.0', '255.255.255.255', '::', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'])
      expect(check(remote, 'TCP', 80).verdict).toBe('deny');
    for (const remote of ['0.0.0.1', '255.255.255.254', '::1', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe'])
      expect(check(remote, 'TCP', 80).verdict).toBe('allow');
  });
});

describe('decision table: merging and size', () => {
  it('merges adjacent port ranges that decide alike, and keeps those with different rules apart', () => {
    const { table, check } = setup(
      [
        networkPolicy('shop', 'web-ports', {
          podSelector: { matchLabels: { app: 'db' } },
          ingress: [{ ports: [{ port: 80 }, { port: 81 }] }, { ports: [{ port: 82 }] }],
        }),
      ],
      'shop/db',
    );
    const tcp = table.classes[0]?.ports.TCP.map((e) => [e.first, e.last, e.verdict]);
    expect(tcp).toEqual([
      [0, 79, 'deny'],
      [80, 81, 'allow'],
      [82, 82, 'allow'],
      [83, 65535, 'deny'],
    ]);
    for (const port of [79, 80, 81, 82, 83]) check(OUTSIDE, 'TCP', port);
    expect(table.classes[0]?.ports.UDP).toHaveLength(1);
  });

  it('reports overflow past the entry bound, so the caller keeps the rule walk', () => {
    expect(MAX_TABLE_ENTRIES).toBe(16384);
    const { ir, rs, table } = setup(
      [
        globalPolicy('ports', {
          order: 1,
          ingress: [{ action: 'Deny', protocol: 'TCP', ports: [{ port: 1 }, { port: 3 }] }],
        }),
      ],
      'shop/db',
    );
    const size = tableSize(table);
    expect(size).toEqual({ prefixes: 0, entries: 5 + 1 + 1 + 1 + 1 });
    expect(buildDecisionTable(ir, rs, { maxEntries: size.entries })).toMatchObject({ ok: true });
    expect(buildDecisionTable(ir, rs, { maxEntries: size.entries - 1 })).toEqual({
      ok: false,
      overflow: { ...size, maxEntries: size.entries - 1 },
    });
  });

  it('in table mode every rule set carries its table, or its overflow and the rule walk', () => {
    const policies = [
      globalPolicy('ports', {
        order: 1,
        ingress: [{ action: 'Deny', protocol: 'TCP', ports: [{ port: 1 }, { port: 3 }] }],
      }),
    ];
    const c = cluster(policies);
    expect(c.ir.policyMode).toBeUndefined();
    expect(c.ir.ruleSets.every((rs) => rs.table === undefined)).toBe(true);
    const tabled = compileIR(c.model, { policyMode: 'table' });
    expect(tabled.policyMode).toBe('table');
    for (const rs of tabled.ruleSets) expect(rs.table).toEqual(tableOf(c.ir, rs));
    const bounded = compileIR(c.model, { policyMode: 'table', maxTableEntries: 8 });
    const db = bounded.ruleSets.find((rs) => rs.endpoint === 'shop/db' && rs.direction === 'ingress');
    expect(db?.table).toBeUndefined();
    expect(db?.tableOverflow).toEqual({ prefixes: 0, entries: 9, maxEntries: 8 });
    const egress = bounded.ruleSets.find((rs) => rs.endpoint === 'shop/db' && rs.direction === 'egress');
    expect(egress?.table).toBeDefined();
  });

  it('lookup needs a destination port for TCP, UDP and SCTP', () => {
    const { table } = setup([], 'shop/db');
    expect(() => lookup(table, OUTSIDE, 'TCP')).toThrow(RangeError);
    expect(() => lookup(table, OUTSIDE, 'SCTP', 65536)).toThrow(RangeError);
    expect(() => lookup(table, 'not-an-address', 'ICMP')).toThrow(/invalid address/);
  });
});

describe('decision table: the examples', () => {
  it.each([
    ['walkthrough', ['examples/walkthrough']],
    ['walkthrough+global', ['examples/walkthrough', 'examples/global']],
  ])('the %s example: every table fits and agrees at every pod and port', (_, paths) => {
    const ir = compileIR(loadManifests(paths));
    const oracle = new Oracle(ir);
    const remotes = [...ir.endpoints.flatMap((e) => e.addresses), OUTSIDE, '198.18.200.1'];
    const ports = [...new Set(ir.endpoints.flatMap((e) => e.ports.map((p) => p.port))), 1, 65535];
    for (const rs of ir.ruleSets) {
      const table = tableOf(ir, rs);
      for (const remote of remotes)
        for (const protocol of PROTOCOLS)
          for (const port of protocol === 'ICMP' ? [undefined] : ports)
            expect(actual(table, remote, protocol, port)).toEqual(
              expected(oracle, rs, remote, protocol, port),
            );
    }
  });
});

// Random global policies over CIDRs of both families, ICMP and SCTP, which modelArb does not draw.
const NETS = ['198.18.0.0/30', '198.18.0.4/31', '10.0.0.0/8', '2001:db8::/32', '2001:db8::/126', '::/0'];
const netPortArb: fc.Arbitrary<PolicyPort> = fc.oneof(
  fc.record({ protocol: fc.constantFrom('TCP' as const, 'SCTP' as const), port: fc.constantFrom(80, 443) }),
  fc.record({
    protocol: fc.constant('UDP' as const),
    port: fc.constant(80),
    endPort: fc.constantFrom(81, 1024),
  }),
  fc.record({ protocol: fc.constant('TCP' as const), port: fc.constant('http') }),
);
const netRuleArb: fc.Arbitrary<GlobalRule> = fc
  .record({
    action: fc.constantFrom('Allow' as const, 'Deny' as const, 'Pass' as const, 'Log' as const),
    nets: fc.option(fc.subarray(NETS, { minLength: 1, maxLength: 2 })),
    notNets: fc.option(fc.subarray(['198.18.0.1/32', '2001:db8::2/127'], { minLength: 1 })),
    protocol: fc.option(fc.constantFrom('ICMP' as const, 'SCTP' as const)),
    ports: fc.option(fc.array(netPortArb, { minLength: 1, maxLength: 2 })),
  })
  .map((r) => {
    const peer = { ...(r.nets ? { nets: r.nets } : {}), ...(r.notNets ? { notNets: r.notNets } : {}) };
    const rule: GlobalRule = { action: r.action, ...(Object.keys(peer).length > 0 ? { peers: [peer] } : {}) };
    if (r.ports) return { ...rule, ports: r.ports };
    return r.protocol ? { ...rule, protocol: r.protocol } : rule;
  });
const netPolicyArb: fc.Arbitrary<GlobalPolicy> = fc
  .record({
    order: fc.integer({ min: 0, max: 3 }),
    ingress: fc.array(netRuleArb, { maxLength: 3 }),
    egress: fc.array(netRuleArb, { maxLength: 3 }),
  })
  .map((r) => ({
    name: 'nets',
    order: r.order,
    selector: { matchLabels: {}, matchExpressions: [] },
    types: ['Ingress', 'Egress'],
    ingress: r.ingress,
    egress: r.egress,
    source: { file: 'generated.yaml', line: 1 },
  }));
const richModelArb: fc.Arbitrary<Model> = fc
  .tuple(modelArb, fc.option(netPolicyArb))
  .map(([m, extra]) => (extra ? { ...m, globalPolicies: [...m.globalPolicies, extra] } : m));

function shifted(family: Family, value: bigint, by: bigint): string | undefined {
  const v = value + by;
  return v < 0n || v >= 1n << BigInt(familyBits(family)) ? undefined : formatAddress({ family, value: v });
}

/** Addresses a table could get wrong: each set's first and last address ±1, members ±1, pods. */
function edgeAddresses(ir: IR, rs: RuleSet): string[] {
  const rules = [...rs.globalRules, ...rs.kubernetesRules];
  const sets = ir.ipSets.filter((s) => rules.some((r) => r.peerSet === s.id));
  const members = ir.ipPortSets
    .filter((s) => rules.some((r) => r.peerPortSet === s.id))
    .flatMap((s) => s.members);
  const out = new Set<string>([
    '0.0.0.0',
    '255.255.255.255',
    '::',
    ...ir.endpoints.flatMap((e) => e.addresses),
  ]);
  const around = (family: Family, first: bigint, last: bigint): void => {
    for (const [v, by] of [
      [first, -1n],
      [first, 0n],
      [last, 0n],
      [last, 1n],
    ] as const) {
      const a = shifted(family, v, by);
      if (a) out.add(a);
    }
  };
  for (const text of sets.flatMap((s) => s.cidrs)) {
    const c = parseCidr(text);
    if (c) around(c.family, c.base, c.base + (1n << BigInt(familyBits(c.family) - c.prefix)) - 1n);
  }
  for (const m of members) {
    const a = parseAddress(m.address);
    if (a) around(a.family, a.value, a.value);
  }
  return [...out].sort();
}

/** Ports a table could get wrong: each range's edges ±1, each member port, 0 and 65535. */
function edgePorts(ir: IR, rs: RuleSet): number[] {
  const rules = [...rs.globalRules, ...rs.kubernetesRules];
  const out = new Set<number>([0, 65535]);
  for (const r of rules.flatMap((rule) => rule.ports ?? []))
    for (const p of [r.first - 1, r.first, r.last, r.last + 1]) if (p >= 0 && p <= 65535) out.add(p);
  for (const s of ir.ipPortSets.filter((set) => rules.some((r) => r.peerPortSet === set.id)))
    for (const m of s.members) for (const p of [m.port - 1, m.port, m.port + 1]) out.add(p);
  return [...out].sort((a, b) => a - b);
}

/** Picks into the edge lists, or random values, for every rule set of a model. */
const probeArb = fc.record({
  address: fc.oneof(
    fc.nat().map((i) => ({ edge: i })),
    fc.ipV4().map((a) => ({ random: a })),
    fc
      .bigInt({ min: 0n, max: (1n << 128n) - 1n })
      .map((v) => ({ random: formatAddress({ family: 6, value: v }) })),
    fc.nat({ max: 1023 }).map((i) => ({
      random: formatAddress({ family: 4, value: (198n << 24n) + (18n << 16n) + BigInt(i) }),
    })),
  ),
  protocol: fc.constantFrom(...PROTOCOLS),
  port: fc.oneof(
    fc.nat().map((i) => ({ edge: i })),
    fc.integer({ min: 0, max: 65535 }).map((p) => ({ random: p })),
  ),
});
type ProbeValue = typeof probeArb extends fc.Arbitrary<infer T> ? T : never;

type Lookup = typeof lookup;

/** Throws (through expect) at the first packet where `look` and the Oracle disagree. */
function agreesOnModel(model: Model, probes: readonly ProbeValue[], look: Lookup): void {
  // Table mode as buildIR does it: endpoints with the same rules share one construction.
  const ir = compileIR(model, { policyMode: 'table' });
  const oracle = new Oracle(ir);
  for (const rs of ir.ruleSets) {
    expect(rs.tableOverflow).toBeUndefined();
    const built = { table: rs.table as DecisionTable };
    expect(built.table?.endpoint).toBe(rs.endpoint);
    const addresses = edgeAddresses(ir, rs);
    const ports = edgePorts(ir, rs);
    const check = (remote: string, protocol: Protocol, dport?: number): void => {
      const { verdict, rule, reason, logged, passedBy } = look(built.table, remote, protocol, dport);
      const got = { verdict, rule, reason, logged, ...(passedBy === undefined ? {} : { passedBy }) };
      const want = expected(oracle, rs, remote, protocol, dport);
      // expect() only on a difference: it is slow, and this runs thousands of times.
      if (JSON.stringify(got) !== JSON.stringify(want))
        expect(got, `${rs.endpoint} ${rs.direction} ${remote} ${protocol} ${String(dport)}`).toEqual(want);
    };
    for (const p of probes) {
      const remote =
        'edge' in p.address ? (addresses[p.address.edge % addresses.length] as string) : p.address.random;
      const port = 'edge' in p.port ? (ports[p.port.edge % ports.length] as number) : p.port.random;
      check(remote, p.protocol, p.protocol === 'ICMP' ? undefined : port);
    }
    // Every class (at its first prefix, the rest at an edge address in no prefix) at the first
    // and last port of every entry: each table cell is visited once.
    const rest = addresses.find((a) => classOf(built.table, a) === 0);
    const firstOfClass = new Map<number, string>(rest === undefined ? [] : [[0, rest]]);
    for (const prefix of built.table.prefixes) {
      const c = parseCidr(prefix.cidr);
      if (c && !firstOfClass.has(prefix.classId))
        firstOfClass.set(prefix.classId, formatAddress({ family: c.family, value: c.base }));
    }
    for (const [id, remote] of firstOfClass)
      for (const protocol of PORT_PROTOCOLS)
        for (const e of built.table.classes[id]?.ports[protocol] ?? [])
          for (const port of [e.first, e.last]) check(remote, protocol, port);
  }
}

const packetsArb = fc.array(probeArb, { minLength: 6, maxLength: 6 });

describe('decision table: equal to the reference evaluator', () => {
  it('lookup equals Oracle.evaluateSide for random models and packets', () => {
    fc.assert(
      fc.property(richModelArb, packetsArb, (model, probes) => agreesOnModel(model, probes, lookup)),
      { numRuns: 200 },
    );
  });

  it('catches a broken lookup (the property is not vacuous)', () => {
    const offByOne: Lookup = (table, remote, protocol, dport) =>
      lookup(table, remote, protocol, dport === undefined ? undefined : Math.min(dport + 1, 65535));
    const restOnly: Lookup = (table, remote, protocol, dport) =>
      lookup({ ...table, prefixes: [] }, remote, protocol, dport);
    for (const broken of [offByOne, restOnly]) {
      const result = fc.check(
        fc.property(richModelArb, packetsArb, (model, probes) => agreesOnModel(model, probes, broken)),
        { numRuns: 200, seed: 42 },
      );
      expect(result.failed).toBe(true);
    }
  });
});
