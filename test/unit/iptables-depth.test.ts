/**
 * Chain depth of the iptables backend's decision tables: nf_tables refuses a commit in which a
 * chain is reached at level 16 from its base chain (every jump and goto counts), so table mode
 * must keep its trees shallow — the policy bench's 1000- and 10000-rule tables, and any table up
 * to MAX_TABLE_ENTRIES — and walk a rule set whose table would still be too deep, saying so.
 */
import { describe, expect, it } from 'vitest';
import { policyIR } from '../../src/bench/scenarios/support/policy-ir.js';
import { BENCH_NODE } from '../../src/bench/scenarios/support/turns.js';
import { chainDepths, MAX_LEVEL, NFT_MAX_LEVEL } from '../../src/dataplane/iptables/depth.js';
import { IptablesBackend } from '../../src/dataplane/iptables/index.js';
import { endpointChain, endpointHash } from '../../src/dataplane/iptables/names.js';
import type { NodePlan, TablePlan } from '../../src/dataplane/iptables/plan.js';
import { planForNode } from '../../src/dataplane/iptables/render.js';
import {
  MAX_TABLE_ENTRIES,
  PORT_PROTOCOLS,
  type DecisionTable,
  type PeerClass,
  type PortEntry,
  type TableEntry,
} from '../../src/ir/decision-table.js';
import { defaultRuleId } from '../../src/ir/rule-ids.js';
import type { RuleSet } from '../../src/ir/types.js';
import { runChain } from './iptables-interpreter.js';

const ENDPOINT = 'bench/server';

function deepest(plan: NodePlan): number {
  return Math.max(...plan.tables.filter((t) => t.table === 'filter').map((t) => chainDepths(t).deepest));
}

function ingressTableChains(plan: NodePlan): string[] {
  const prefix = `SY-TWT-${endpointHash(ENDPOINT)}-`;
  return plan.tables.flatMap((t) => t.chains.map((c) => c.name)).filter((n) => n.startsWith(prefix));
}

describe('chainDepths', () => {
  it('counts every jump and goto from the base chain, as nf_tables does', () => {
    const table: TablePlan = {
      family: 4,
      table: 'filter',
      jumps: [{ builtin: 'FORWARD', rule: '-j SY-A' }],
      chains: [
        { name: 'SY-A', rules: ['-p tcp -g SY-B', '-j SY-C'] },
        { name: 'SY-B', rules: ['-m comment --comment "x" -j SY-C', '-j DROP'] },
        { name: 'SY-C', rules: ['-j MARK --set-xmark 0x10000/0x10000'] },
        { name: 'SY-UNUSED', rules: ['-g SY-A'] },
      ],
    };
    const d = chainDepths(table);
    expect(Object.fromEntries(d.level)).toEqual({ 'SY-A': 1, 'SY-B': 2, 'SY-C': 3 });
    expect(d.height.get('SY-A')).toBe(2);
    expect(d.height.get('SY-C')).toBe(0);
    expect(d.deepest).toBe(3);
  });
});

describe('iptables table mode: chain depth', () => {
  it.each([10, 1000, 10000])('keeps the policy bench table of %i rules within the limit', (rules) => {
    const plan = planForNode(policyIR(rules, 'table'), BENCH_NODE);
    const depth = deepest(plan);
    console.log(
      `policy bench, ${rules} rules: deepest chain level ${depth} (nf_tables allows ${NFT_MAX_LEVEL}), ${plan.tables.reduce((n, t) => n + t.chains.length, 0)} chains, ${plan.sets.length} sets`,
    );
    expect(plan.fallbacks).toEqual([]);
    expect(depth).toBeLessThanOrEqual(MAX_LEVEL);
    expect(ingressTableChains(plan).length).toBeGreaterThan(0);
  });

  /** `classes` classes (class 0 included) of `ranges` TCP ranges each, all deciding differently. */
  function extremeTable(classes: number, ranges: number): DecisionTable {
    const deny: TableEntry = {
      verdict: 'deny',
      rule: defaultRuleId(ENDPOINT, 'ingress'),
      reason: 'kubernetes-default-deny',
      logged: [],
    };
    const step = Math.floor(65536 / ranges);
    const cls = (id: number): PeerClass => {
      const allow: TableEntry = {
        ...deny,
        verdict: 'allow',
        rule: `np:bench/x/ingress/${id}`,
        reason: 'kubernetes-rule',
      };
      const tcp: PortEntry[] = Array.from({ length: ranges }, (_, i) => ({
        ...(i % 2 ? allow : deny),
        first: i * step,
        last: i === ranges - 1 ? 65535 : (i + 1) * step - 1,
      }));
      const whole = (): PortEntry[] => [{ ...deny, first: 0, last: 65535 }];
      return { id, ports: { TCP: tcp, UDP: whole(), SCTP: whole() }, icmp: allow, other: deny };
    };
    return {
      endpoint: ENDPOINT,
      direction: 'ingress',
      prefixes: Array.from({ length: classes - 1 }, (_, i) => ({
        cidr: `10.${(i >> 8) & 255}.${i & 255}.0/24`,
        classId: i + 1,
      })),
      classes: Array.from({ length: classes }, (_, id) => cls(id)),
    };
  }

  it.each([1, 2, 3, 5, 17, 63, 65, 257, 1025, 4093, 16380])(
    'needs no fallback for any table within the bound: %i ranges per class',
    (ranges) => {
      const classes = Math.max(1, Math.floor(MAX_TABLE_ENTRIES / (ranges + 2 + PORT_PROTOCOLS.length - 1)));
      const table = extremeTable(classes, ranges);
      const entries = table.classes.reduce(
        (n, c) => n + 2 + PORT_PROTOCOLS.reduce((m, p) => m + c.ports[p].length, 0),
        0,
      );
      expect(entries).toBeLessThanOrEqual(MAX_TABLE_ENTRIES);
      const ir = policyIR(0, 'walk');
      const ingress = ir.ruleSets.find((rs) => rs.direction === 'ingress') as RuleSet;
      ingress.table = table;
      const plan = planForNode(ir, BENCH_NODE);
      console.log(`${classes} classes × ${ranges} TCP ranges: deepest chain level ${deepest(plan)}`);
      expect(plan.fallbacks).toEqual([]);
      expect(deepest(plan)).toBeLessThanOrEqual(MAX_LEVEL);
    },
  );
});

describe('iptables table mode: fallback to the walk', () => {
  const tableIr = policyIR(1000, 'table');
  // A limit the 1000-rule table exceeds (the walk needs 5 levels: FORWARD … SY-TWG … SY-ALLOW).
  const options = { maxLevel: 8 };
  const plan = planForNode(tableIr, BENCH_NODE, options);

  it('walks a table that would nest too deep, for that endpoint and direction only', () => {
    expect(plan.fallbacks).toEqual([
      {
        endpoint: ENDPOINT,
        direction: 'ingress',
        reason: expect.stringMatching(
          /^its table's chains would nest \d+ levels deep in IPv4 \(nf_tables allows 15/,
        ),
      },
    ]);
    expect(deepest(plan)).toBeLessThanOrEqual(options.maxLevel);
    expect(ingressTableChains(plan)).toEqual([]);
    // The egress side (a default allow) still has its table: one outcome chain, or none at all.
    expect(plan.fallbacks.some((f) => f.direction === 'egress')).toBe(false);
    // The ingress chains are exactly the walk's.
    const walk = planForNode(policyIR(1000, 'walk'), BENCH_NODE);
    const ingressChains = (p: NodePlan): unknown =>
      p.tables
        .flatMap((t) => t.chains.map((c) => ({ family: t.family, ...c })))
        .filter((c) => c.name.startsWith(`SY-TW`) && c.name.includes(endpointHash(ENDPOINT)));
    expect(ingressChains(plan)).toEqual(ingressChains(walk));
    expect(plan.sets.map((s) => s.name)).toEqual(expect.arrayContaining(walk.sets.map((s) => s.name)));
  });

  it('decides as the table does (the probe is denied by default, a rule port allowed)', () => {
    const start = endpointChain(ENDPOINT, 'ingress', 'main');
    const probe = runChain(plan, 4, start, {
      remote: '198.18.100.1',
      direction: 'ingress',
      protocol: 'TCP',
      dport: 80,
    });
    expect(probe.verdict).toBe('deny');
    expect(probe.counted).toEqual(['default-deny']);
    // Rule 1 of the NetworkPolicy (j = 1): peer 1's block, TCP port 1007.
    const allowed = runChain(plan, 4, start, {
      remote: '198.18.100.33',
      direction: 'ingress',
      protocol: 'TCP',
      dport: 1007,
    });
    expect(allowed.verdict).toBe('allow');
    expect(allowed.counted).toEqual(['np:bench/many-rules/ingress/0']);
  });

  it('says so in the rendered plan', () => {
    const text = new IptablesBackend({ maxChainLevel: 8 }).render(tableIr, BENCH_NODE).text;
    expect(text).toMatch(
      /^# bench\/server ingress: walks its rules instead of its table \(its table's chains/m,
    );
  });
});
