/**
 * Decision-table rendering, without a kernel: the objects a table becomes, a packet walked through
 * them (a small interpreter of exactly the rule shapes table.ts writes) deciding like the table's
 * own `lookup` at every port edge, constant chain lengths whatever the rule count, rule sets
 * without a table rendered as the walk, counters learning table chains, and the diff's order.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseCounters } from '../../src/dataplane/nftables/counters.js';
import { diffRulesets } from '../../src/dataplane/nftables/diff.js';
import { createNftablesBackend } from '../../src/dataplane/nftables/index.js';
import type { NftChain, NftRuleset } from '../../src/dataplane/nftables/objects.js';
import { buildRuleset } from '../../src/dataplane/nftables/ruleset.js';
import { flowChain } from '../../src/dataplane/nftables/names.js';
import { flowRuleTag } from '../../src/dataplane/netfilter/aggregates.js';
import {
  PORT_PROTOCOLS,
  type DecisionTable,
  type PortProtocol,
  type TableEntry,
} from '../../src/ir/decision-table.js';
import { lookup } from '../../src/ir/table-lookup.js';
import type { IR, Protocol } from '../../src/ir/types.js';
import { loadManifests } from '../../src/model/index.js';
import { NETPOL_E2E_DIR } from '../fixtures/netpol-e2e/cases.js';
import { compileIR, globalPolicy, networkPolicy } from '../support/manifests.js';
import { dualStack, guardrails, irOf, xyz } from '../kernel/nftables-scenarios.js';

const PROTO_NUMBER: Record<PortProtocol | 'ICMP' | 'GRE', number> = {
  TCP: 6,
  UDP: 17,
  SCTP: 132,
  ICMP: 1,
  GRE: 47,
};
const PROTO_NAME: Record<string, number> = { tcp: 6, udp: 17, sctp: 132 };

interface Packet {
  remote: string;
  proto: number;
  /** What `th dport` loads: the port, or whatever bytes 2–3 hold (ICMP's checksum). */
  thDport: number;
}

/** A flow record a packet left: the set, the port in the key and the rule tag. */
interface Recorded {
  set: string;
  port: number;
  tag: number;
}

/** What a packet met in the table's chains: counted comments, flow records in order, and the verdict. */
interface Walked {
  counted: string[];
  recorded: Recorded[];
  verdict: 'allow' | 'deny';
}

const FLOW_UPDATE =
  /^meta nfproto (ipv4|ipv6) meta l4proto (!= )?@flow-ported update @(\w+) \{ (ip6?) saddr \. \4 daddr \. meta l4proto \. (th dport|0) \. 0x([0-9a-f]{8}) \} (return|drop)$/;

/** A flow chain (decision.ts) for one packet: what it records and its verdict (`return`, `drop`, or '' off the end). */
function recordIn(chain: NftChain, p: Packet): { recorded?: Recorded; verdict: string } {
  const v6 = p.remote.includes(':');
  for (const rule of chain.rules) {
    const m = FLOW_UPDATE.exec(rule);
    if (m) {
      if ((m[1] === 'ipv6') !== v6 || (m[4] === 'ip6') !== v6) continue;
      if ([6, 17, 132].includes(p.proto) === (m[2] !== undefined)) continue;
      const port = m[5] === 'th dport' ? p.thDport : 0;
      return {
        recorded: { set: m[3] as string, port, tag: parseInt(m[6] as string, 16) },
        verdict: m[7] as string,
      };
    }
    const full = /^counter name "flows-full"(?: (return|drop))?$/.exec(rule);
    if (full) throw new Error(`${chain.name}: no update rule took the packet`);
    throw new Error(`rule shape the interpreter does not know: ${rule}`);
  }
  return { verdict: '' };
}

function parseAddress(text: string): bigint {
  if (!text.includes(':')) return text.split('.').reduce((n, o) => (n << 8n) | BigInt(Number(o)), 0n);
  const [head = '', tail = ''] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((n, g) => (n << 16n) | BigInt(parseInt(g, 16)), 0n);
}

function inCidr(address: string, cidr: string): boolean {
  const [base = '', len = ''] = cidr.split('/');
  if (address.includes(':') !== base.includes(':')) return false;
  const bits = address.includes(':') ? 128n : 32n;
  const shift = bits - BigInt(len === '' ? Number(bits) : Number(len));
  return parseAddress(address) >> shift === parseAddress(base) >> shift;
}

/** Runs one packet from the entry chain: the rule shapes of table.ts, nothing else. */
function walk(rs: NftRuleset, entry: string, p: Packet): Walked {
  const chains = new Map(rs.chains.map((c) => [c.name, c]));
  const maps = new Map(rs.maps.map((m) => [m.name, m]));
  const out: Walked = { counted: [], recorded: [], verdict: 'allow' };
  const lookupMap = (name: string, match: (key: string) => boolean): string | undefined => {
    const map = maps.get(name);
    if (!map) throw new Error(`no map ${name}`);
    const hit = map.elements.find((e) => match(e.slice(0, e.indexOf(' : '))));
    return hit?.slice(hit.indexOf(' : goto ') + 8);
  };
  let chain: NftChain | undefined = chains.get(entry);
  for (let hops = 0; chain && hops < 10; hops++) {
    let next: string | undefined;
    for (const rule of chain.rules) {
      let m: RegExpExecArray | null;
      if ((m = /^(ip6?) [sd]addr vmap @(\S+)$/.exec(rule))) {
        if ((m[1] === 'ip6') !== p.remote.includes(':')) continue;
        next = lookupMap(m[2] as string, (key) => inCidr(p.remote, key));
      } else if ((m = /^meta l4proto \. th dport vmap @(\S+)$/.exec(rule))) {
        next = lookupMap(m[1] as string, (key) => {
          const [proto = '', ports = ''] = key.split(' . ');
          const [first = 0, last = first] = ports.split('-').map(Number);
          return PROTO_NAME[proto] === p.proto && p.thDport >= first && p.thDport <= last;
        });
      } else if ((m = /^meta l4proto \{ icmp, ipv6-icmp \} goto (\S+)$/.exec(rule))) {
        if (p.proto === 1 || p.proto === 58) next = m[1];
      } else if ((m = /^goto (\S+)( comment .*)?$/.exec(rule))) next = m[1];
      else if ((m = /^counter (jump|goto) (flow-\S+) comment "(.+)"$/.exec(rule))) {
        out.counted.push(m[3] as string);
        const flow = chains.get(m[2] as string);
        if (!flow) throw new Error(`no chain ${m[2]}`);
        const { recorded, verdict } = recordIn(flow, p);
        if (recorded) out.recorded.push(recorded);
        if (m[1] === 'jump') {
          if (verdict !== 'return') throw new Error(`${flow.name} does not return to its caller`);
          continue;
        }
        out.verdict = verdict === 'drop' ? 'deny' : 'allow';
        return out;
      } else if ((m = /^counter (?:(return|drop) )?comment "(.+)"$/.exec(rule))) {
        out.counted.push(m[2] as string);
        if (m[1] === undefined) continue;
        out.verdict = m[1] === 'drop' ? 'deny' : 'allow';
        return out;
      } else throw new Error(`rule shape the interpreter does not know: ${rule}`);
      if (next !== undefined) break;
    }
    if (next === undefined) throw new Error(`fell off ${chain.name}`);
    chain = chains.get(next);
  }
  throw new Error('no verdict');
}

/** What the table says a packet meets: with flow records, one per Log rule and one for the decision. */
function expectedOf(e: TableEntry, p: Packet, flowLogs: boolean): Walked {
  const v6 = p.remote.includes(':');
  const record = (verdict: 'allow' | 'deny' | 'log', rule: string): Recorded => ({
    set: v6 ? 'flows6' : 'flows4',
    port: [6, 17, 132].includes(p.proto) ? p.thDport : 0,
    tag: flowRuleTag(verdict, rule),
  });
  return {
    counted: [...e.logged, ...(e.passedBy !== undefined ? [e.passedBy] : []), e.rule],
    recorded: flowLogs ? [...e.logged.map((id) => record('log', id)), record(e.verdict, e.rule)] : [],
    verdict: e.verdict,
  };
}

/** A remote address inside each prefix, and one under none of them, per family. */
function remotesOf(table: DecisionTable): string[] {
  const inside = table.prefixes.map((p) => (p.cidr.split('/')[0] as string).replace(/::$/, '::1'));
  return [...new Set([...inside, '203.0.113.9', 'fd00:5957:dead::1'])];
}

/** Every port at which some class's entries change, and its neighbours. */
function portsOf(table: DecisionTable): number[] {
  const ports = new Set([0, 1, 65535]);
  for (const c of table.classes)
    for (const p of PORT_PROTOCOLS)
      for (const e of c.ports[p]) for (const x of [e.first - 1, e.first, e.last, e.last + 1]) ports.add(x);
  return [...ports].filter((x) => x >= 0 && x <= 65535);
}

function tableScenarios(): [string, IR][] {
  const model = join(NETPOL_E2E_DIR, '..', 'xyz', 'model.yaml');
  return [
    ['guardrails', irOf([...xyz(), ...guardrails()], 'table')],
    ['dual stack', irOf(dualStack(), 'table')],
    ...readdirSync(NETPOL_E2E_DIR)
      .filter((f) => f.endsWith('.yaml'))
      .sort()
      .map((f): [string, IR] => [
        `netpol-e2e/${f}`,
        compileIR(loadManifests([model, join(NETPOL_E2E_DIR, f)]), { policyMode: 'table' }),
      ]),
  ];
}

describe.each([false, true])(
  'nftables table mode (flowLogs: %s): a packet through the rendered objects decides like the table',
  (flowLogs) => {
    for (const [name, ir] of tableScenarios()) {
      it(name, () => {
        let checked = 0;
        for (const node of ir.nodes) {
          const rs = buildRuleset(ir, node.name, { flowLogs });
          for (const ruleSet of ir.ruleSets) {
            const ep = ir.endpoints.find((e) => e.id === ruleSet.endpoint);
            const table = ruleSet.table;
            if (ep?.node !== node.name || !table) continue;
            const entry = `${ruleSet.direction === 'egress' ? 'fw' : 'tw'}-${ep.hostInterface}`;
            for (const remote of remotesOf(table)) {
              for (const proto of PORT_PROTOCOLS) {
                for (const port of portsOf(table)) {
                  const packet = { remote, proto: PROTO_NUMBER[proto], thDport: port };
                  expect(walk(rs, entry, packet), `${entry} ${remote} ${proto}/${port}`).toEqual(
                    expectedOf(lookup(table, remote, proto, port), packet, flowLogs),
                  );
                  checked++;
                }
              }
              // ICMP's checksum sits where th dport reads: whatever it is, the ICMP entry decides.
              // With flow records, it is keyed on port 0, not the checksum.
              for (const checksum of [80, 81, 0xbeef]) {
                const icmp = { remote, proto: PROTO_NUMBER.ICMP, thDport: checksum };
                expect(walk(rs, entry, icmp)).toEqual(
                  expectedOf(lookup(table, remote, 'ICMP' as Protocol), icmp, flowLogs),
                );
              }
              // Any other protocol (GRE: bytes 2–3 are its protocol type, 0x0800): the `other` entry.
              const cls = table.classes.find((c) => lookup(table, remote, 'ICMP') === c.icmp);
              const gre = { remote, proto: PROTO_NUMBER.GRE, thDport: 0x0800 };
              if (cls) expect(walk(rs, entry, gre)).toEqual(expectedOf(cls.other, gre, flowLogs));
            }
          }
        }
        expect(checked).toBeGreaterThan(0);
      });
    }
  },
);

describe('nftables table mode: objects', () => {
  const ir = irOf([...xyz(), ...guardrails()], 'table');
  const text = createNftablesBackend({ flowLogs: false }).render(ir, 'node-1').text;
  const xa = ir.endpoints.find((e) => e.id === 'x/a')?.hostInterface as string;

  it('declares interval verdict maps: peers by address, ports by (protocol . port)', () => {
    expect(text).toContain(
      `add map inet switchyard tw-${xa}-peers-v4 { type ipv4_addr : verdict; flags interval; }`,
    );
    expect(text).toMatch(
      new RegExp(
        `add map inet switchyard tw-${xa}-ports-[0-9a-f]{12} \\{ type inet_proto \\. inet_service : verdict; flags interval; \\}`,
      ),
    );
    expect(text).toMatch(
      /add map inet switchyard \S+-peers-v6 \{ type ipv6_addr : verdict; flags interval; \}/,
    );
    // The IR's address sets are resolved into the tables: only the prefilter's set is left.
    expect([...text.matchAll(/^add set inet switchyard (\S+)/gm)].map((m) => m[1])).toEqual([
      expect.stringMatching(/^sy-pf-[0-9a-f]{12}-v4$/),
      'workload-ifaces',
    ]);
  });

  it('maps are declared before the rules that name them, chains before the elements that name them', () => {
    const lines = text.split('\n');
    const first = (re: RegExp): number => lines.findIndex((l) => re.test(l));
    expect(first(/^add map .*-ports-/)).toBeGreaterThan(first(/^add chain .*-out-/));
    expect(first(/^add rule .* vmap @tw-\S+-ports-/)).toBeGreaterThan(first(/^add element .*-ports-/));
  });

  it('the entry chain looks up the peer and names its endpoint; class chains look up protocol and port', () => {
    const rules = (chain: string): string[] =>
      text
        .split('\n')
        .filter((l) => l.startsWith(`add rule inet switchyard ${chain} `))
        .map((l) => l.slice(`add rule inet switchyard ${chain} `.length));
    expect(rules(`tw-${xa}`)).toEqual([
      `ip saddr vmap @tw-${xa}-peers-v4`,
      expect.stringMatching(new RegExp(`^goto tw-${xa}-class-[0-9a-f]{12} comment "x/a/ingress/table"$`)),
    ]);
    const classes = [...text.matchAll(new RegExp(`^add chain inet switchyard (tw-${xa}-class-\\S+)`, 'gm'))];
    expect(classes.length).toBeGreaterThan(1);
    for (const [, name] of classes) {
      const r = rules(name as string);
      expect(r[0]).toMatch(/^meta l4proto \. th dport vmap @\S+-ports-[0-9a-f]{12}$/);
      expect(r.at(-1)).toMatch(/^goto \S+-out-[0-9a-f]{12}$/);
      expect(r.length).toBeLessThanOrEqual(3);
    }
  });

  it('an outcome counts Log rules, the Pass rule, then decides under the deciding rule', () => {
    const outcome = text
      .split('\n')
      .filter((l) => l.startsWith(`add rule inet switchyard tw-${xa}-out-`))
      .map((l) => l.replace(/^add rule inet switchyard \S+ /, ''));
    expect(outcome).toEqual(
      expect.arrayContaining([
        'counter comment "gp:audit/ingress/0"',
        'counter comment "gp:guard-x/ingress/1"',
        'counter return comment "np:x/from-y-on-81/ingress/0"',
        'counter drop comment "gp:guard-x/ingress/0"',
        'counter drop comment "x/a/ingress/default"',
        'counter return comment "gp:guard-x/ingress/2"',
      ]),
    );
    expect(outcome.some((l) => /\baccept\b/.test(l))).toBe(false);
  });

  it('an endpoint no policy selects is one goto to one outcome', () => {
    const plain = irOf(xyz(), 'table');
    const rs = buildRuleset(plain, 'node-1', { flowLogs: false });
    const ep = plain.endpoints.find((e) => e.node === 'node-1');
    const entry = rs.chains.find((c) => c.name === `tw-${ep?.hostInterface}`);
    expect(entry?.rules).toEqual([
      expect.stringMatching(
        new RegExp(`^goto tw-${ep?.hostInterface}-out-[0-9a-f]{12} comment "${ep?.id}/ingress/table"$`),
      ),
    ]);
    expect(rs.maps.map((m) => m.name)).toEqual(['fw-dispatch', 'tw-dispatch']);
  });

  it('with flow records, the deciding rule of an outcome goes to the flow chain the walk uses', () => {
    const flow = createNftablesBackend().render(ir, 'node-1').text;
    const chain = flowChain('deny', flowRuleTag('deny', 'x/a/ingress/default'));
    expect(flow).toMatch(
      new RegExp(
        `add rule inet switchyard tw-${xa}-out-\\S+ counter goto ${chain} comment "x/a/ingress/default"\n`,
      ),
    );
    const walked = createNftablesBackend().render(irOf([...xyz(), ...guardrails()]), 'node-1').text;
    expect(walked).toContain(`counter goto ${chain} comment "x/a/ingress/default"\n`);
  });
});

describe('nftables table mode: cost does not grow with the rules', () => {
  /** One endpoint, `n` allow rules on distinct ports from one namespace, a global Log and Deny. */
  function manyRules(n: number): IR {
    return irOf(
      [
        ...xyz(),
        globalPolicy('audit', {
          order: 1,
          namespaceSelector: { matchLabels: { ns: 'x' } },
          ingress: [{ action: 'Log' }, { action: 'Deny', protocol: 'UDP', ports: [{ port: 53 }] }],
        }),
        networkPolicy('x', 'many', {
          podSelector: { matchLabels: { pod: 'a' } },
          ingress: Array.from({ length: n }, (_, i) => ({
            from: [{ namespaceSelector: { matchLabels: { ns: i % 2 ? 'y' : 'z' } } }],
            ports: [{ port: 1000 + i, protocol: 'TCP' }],
          })),
        }),
      ],
      'table',
    );
  }

  it('the chains a packet crosses have the same length at 10 and 1000 rules', () => {
    const shape = (ir: IR): number[] => {
      const rs = buildRuleset(ir, 'node-1', { flowLogs: false });
      const xa = ir.endpoints.find((e) => e.id === 'x/a')?.hostInterface as string;
      const mine = rs.chains.filter((c) => c.name.startsWith(`tw-${xa}`));
      const longest = (re: RegExp): number =>
        Math.max(...mine.filter((c) => re.test(c.name)).map((c) => c.rules.length));
      return [longest(new RegExp(`^tw-${xa}$`)), longest(/-class-/), longest(/-out-/)];
    };
    const small = manyRules(10);
    const large = manyRules(1000);
    expect(shape(large)).toEqual(shape(small));
    // The growth is in map elements, looked up in one step.
    const elements = (ir: IR): number =>
      buildRuleset(ir, 'node-1').maps.reduce((n, m) => n + m.elements.length, 0);
    expect(elements(large)).toBeGreaterThan(elements(small) + 900);
  });
});

describe('nftables table mode: around the tables', () => {
  it('a rule set without a table (over the bound) is rendered as the walk', () => {
    const table = irOf([...xyz(), ...guardrails()], 'table');
    const walkIr = irOf([...xyz(), ...guardrails()]);
    const xa = table.endpoints.find((e) => e.id === 'x/a')?.hostInterface as string;
    const mixed: IR = {
      ...table,
      ruleSets: table.ruleSets.map((rs) => {
        if (rs.endpoint !== 'x/a' || rs.direction !== 'ingress') return rs;
        const { table: _t, ...walked } = rs;
        return { ...walked, tableOverflow: { prefixes: 1, entries: 99_999, maxEntries: 16_384 } };
      }),
    };
    const mine = (ir: IR): NftChain[] =>
      buildRuleset(ir, 'node-1').chains.filter((c) => c.name === `tw-${xa}` || c.name === `tw-${xa}-k8s`);
    expect(mine(mixed)).toEqual(mine(walkIr));
    // … and the sets its rules name are installed for it.
    expect(buildRuleset(mixed, 'node-1').sets.length).toBeGreaterThan(
      buildRuleset(table, 'node-1').sets.length,
    );
  });

  it('counters learn a table chain’s endpoint from the entry chain’s marker', () => {
    const rule = (chain: string, comment: string | undefined, packets?: number): Record<string, unknown> => ({
      rule: {
        family: 'inet',
        table: 'switchyard',
        chain,
        handle: 1,
        ...(comment ? { comment } : {}),
        expr:
          packets === undefined
            ? [{ goto: { target: 'x' } }]
            : [{ counter: { packets, bytes: packets * 60 } }],
      },
    });
    const counters = parseCounters(
      JSON.stringify({
        nftables: [
          rule('tw-syaaa', 'x/a/ingress/table'),
          rule('tw-syaaa-out-0123456789ab', 'gp:audit/ingress/0', 3),
          rule('tw-syaaa-out-0123456789ab', 'np:x/p/ingress/0', 2),
          rule('tw-syaaa-out-ba9876543210', 'np:x/p/ingress/0', 1),
        ],
      }),
    );
    expect(counters).toEqual([
      { rule: 'gp:audit/ingress/0', endpoint: 'x/a', direction: 'ingress', packets: 3, bytes: 180 },
      { rule: 'np:x/p/ingress/0', endpoint: 'x/a', direction: 'ingress', packets: 3, bytes: 180 },
    ]);
  });

  it('a one-rule change is one transaction: new maps before the rules naming them, vanished ones in a safe order', () => {
    const extra = networkPolicy('x', 'extra', {
      podSelector: { matchLabels: { pod: 'a' } },
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'z' } } }], ports: [{ port: 82 }] }],
    });
    const prev = buildRuleset(irOf([...xyz(), ...guardrails()], 'table'), 'node-1');
    const next = buildRuleset(irOf([...xyz(), ...guardrails(), extra], 'table'), 'node-1');
    const plan = diffRulesets(prev, next);
    if (!plan) throw new Error('no incremental plan');
    const lines = plan.script.split('\n');
    const at = (re: RegExp): number => lines.findIndex((l) => re.test(l));
    const last = (re: RegExp): number => lines.length - 1 - [...lines].reverse().findIndex((l) => re.test(l));
    expect(plan.changed).not.toContain('table:switchyard');
    expect(at(/^add map .*-ports-/)).toBeGreaterThan(last(/^add chain /));
    expect(at(/^add rule .* vmap @\S+-ports-/)).toBeGreaterThan(at(/^add map .*-ports-/));
    expect(at(/^delete map .*-ports-/)).toBeGreaterThan(last(/^flush chain .*-class-/));
    expect(at(/^delete chain /)).toBeGreaterThan(last(/^delete map /));
    // Back again: the same objects as before, by name.
    const back = diffRulesets(next, prev);
    expect(back?.changed.length).toBeGreaterThan(0);
    expect(
      diffRulesets(prev, buildRuleset(irOf([...xyz(), ...guardrails()], 'table'), 'node-1'))?.changed,
    ).toEqual([]);
  });
});
