/**
 * The nftables backend's rendering, without a kernel: table/set/chain structure, vmap dispatch,
 * conntrack first, the global tier before the Kubernetes tier with Pass/Log/Allow/Deny mapped as
 * the IR's evaluation order demands, concatenated named-port sets, IPv6, determinism, the
 * incremental diff, the error → script line mapping and the counter parser.
 */
import { describe, expect, it } from 'vitest';
import { createNftablesBackend } from '../../src/dataplane/nftables/index.js';
import { nftFailure } from '../../src/dataplane/nftables/apply.js';
import { parseCounters } from '../../src/dataplane/nftables/counters.js';
import { diffRulesets } from '../../src/dataplane/nftables/diff.js';
import { buildRuleset } from '../../src/dataplane/nftables/ruleset.js';
import { FLOW_ELEMENT_TIMEOUT_S, FLOW_SET_SIZE, tagText } from '../../src/dataplane/nftables/flow-sets.js';
import { flowChain } from '../../src/dataplane/nftables/names.js';
import { flowRuleTag } from '../../src/dataplane/netfilter/aggregates.js';
import type { IR } from '../../src/ir/types.js';
import { networkPolicy } from '../support/manifests.js';
import { dualStack, guardrails, irOf, xyz } from '../kernel/nftables-scenarios.js';

// The structure tests read the policy rules without flow logs; 'flow logs' below covers those.
const backend = createNftablesBackend({ flowLogs: false });
const withFlowLogs = createNftablesBackend();
const full = irOf([...xyz(), ...guardrails()]);

function script(ir: IR, node = 'node-1'): string {
  return backend.render(ir, node).text;
}

/** The `add rule` bodies of one chain, in order. */
function chainRules(text: string, chain: string): string[] {
  const prefix = `add rule inet switchyard ${chain} `;
  return text
    .split('\n')
    .filter((l) => l.startsWith(prefix))
    .map((l) => l.slice(prefix.length));
}

function iface(ir: IR, id: string): string {
  const ep = ir.endpoints.find((e) => e.id === id);
  if (!ep) throw new Error(`no endpoint ${id}`);
  return ep.hostInterface;
}

function lineIndex(text: string, needle: string): number {
  const i = text.split('\n').findIndex((l) => l.includes(needle));
  if (i < 0) throw new Error(`no line with ${needle}`);
  return i;
}

describe('nftables render: structure', () => {
  const text = script(full);

  it('replaces the whole table in one transaction: add + delete + add, then the definition', () => {
    const lines = text.split('\n').filter((l) => l && !l.startsWith('#'));
    expect(lines.slice(0, 3)).toEqual([
      'add table inet switchyard',
      'delete table inet switchyard',
      'add table inet switchyard',
    ]);
    expect(lines.filter((l) => /^(add|delete) table/.test(l))).toHaveLength(3);
    // Nothing outside the table.
    expect(lines.every((l) => / inet switchyard( |$)/.test(l))).toBe(true);
  });

  it('declares IpSets as interval sets per family and named-port sets as concatenations', () => {
    expect(text).toMatch(/add set inet switchyard sy-[0-9a-f]{12}-v4 \{ type ipv4_addr; flags interval; \}/);
    expect(text).toMatch(/add set inet switchyard sy-p[0-9a-f]{12}-v4 \{ type ipv4_addr \. inet_service; \}/);
    expect(text).toMatch(/add element inet switchyard sy-p[0-9a-f]{12}-v4 \{ 198\.18\.0\.10 \. 80, /);
    // IPv4-only sets get no IPv6 twin; the v4+v6 `nets` set gets both.
    const v6 = [...text.matchAll(/add set inet switchyard (\S+-v6) /g)].map((m) => m[1]);
    expect(v6).toHaveLength(1);
    expect(text).toContain(`add element inet switchyard ${v6[0]} { fd00:5957::/32 }`);
  });

  it('uses the egress named-port set on (daddr . dport) with its protocol', () => {
    const rules = chainRules(text, `fw-${iface(full, 'z/a')}-k8s`);
    expect(rules[0]).toMatch(
      /^meta l4proto tcp ip daddr @sy-[0-9a-f]{12}-v4 ip daddr \. th dport @sy-p[0-9a-f]{12}-v4 counter return comment "np:z\/egress-named\/egress\/0"$/,
    );
    expect(rules).toContain(
      'meta l4proto tcp th dport 1000-1010 counter return comment "np:z/egress-named/egress/1.0"',
    );
    expect(rules).toContain(
      'meta l4proto sctp th dport 2000 counter return comment "np:z/egress-named/egress/1.1"',
    );
  });

  it('dispatches by interface through verdict maps, egress before ingress, conntrack first', () => {
    expect(chainRules(text, 'forward')).toEqual([
      'ct state established,related counter accept comment "conntrack/established"',
      'ct state invalid counter drop comment "conntrack/invalid"',
      'counter iifname vmap @fw-dispatch',
      'counter oifname vmap @tw-dispatch',
    ]);
    expect(text).toContain(
      'add chain inet switchyard forward { type filter hook forward priority filter; policy accept; }',
    );
    const xa = iface(full, 'x/a');
    expect(text).toMatch(
      new RegExp(`add element inet switchyard fw-dispatch \\{ [^}]*"${xa}" : jump fw-${xa}[,} ]`),
    );
    expect(text).toMatch(
      new RegExp(`add element inet switchyard tw-dispatch \\{ [^}]*"${xa}" : jump tw-${xa}[,} ]`),
    );
    // Chains exist before the map elements and hooks that name them.
    expect(lineIndex(text, `add chain inet switchyard tw-${xa}`)).toBeLessThan(
      lineIndex(text, 'add element inet switchyard tw-dispatch'),
    );
    expect(lineIndex(text, 'add element inet switchyard tw-dispatch')).toBeLessThan(
      lineIndex(text, 'add chain inet switchyard forward'),
    );
  });

  it('installs only this node: other nodes’ pods appear as set members, never as chains', () => {
    const xb = iface(full, 'x/b'); // node-2
    expect(text).not.toContain(xb);
    expect(script(full, 'node-2')).toContain(`jump tw-${xb}`);
  });

  it('polices pods talking to the node itself with their egress rules, leaving other input alone', () => {
    expect(chainRules(text, 'input')).toEqual([
      'iifname != @workload-ifaces counter return',
      'ct state established,related counter accept comment "conntrack/established"',
      'ct state invalid counter drop comment "conntrack/invalid"',
      'icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } counter accept',
      'counter iifname vmap @fw-dispatch',
    ]);
  });

  it('prefilters at raw priority, only what enters from neither loopback nor a pod veth', () => {
    expect(text).toContain(
      'add chain inet switchyard prefilter { type filter hook prerouting priority raw; policy accept; }',
    );
    const rules = chainRules(text, 'prefilter');
    expect(rules.slice(0, 2)).toEqual([
      'iifname "lo" counter return',
      'iifname @workload-ifaces counter return',
    ]);
    expect(rules[2]).toMatch(/^ip saddr @sy-pf-[0-9a-f]{12}-v4 counter drop comment "prefilter\/block"$/);
    // No prefilter on this node, no prerouting hook.
    expect(script(irOf(xyz()))).not.toContain('prefilter');
  });

  it('puts a counter and, on IR rules, a comment with the rule id on every rule', () => {
    const rules = text.split('\n').filter((l) => l.startsWith('add rule'));
    expect(rules.every((r) => /\bcounter\b/.test(r))).toBe(true);
    const ids = new Set(
      full.ruleSets.flatMap((rs) => [...rs.globalRules, ...rs.kubernetesRules].map((r) => r.id)),
    );
    const comments = new Set(rules.flatMap((r) => [...r.matchAll(/comment "([^"]+)"/g)].map((m) => m[1])));
    for (const rs of full.ruleSets.filter(
      (r) => full.endpoints.find((e) => e.id === r.endpoint)?.node === 'node-1',
    ))
      for (const r of [...rs.globalRules, ...rs.kubernetesRules]) expect(comments).toContain(r.id);
    expect(
      [...comments].filter((c) => c && !ids.has(c) && !/\/default$|^conntrack\/|^prefilter\//.test(c)),
    ).toEqual([]);
  });
});

describe('nftables render: evaluation order', () => {
  const text = script(full);
  const xa = iface(full, 'x/a');

  it('runs the global tier first and reaches the Kubernetes tier by goto (Pass, or nothing decided)', () => {
    expect(chainRules(text, `tw-${xa}`)).toEqual([
      // Without flow records a Log rule only counts.
      'counter comment "gp:audit/ingress/0"',
      expect.stringMatching(
        /^meta l4proto tcp th dport 81 ip saddr @\S+ counter drop comment "gp:guard-x\/ingress\/0"$/,
      ),
      expect.stringMatching(
        new RegExp(`^ip saddr @\\S+ counter goto tw-${xa}-k8s comment "gp:guard-x/ingress/1"$`),
      ),
      'meta l4proto tcp th dport 80 counter return comment "gp:guard-x/ingress/2"',
      `counter goto tw-${xa}-k8s`,
    ]);
  });

  it('Kubernetes tier: any match returns (allowed), then the default decides', () => {
    expect(chainRules(text, `tw-${xa}-k8s`)).toEqual([
      expect.stringMatching(
        /^meta l4proto tcp th dport 81 ip saddr @\S+ counter return comment "np:x\/from-y-on-81\/ingress\/0"$/,
      ),
      'counter drop comment "x/a/ingress/default"',
    ]);
    // Not selected for egress by any NetworkPolicy: the default only counts.
    expect(chainRules(text, `fw-${xa}-k8s`)).toEqual(['counter comment "x/a/egress/default"']);
  });

  it('Allow is `return`, never `accept`: the receiving pod’s chain must still run on the same node', () => {
    const perEndpoint = text.split('\n').filter((l) => /^add rule inet switchyard (fw|tw)-/.test(l));
    expect(perEndpoint.some((l) => /\baccept\b/.test(l))).toBe(false);
  });

  it('ICMP matches ICMPv4 and ICMPv6 per family', () => {
    const ya = iface(full, 'y/b');
    const rules = chainRules(text, `fw-${ya}`);
    expect(rules.filter((r) => r.includes('gp:icmp-y/egress/0'))).toEqual([
      expect.stringMatching(/^meta l4proto icmp ip daddr @\S+-v4 counter return/),
      expect.stringMatching(/^meta l4proto ipv6-icmp ip6 daddr @\S+-v6 counter return/),
    ]);
  });
});

describe('nftables render: IPv6 is enforced, not skipped', () => {
  const ir = irOf(dualStack());
  // db/pg lives on node-2.
  const text = script(ir, 'node-2');

  it('every set-matching rule exists for each family its sets hold', () => {
    const pg = iface(ir, 'db/pg');
    const rules = chainRules(text, `tw-${pg}-k8s`);
    expect(
      rules.filter((r) => r.includes('"np:db/pg-from-api/ingress/0"')).map((r) => r.split(' @')[0]),
    ).toEqual(['meta l4proto tcp th dport 80 ip saddr', 'meta l4proto tcp th dport 80 ip6 saddr']);
    // web/api (node-1) egress to named ports: the concatenated set in both families.
    expect(script(ir, 'node-1')).toMatch(
      /add set inet switchyard sy-p[0-9a-f]{12}-v6 \{ type ipv6_addr \. inet_service; \}/,
    );
    expect(text).toMatch(/ip6 saddr @sy-pf-[0-9a-f]{12}-v6 counter drop comment "prefilter\/v6-too"/);
    // The default deny carries no family: IPv6 falls into it like IPv4.
    expect(rules.at(-1)).toBe('counter drop comment "db/pg/ingress/default"');
  });
});

describe('nftables render: determinism', () => {
  it('the same input renders byte-identical scripts, whatever the manifest order', () => {
    const a = script(irOf([...xyz(), ...guardrails()]));
    const b = script(irOf([...guardrails()].reverse().concat([...xyz()].reverse())));
    expect(b).toBe(a);
    expect(script(full)).toBe(a);
  });
});

describe('nftables diff', () => {
  const before = buildRuleset(full, 'node-1');

  it('no change: nothing to write', () => {
    expect(diffRulesets(before, buildRuleset(full, 'node-1'))?.changed).toEqual([]);
  });

  it('a label change on another node rewrites only one set’s members', () => {
    const fromA = networkPolicy('y', 'from-a', {
      podSelector: { matchLabels: { pod: 'b' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'a' } }, namespaceSelector: {} }] }],
    });
    const prev = buildRuleset(irOf([...xyz(), ...guardrails(), fromA]), 'node-1');
    // x/b (198.18.0.11) lives on node-2.
    const next = buildRuleset(irOf([...xyz({ 'x/b': { pod: 'a' } }), ...guardrails(), fromA]), 'node-1');
    const plan = diffRulesets(prev, next);
    expect(plan?.changed).toEqual([expect.stringMatching(/^set:sy-[0-9a-f]{12}-v4$/)]);
    const body = plan?.script.split('\n').filter((l) => l && !l.startsWith('#'));
    // Members are disjoint prefixes, so x/b's /32 merges with x/a's into a /31: out with the old prefix, in with the new.
    expect(body).toEqual([
      expect.stringMatching(/^delete element inet switchyard sy-[0-9a-f]{12}-v4 \{ 198\.18\.0\.10\/32 \}$/),
      expect.stringMatching(/^add element inet switchyard sy-[0-9a-f]{12}-v4 \{ 198\.18\.0\.10\/31 \}$/),
    ]);
  });

  it('a changed chain is flushed and refilled; a vanished pod’s chains and map entries go, in a safe order', () => {
    const xc = iface(full, 'x/c');
    const next = irOf([
      ...xyz().filter((m) => JSON.stringify(m).indexOf('"name":"c","namespace":"x"') < 0),
      ...guardrails(),
    ]);
    const plan = diffRulesets(before, buildRuleset(next, 'node-1'));
    const lines = plan?.script.split('\n') ?? [];
    const at = (l: string): number => lines.indexOf(l);
    expect(at(`delete element inet switchyard fw-dispatch { "${xc}" }`)).toBeGreaterThan(0);
    expect(at(`flush chain inet switchyard fw-${xc}`)).toBeGreaterThan(
      at(`delete element inet switchyard fw-dispatch { "${xc}" }`),
    );
    expect(at(`delete chain inet switchyard fw-${xc}-k8s`)).toBeGreaterThan(
      at(`flush chain inet switchyard fw-${xc}`),
    );
    expect(plan?.changed).toEqual(
      expect.arrayContaining([
        `chain:fw-${xc}`,
        `chain:tw-${xc}-k8s`,
        'map:tw-dispatch',
        'set:workload-ifaces',
      ]),
    );
  });

  it('a policy change flushes and refills exactly the chains it touches', () => {
    const next = irOf([
      ...xyz(),
      ...guardrails().filter((m) => (m.metadata as { name: string }).name !== 'audit'),
    ]);
    const plan = diffRulesets(before, buildRuleset(next, 'node-1'));
    const xa = iface(full, 'x/a');
    const xc = iface(full, 'x/c');
    // The Log rule's flow chain goes with its last user; the flow sets stay as they are.
    const logChain = flowChain('log', flowRuleTag('log', 'gp:audit/ingress/0'));
    expect([...(plan?.changed ?? [])].sort()).toEqual([
      `chain:${logChain}`,
      `chain:tw-${xa}`,
      `chain:tw-${xc}`,
    ]);
    expect(plan?.script).toContain(`flush chain inet switchyard tw-${xa}\n`);
    expect(plan?.script).toContain(`delete chain inet switchyard ${logChain}\n`);
    expect(plan?.script).not.toMatch(/ (flows|traffic)[46]\b/);
  });

  it('gives up (full rewrite) when a declaration would have to change', () => {
    const after = buildRuleset(full, 'node-1');
    const set = after.sets[0];
    if (!set) throw new Error('no set');
    set.spec = '{ type ipv4_addr; }';
    expect(diffRulesets(before, after)).toBeUndefined();
  });
});

describe('nftables apply errors and counters', () => {
  it('maps nft’s file:line:col error onto the script line with context', () => {
    const text =
      'add table inet switchyard\nadd chain inet switchyard c\nadd rule inet switchyard c tcp dport 99999 drop\n';
    const e = nftFailure(
      text,
      {
        code: 1,
        stdout: '',
        stderr:
          '/dev/stdin:3:39-43: Error: Service out of range\nadd rule inet switchyard c tcp dport 99999 drop\n                                      ^^^^^\n',
      },
      'ruleset for node node-1',
    );
    expect(e.message).toContain('nft rejected line 3 of the ruleset for node node-1: Service out of range');
    expect(e.detail).toContain('>     3 | add rule inet switchyard c tcp dport 99999 drop');
    expect(e.detail).toContain('      2 | add chain inet switchyard c');
  });

  it('sums an IR rule’s per-family nft rules and maps chains back to endpoints', () => {
    const rule = (chain: string, comment: string | undefined, packets: number): Record<string, unknown> => ({
      rule: {
        family: 'inet',
        table: 'switchyard',
        chain,
        handle: 1,
        ...(comment ? { comment } : {}),
        expr: [{ counter: { packets, bytes: packets * 60 } }, { return: null }],
      },
    });
    const json = JSON.stringify({
      nftables: [
        { metainfo: { version: '1.0.6' } },
        { table: { family: 'inet', name: 'switchyard' } },
        rule('tw-syaaa', 'gp:g/ingress/0', 1),
        rule('tw-syaaa', undefined, 9),
        rule('tw-syaaa-k8s', 'np:x/p/ingress/0', 2),
        rule('tw-syaaa-k8s', 'np:x/p/ingress/0', 3),
        rule('tw-syaaa-k8s', 'x/a/ingress/default', 4),
        rule('fw-syaaa-k8s', 'x/a/egress/default', 0),
        rule('prefilter', 'prefilter/block', 5),
        rule('forward', 'conntrack/established', 6),
        rule('input', 'conntrack/established', 1),
      ],
    });
    const counters = parseCounters(json);
    expect(counters).toEqual(
      expect.arrayContaining([
        { rule: 'gp:g/ingress/0', endpoint: 'x/a', direction: 'ingress', packets: 1, bytes: 60 },
        { rule: 'np:x/p/ingress/0', endpoint: 'x/a', direction: 'ingress', packets: 5, bytes: 300 },
        { rule: 'x/a/ingress/default', endpoint: 'x/a', direction: 'ingress', packets: 4, bytes: 240 },
        { rule: 'x/a/egress/default', endpoint: 'x/a', direction: 'egress', packets: 0, bytes: 0 },
        { rule: 'prefilter/block', packets: 5, bytes: 300 },
        { rule: 'conntrack/established', packets: 7, bytes: 420 },
      ]),
    );
    expect(counters).toHaveLength(6);
  });
});

describe('nftables render: flow records (default)', () => {
  const ir = irOf([...xyz(), ...guardrails()]);
  const text = withFlowLogs.render(ir, 'node-1').text;
  const xa = iface(ir, 'x/a');
  const rules = text.split('\n').filter((l) => l.startsWith('add rule'));

  /** The chain a rule id's decisions with `verdict` are recorded in, checked to be rendered. */
  function recordedIn(verdict: 'allow' | 'deny' | 'log', rule: string): string[] {
    const tag = flowRuleTag(verdict, rule);
    const chain = chainRules(text, flowChain(verdict, tag));
    expect(chain, `${verdict} ${rule}`).not.toEqual([]);
    return chain;
  }

  it('declares four counted dynamic sets, keyed with the rule tag for decisions, and the full counter', () => {
    const decl = (name: string): string =>
      text.split('\n').find((l) => l.startsWith(`add set inet switchyard ${name} `)) ?? '';
    const attrs = `flags dynamic,timeout; timeout ${FLOW_ELEMENT_TIMEOUT_S}s; size ${FLOW_SET_SIZE}; counter; }`;
    expect(decl('flows4')).toContain(
      `{ type ipv4_addr . ipv4_addr . inet_proto . inet_service . mark; ${attrs}`,
    );
    expect(decl('flows6')).toContain(
      `{ type ipv6_addr . ipv6_addr . inet_proto . inet_service . mark; ${attrs}`,
    );
    expect(decl('traffic4')).toContain(`{ type ipv4_addr . ipv4_addr . inet_proto . inet_service; ${attrs}`);
    expect(decl('traffic6')).toContain(`{ type ipv6_addr . ipv6_addr . inet_proto . inet_service; ${attrs}`);
    expect(text).toContain('add counter inet switchyard flows-full\n');
    // Nothing is logged through NFLOG any more, and nothing is rate-limited.
    expect(text).not.toMatch(/\blog prefix|\blimit\b|flowlog/);
  });

  it('a deciding rule counts under its id once, then its flow chain records it and decides', () => {
    expect(chainRules(text, `tw-${xa}-k8s`)).toEqual([
      expect.stringMatching(
        new RegExp(
          `^meta l4proto tcp th dport 81 ip saddr @\\S+ counter goto flow-allow-[0-9a-f]{8} comment "np:x/from-y-on-81/ingress/0"$`,
        ),
      ),
      `counter goto ${flowChain('deny', flowRuleTag('deny', 'x/a/ingress/default'))} comment "x/a/ingress/default"`,
    ]);
    const tag = tagText(flowRuleTag('deny', 'x/a/ingress/default'));
    expect(recordedIn('deny', 'x/a/ingress/default')).toEqual([
      `meta nfproto ipv4 meta l4proto @flow-ported update @flows4 { ip saddr . ip daddr . meta l4proto . th dport . ${tag} } drop`,
      `meta nfproto ipv4 meta l4proto != @flow-ported update @flows4 { ip saddr . ip daddr . meta l4proto . 0 . ${tag} } drop`,
      `meta nfproto ipv6 meta l4proto @flow-ported update @flows6 { ip6 saddr . ip6 daddr . meta l4proto . th dport . ${tag} } drop`,
      `meta nfproto ipv6 meta l4proto != @flow-ported update @flows6 { ip6 saddr . ip6 daddr . meta l4proto . 0 . ${tag} } drop`,
      // A full set refuses the update, which ends that rule: the verdict comes regardless.
      'counter name "flows-full" drop',
    ]);
  });

  it('allows return from their flow chain, Log rules jump to theirs and come back', () => {
    const allow = recordedIn('allow', 'np:x/from-y-on-81/ingress/0');
    expect(allow.every((r) => r.endsWith(' return'))).toBe(true);
    expect(chainRules(text, `fw-${xa}-k8s`)).toEqual([
      `counter goto ${flowChain('allow', flowRuleTag('allow', 'x/a/egress/default'))} comment "x/a/egress/default"`,
    ]);
    expect(chainRules(text, `tw-${xa}`)[0]).toBe(
      `counter jump ${flowChain('log', flowRuleTag('log', 'gp:audit/ingress/0'))} comment "gp:audit/ingress/0"`,
    );
    const log = recordedIn('log', 'gp:audit/ingress/0');
    expect(log.slice(0, 4).every((r) => r.endsWith(' return'))).toBe(true);
    expect(log.at(-1)).toBe('counter name "flows-full"');
  });

  it('one flow chain per verdict and rule, whatever the number of endpoints it applies to', () => {
    const gotos = rules.flatMap((r) =>
      [...r.matchAll(/(?:goto|jump) (flow-(?:allow|deny|log)-[0-9a-f]{8})/g)].map((m) => m[1]),
    );
    const declared = [...text.matchAll(/^add chain inet switchyard (flow-(?:allow|deny|log)-\S+)$/gm)].map(
      (m) => m[1],
    );
    expect(new Set(gotos)).toEqual(new Set(declared));
    expect(declared.length).toBe(new Set(declared).size);
  });

  it('records established packets of the original direction, then accepts them', () => {
    const established = [
      'ct state established ct direction original counter goto flow-traffic comment "conntrack/established"',
      'ct state established,related counter accept comment "conntrack/established"',
    ];
    expect(chainRules(text, 'forward').slice(0, 2)).toEqual(established);
    expect(chainRules(text, 'input').slice(1, 3)).toEqual(established);
    expect(chainRules(text, 'flow-traffic')).toEqual([
      'meta nfproto ipv4 meta l4proto @flow-ported update @traffic4 { ip saddr . ip daddr . meta l4proto . th dport } accept',
      'meta nfproto ipv4 meta l4proto != @flow-ported update @traffic4 { ip saddr . ip daddr . meta l4proto . 0 } accept',
      'meta nfproto ipv6 meta l4proto @flow-ported update @traffic6 { ip6 saddr . ip6 daddr . meta l4proto . th dport } accept',
      'meta nfproto ipv6 meta l4proto != @flow-ported update @traffic6 { ip6 saddr . ip6 daddr . meta l4proto . 0 } accept',
      'counter name "flows-full" accept',
    ]);
  });

  it('a smaller set size is only a declaration', () => {
    const small = createNftablesBackend({ flowSetSize: 4 }).render(ir, 'node-1').text;
    expect(small).toContain(`timeout ${FLOW_ELEMENT_TIMEOUT_S}s; size 4; counter; }`);
    expect(small.replace(/size 4;/g, `size ${FLOW_SET_SIZE};`)).toBe(text);
  });

  it('with flowLogs: false renders no set, no update and no flow chain', () => {
    const off = backend.render(ir, 'node-1').text;
    expect(off).not.toMatch(/\bupdate\b|flows-full|flow-|\b(flows|traffic)[46]\b|\blog\b/);
  });
});
