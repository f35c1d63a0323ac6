/**
 * The iptables backend's rendering, without a kernel: chain layout (felix-style dispatch,
 * conntrack first, global tier before the Kubernetes tier, Pass = RETURN, Log = count and go on),
 * sets (hash:net, hash:ip,port for named ports, IPv6 twins), multiport splitting, prefilter
 * placement, per-chain diffs, the parsers counters and apply rely on, and the flow sets (rules,
 * sets, how an apply treats them, and reading them back).
 */
import { describe, expect, it } from 'vitest';
import { iptablesBackend } from '../../src/dataplane/iptables/index.js';
import { countersFromSaved, commentOf } from '../../src/dataplane/iptables/counters.js';
import { diffPlan, kernelStateAfter } from '../../src/dataplane/iptables/diff.js';
import { failingLine, parseSave, type KernelTable } from '../../src/dataplane/iptables/kernel.js';
import { endpointChain } from '../../src/dataplane/iptables/names.js';
import type { ChainRules, NodePlan, TablePlan } from '../../src/dataplane/iptables/plan.js';
import { planForNode as renderPlan } from '../../src/dataplane/iptables/render.js';
import { MULTIPORT_SLOTS, portMatches } from '../../src/dataplane/iptables/render-rules.js';
import { culpritLine } from '../../src/dataplane/iptables/apply.js';
import { restoreScript } from '../../src/dataplane/iptables/script.js';
import type { IR } from '../../src/ir/types.js';
import {
  Cluster,
  globalPolicy,
  namespace,
  networkPolicy,
  pod,
  prefilter,
  type Manifest,
} from '../support/manifests.js';

// The layout tests read the policy rules without flows; 'flows' below covers those.
const planForNode = (ir: IR, node: string): NodePlan => renderPlan(ir, node, { flowLogs: false });

const WEB = { labels: { app: 'web' }, node: 'node-a', ports: [{ name: 'http', containerPort: 80 }] };

function base(): Manifest[] {
  return [
    namespace('shop', { team: 'shop' }),
    namespace('other', { team: 'other' }),
    pod('shop', 'web', { ...WEB, ip: '198.18.1.1' }),
    pod('shop', 'db', { labels: { app: 'db' }, ip: '198.18.1.2', node: 'node-a' }),
    pod('other', 'client', { labels: { app: 'client' }, ip: '198.18.2.1', node: 'node-b' }),
    pod('other', 'web', {
      ...WEB,
      node: 'node-b',
      ip: '198.18.2.2',
      ports: [{ name: 'http', containerPort: 8080 }],
    }),
  ];
}

function irOf(extra: Manifest[] = [], manifests = base()): IR {
  return new Cluster([...manifests, ...extra]).ir;
}

function table(plan: NodePlan, family: 4 | 6, name: 'filter' | 'raw'): TablePlan | undefined {
  return plan.tables.find((t) => t.family === family && t.table === name);
}

function chain(plan: NodePlan, name: string, family: 4 | 6 = 4): readonly string[] {
  const c = table(plan, family, 'filter')?.chains.find((x) => x.name === name);
  if (!c) throw new Error(`no chain ${name}`);
  return c.rules;
}

const DENY_DB = networkPolicy('shop', 'db-from-web', {
  podSelector: { matchLabels: { app: 'db' } },
  ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 5432 }] }],
});

describe('iptables render: layout', () => {
  const ir = irOf([DENY_DB]);
  const plan = planForNode(ir, 'node-a');
  const db = endpointChain('shop/db', 'ingress', 'main');

  it('enters through one jump from FORWARD (and INPUT) and dispatches by host interface', () => {
    const filter = table(plan, 4, 'filter') as TablePlan;
    expect(filter.jumps).toEqual([
      { builtin: 'FORWARD', rule: '-m comment --comment "switchyard" -j SY-FORWARD' },
      { builtin: 'INPUT', rule: '-m comment --comment "switchyard" -j SY-INPUT' },
    ]);
    // Pod → node: the pod's egress policy, then accept what it allowed.
    expect(chain(plan, 'SY-INPUT')).toEqual([
      '-j MARK --set-xmark 0x0/0x10000',
      '-j SY-FROM-WL',
      '-m mark --mark 0x10000/0x10000 -m comment --comment "policy accepted" -j ACCEPT',
    ]);
    expect(chain(plan, 'SY-FORWARD')).toEqual([
      '-j MARK --set-xmark 0x0/0x10000',
      '-j SY-FROM-WL',
      '-j SY-TO-WL',
      '-m mark --mark 0x10000/0x10000 -m comment --comment "policy accepted" -j ACCEPT',
    ]);
    const dbIf = ir.endpoints.find((e) => e.id === 'shop/db')?.hostInterface as string;
    expect(chain(plan, 'SY-FROM-WL')).toContain(
      `-i ${dbIf} -m comment --comment "shop/db" -g ${endpointChain('shop/db', 'egress', 'main')}`,
    );
    expect(chain(plan, 'SY-TO-WL')).toContain(`-o ${dbIf} -m comment --comment "shop/db" -g ${db}`);
    // Only this node's endpoints.
    expect(chain(plan, 'SY-FROM-WL')).toHaveLength(2);
    expect(chain(plan, 'SY-ALLOW')).toEqual(['-j MARK --set-xmark 0x10000/0x10000']);
  });

  it('accepts established, drops invalid, then policy, then the Kubernetes default', () => {
    const rules = chain(plan, db);
    expect(rules.slice(0, 3)).toEqual([
      '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
      '-m conntrack --ctstate INVALID -j DROP',
      '-j MARK --set-xmark 0x0/0x10000',
    ]);
    const set = ir.ruleSets.find((r) => r.endpoint === 'shop/db' && r.direction === 'ingress')
      ?.kubernetesRules[0]?.peerSet;
    expect(rules[3]).toBe(
      `-p tcp -m set --match-set ${set} src -m tcp --dport 5432 -m comment --comment "np:shop/db-from-web/ingress/0" -g SY-ALLOW`,
    );
    expect(rules.at(-1)).toBe('-m comment --comment "default-deny" -j DROP');
    // Not selected by any policy: allowed, still through a counted rule.
    expect(chain(plan, endpointChain('shop/db', 'egress', 'main')).at(-1)).toBe(
      '-m comment --comment "default-allow" -g SY-ALLOW',
    );
  });

  it('keeps chain names within iptables limits', () => {
    for (const t of plan.tables) for (const c of t.chains) expect(c.name.length).toBeLessThanOrEqual(28);
  });

  it('renders deterministically, whatever the manifest order', () => {
    const a = iptablesBackend.render(ir, 'node-a').text;
    const b = iptablesBackend.render(irOf([], [DENY_DB, ...base()].reverse()), 'node-a').text;
    expect(b).toBe(a);
    expect(iptablesBackend.render(ir, 'node-a').text).toBe(a);
  });
});

describe('iptables render: tiers', () => {
  const ir = irOf([
    DENY_DB,
    globalPolicy('audit', { order: 10, ingress: [{ action: 'Log' }] }),
    globalPolicy('guard', {
      order: 20,
      selector: { matchLabels: { app: 'db' } },
      ingress: [
        { action: 'Pass', from: [{ namespaceSelector: { matchLabels: { team: 'shop' } } }] },
        { action: 'Allow', protocol: 'ICMP' },
        { action: 'Deny' },
      ],
    }),
  ]);
  const plan = planForNode(ir, 'node-a');
  const main = chain(plan, endpointChain('shop/db', 'ingress', 'main'));
  const global = chain(plan, endpointChain('shop/db', 'ingress', 'global'));

  it('runs the global tier before the Kubernetes tier and returns when it allowed', () => {
    const jump = main.indexOf(`-j ${endpointChain('shop/db', 'ingress', 'global')}`);
    expect(jump).toBe(3);
    expect(main[jump + 1]).toBe('-m mark --mark 0x10000/0x10000 -j RETURN');
    expect(main[jump + 2]).toContain('np:shop/db-from-web/ingress/0');
  });

  it('maps Log → count (and on), Pass → RETURN, Allow → mark and return, Deny → DROP, in order', () => {
    expect(global).toHaveLength(4);
    expect(global[0]).toBe('-m comment --comment "gp:audit/ingress/0"');
    expect(global[1]).toMatch(
      /^-m set --match-set sy-\w+ src -m comment --comment "gp:guard\/ingress\/0" -j RETURN$/,
    );
    expect(global[2]).toBe('-p icmp -m comment --comment "gp:guard/ingress/1" -g SY-ALLOW');
    expect(global[3]).toBe('-m comment --comment "gp:guard/ingress/2" -j DROP');
  });

  it('gives endpoints without global rules no global chain', () => {
    const names = (table(plan, 4, 'filter') as TablePlan).chains.map((c) => c.name);
    expect(names).toContain(endpointChain('shop/web', 'ingress', 'global')); // audit selects every endpoint
    expect(names).not.toContain(endpointChain('shop/web', 'egress', 'global'));
  });

  it('lets neighbour discovery from pods through in IPv6, before any policy', () => {
    const egress = chain(plan, endpointChain('shop/db', 'egress', 'main'), 6);
    expect(egress.slice(2, 5)).toEqual([
      '-p ipv6-icmp -m icmp6 --icmpv6-type router-solicitation -j ACCEPT',
      '-p ipv6-icmp -m icmp6 --icmpv6-type neighbour-solicitation -j ACCEPT',
      '-p ipv6-icmp -m icmp6 --icmpv6-type neighbour-advertisement -j ACCEPT',
    ]);
    expect(chain(plan, endpointChain('shop/db', 'egress', 'main'), 4).join('\n')).not.toContain('icmp6');
  });

  it('uses ICMPv6 in the IPv6 table and leaves out rules whose set has no IPv6 member', () => {
    const v6 = chain(plan, endpointChain('shop/db', 'ingress', 'global'), 6);
    expect(v6).toEqual([
      '-m comment --comment "gp:audit/ingress/0"',
      '-p ipv6-icmp -m comment --comment "gp:guard/ingress/1" -g SY-ALLOW',
      '-m comment --comment "gp:guard/ingress/2" -j DROP',
    ]);
  });
});

describe('iptables render: sets and ports', () => {
  it('resolves egress named ports to a hash:ip,port set matched on dst,dst', () => {
    const ir = irOf([
      networkPolicy('other', 'client-to-http', {
        podSelector: { matchLabels: { app: 'client' } },
        policyTypes: ['Egress'],
        egress: [{ ports: [{ port: 'http' }] }],
      }),
    ]);
    const plan = planForNode(ir, 'node-b');
    const portSet = plan.sets.find((s) => s.type === 'hash:ip,port');
    expect(portSet?.members).toEqual(['198.18.1.1,tcp:80', '198.18.2.2,tcp:8080']);
    const egress = chain(plan, endpointChain('other/client', 'egress', 'main'));
    expect(egress).toContain(
      `-p tcp -m set --match-set ${portSet?.name} dst,dst -m comment --comment "np:other/client-to-http/egress/0" -g SY-ALLOW`,
    );
    const text = iptablesBackend.render(ir, 'node-b').text;
    expect(text).toContain(
      `create ${portSet?.name}-tmp hash:ip,port family inet hashsize 1024 maxelem 65536`,
    );
    expect(text).toContain(`add ${portSet?.name}-tmp 198.18.1.1,tcp:80`);
    expect(text).toContain(`swap ${portSet?.name}-tmp ${portSet?.name}`);
  });

  it('packs ports into multiport matches of at most 15 slots (a range takes two)', () => {
    const ports = Array.from({ length: 20 }, (_, i) => ({ first: 1000 + 2 * i, last: 1000 + 2 * i }));
    expect(portMatches('TCP', ports)).toEqual([
      `-m multiport --dports ${ports
        .slice(0, 15)
        .map((p) => p.first)
        .join(',')}`,
      `-m multiport --dports ${ports
        .slice(15)
        .map((p) => p.first)
        .join(',')}`,
    ]);
    const ranges = Array.from({ length: 8 }, (_, i) => ({ first: 100 * i + 1, last: 100 * i + 50 }));
    const split = portMatches('UDP', ranges);
    expect(split).toEqual([
      `-m multiport --dports ${ranges
        .slice(0, 7)
        .map((r) => `${r.first}:${r.last}`)
        .join(',')}`,
      '-m udp --dport 701:750',
    ]);
    for (const m of split) {
      const entries = m.split(' ').at(-1)?.split(',') ?? [];
      expect(entries.reduce((n, e) => n + (e.includes(':') ? 2 : 1), 0)).toBeLessThanOrEqual(MULTIPORT_SLOTS);
    }
  });

  it('splits a long port list of one policy rule into rules with the same id', () => {
    const ir = irOf([
      networkPolicy('shop', 'many-ports', {
        podSelector: { matchLabels: { app: 'db' } },
        ingress: [
          { ports: Array.from({ length: 17 }, (_, i) => ({ port: 2000 + 3 * i, protocol: 'SCTP' })) },
        ],
      }),
    ]);
    const rules = chain(planForNode(ir, 'node-a'), endpointChain('shop/db', 'ingress', 'main')).filter((r) =>
      r.includes('many-ports'),
    );
    expect(rules).toHaveLength(2);
    expect(rules.every((r) => r.startsWith('-p sctp -m multiport --dports '))).toBe(true);
  });

  it('loads ipBlock excepts as the disjoint prefixes of the IR, and 0.0.0.0/0 as two halves', () => {
    const ir = irOf([
      networkPolicy('shop', 'cidr', {
        podSelector: { matchLabels: { app: 'db' } },
        ingress: [
          { from: [{ ipBlock: { cidr: '198.18.0.0/16', except: ['198.18.1.0/24'] } }] },
          { from: [{ ipBlock: { cidr: '0.0.0.0/0' } }] },
        ],
      }),
    ]);
    const plan = planForNode(ir, 'node-a');
    const irSets = new Map(ir.ipSets.map((s) => [s.id, s.cidrs]));
    const except = plan.sets.find((s) => irSets.get(s.irId)?.includes('198.18.0.0/24'));
    expect(except?.members).toEqual(irSets.get(except?.irId as string));
    expect(except?.members).not.toContain('198.18.1.0/24');
    const all = plan.sets.find((s) => irSets.get(s.irId)?.includes('0.0.0.0/0'));
    expect(all?.members).toEqual(['0.0.0.0/1', '128.0.0.0/1']);
  });

  it('creates IPv6 twins only for sets with IPv6 members and matches them in ip6tables', () => {
    const v6pod: Manifest = {
      ...pod('other', 'v6', { labels: { app: 'web' }, node: 'node-b' }),
      status: { podIPs: [{ ip: '198.18.2.9' }, { ip: 'fd00:5957::9' }] },
    };
    const ir = irOf([
      v6pod,
      networkPolicy('shop', 'from-web', {
        podSelector: { matchLabels: { app: 'db' } },
        ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: 'web' } } }] }],
      }),
    ]);
    const plan = planForNode(ir, 'node-a');
    const v4 = plan.sets.find((s) => s.family === 4 && s.members.includes('198.18.2.9/32'));
    const v6 = plan.sets.find((s) => s.family === 6);
    expect(v6?.name).toBe(`${v4?.name}-v6`);
    expect(v6?.members).toEqual(['fd00:5957::9/128']);
    expect(chain(plan, endpointChain('shop/db', 'ingress', 'main'), 6)).toContain(
      `-m set --match-set ${v6?.name} src -m comment --comment "np:shop/from-web/ingress/0" -g SY-ALLOW`,
    );
    expect(iptablesBackend.render(ir, 'node-a').text).toContain(
      `create ${v6?.name}-tmp hash:net family inet6`,
    );
  });
});

describe('iptables render: prefilter', () => {
  const ir = irOf([prefilter('blocklist', { nodes: ['node-a'], cidrs: ['198.18.200.0/24'] })]);

  it('drops listed sources in raw PREROUTING unless they come from a local pod or loopback', () => {
    const plan = planForNode(ir, 'node-a');
    const raw = table(plan, 4, 'raw') as TablePlan;
    expect(raw.jumps).toEqual([
      { builtin: 'PREROUTING', rule: '-m comment --comment "switchyard" -j SY-PREFILTER' },
    ]);
    const rules = raw.chains[0]?.rules ?? [];
    const local = ir.endpoints
      .filter((e) => e.node === 'node-a')
      .map((e) => `-i ${e.hostInterface} -j RETURN`);
    expect(rules.slice(0, 3)).toEqual(['-i lo -j RETURN', ...local]);
    expect(rules[3]).toMatch(
      /^-m set --match-set sy-pf-\w+ src -m comment --comment "prefilter\/blocklist" -j DROP$/,
    );
    // No IPv6 member: nothing to drop in IPv6, so no raw table there.
    expect(table(plan, 6, 'raw')).toBeUndefined();
  });

  it('leaves the raw table alone on nodes the prefilter does not name', () => {
    expect(table(planForNode(ir, 'node-b'), 4, 'raw')).toBeUndefined();
  });
});

/** A kernel state whose tables' chains a test may edit. */
interface EditableKernel {
  sets: Set<string>;
  tables: Map<string, Omit<KernelTable, 'chains'> & { chains: Map<string, ChainRules> }>;
}

/** What the kernel would hold after applying `plan` (for diff tests), a copy the test may edit. */
function kernelWith(plan: NodePlan): EditableKernel {
  const k = kernelStateAfter(plan);
  return {
    sets: new Set(k.sets),
    tables: new Map([...k.tables].map(([key, t]) => [key, { ...t, chains: new Map(t.chains) }])),
  };
}

describe('iptables apply diff', () => {
  const before = irOf([DENY_DB]);
  const planBefore = planForNode(before, 'node-a');

  it('writes everything on a fresh namespace and nothing when nothing changed', () => {
    const fresh = diffPlan(planBefore, undefined, { sets: new Set(), tables: new Map() });
    expect(fresh.sets).toHaveLength(planBefore.sets.length);
    expect(fresh.tables.map((t) => t.change.write.length)).toEqual(
      planBefore.tables.map((t) => t.chains.length),
    );
    expect(fresh.tables.map((t) => t.change.insertJumps.length)).toEqual(
      planBefore.tables.map((t) => t.jumps.length),
    );
    const same = diffPlan(planBefore, planBefore, kernelWith(planBefore));
    expect(same.sets).toEqual([]);
    expect(same.tables).toEqual([]);
  });

  it('rewrites only the set a pod label change affects', () => {
    const relabelled = base().map((m) =>
      (m.metadata as { name: string; namespace?: string }).name === 'web' &&
      (m.metadata as { namespace?: string }).namespace === 'other'
        ? pod('other', 'web', { ...WEB, node: 'node-b', ip: '198.18.2.2', labels: { app: 'api' } })
        : m,
    );
    // A policy on node-a that selects peers by label in every namespace.
    const np = networkPolicy('shop', 'db-from-any-web', {
      podSelector: { matchLabels: { app: 'db' } },
      ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: 'web' } } }] }],
    });
    const prev = planForNode(irOf([np]), 'node-a');
    const next = planForNode(irOf([np], relabelled), 'node-a');
    const d = diffPlan(next, prev, kernelWith(prev));
    // Changed in place: the relabelled pod leaves the set, nothing is rebuilt, no chain is written.
    expect(d.sets).toEqual([]);
    expect(d.deltas).toHaveLength(1);
    expect(d.deltas[0]?.set.members).toEqual(['198.18.1.1/32']);
    expect(d.deltas[0]?.del).toEqual(['198.18.2.2/32']);
    expect(d.tables).toEqual([]);
  });

  it('deletes chains and sets the new plan no longer has, and removes a jump it no longer needs', () => {
    const withPf = planForNode(irOf([DENY_DB, prefilter('pf', { cidrs: ['198.18.200.0/24'] })]), 'node-a');
    const d = diffPlan(planBefore, withPf, kernelWith(withPf));
    const raw = d.tables.find((t) => t.key === 'iptables/raw');
    expect(raw?.change.deleteChains).toEqual(['SY-PREFILTER']);
    expect(raw?.change.deleteJumps.map((j) => j.builtin)).toEqual(['PREROUTING']);
    expect(d.obsoleteSets.some((n) => n.startsWith('sy-pf-'))).toBe(true);
    const script = restoreScript(
      'raw',
      raw?.change ?? { write: [], deleteChains: [], insertJumps: [], deleteJumps: [] },
    );
    expect(script.split('\n').filter(Boolean)).toEqual([
      '*raw',
      ':SY-PREFILTER - [0:0]',
      '-D PREROUTING -m comment --comment "switchyard" -j SY-PREFILTER',
      '-X SY-PREFILTER',
      'COMMIT',
    ]);
  });

  it('rewrites a chain the kernel lost even when the previous plan had it', () => {
    const kernel = kernelWith(planBefore);
    const db = endpointChain('shop/db', 'ingress', 'main');
    kernel.tables.get('iptables/filter')?.chains.delete(db);
    const d = diffPlan(planBefore, planBefore, kernel);
    expect(d.tables.map((t) => [t.key, t.change.write.map((c) => c.name)])).toEqual([
      ['iptables/filter', [db]],
    ]);
  });
});

describe('iptables render: unchanged rule sets are handed on', () => {
  const ir = irOf([DENY_DB]);
  const db = endpointChain('shop/db', 'ingress', 'main');
  const peerSet = ir.ruleSets.find((rs) => rs.endpoint === 'shop/db' && rs.direction === 'ingress')
    ?.kubernetesRules[0]?.peerSet as string;
  const find = (plan: NodePlan, family: 4 | 6) =>
    table(plan, family, 'filter')?.chains.find((c) => c.name === db);

  it('as the same chain objects, which the diff passes over', () => {
    const before = planForNode(ir, 'node-a');
    const after = planForNode({ ...ir }, 'node-a');
    expect(find(after, 4)).toBe(find(before, 4));
    expect(diffPlan(after, before, kernelStateAfter(before)).tables).toEqual([]);
  });

  it('rendered again when a set it names gains its IPv6 twin (the rule appears in ip6tables)', () => {
    const before = planForNode(ir, 'node-a');
    const withV6 = {
      ...ir,
      ipSets: ir.ipSets.map((s) =>
        s.id === peerSet ? { ...s, cidrs: [...s.cidrs, 'fd00:5957::9/128'] } : s,
      ),
    };
    const after = planForNode(withV6, 'node-a');
    expect(find(before, 6)?.rules.some((r) => r.includes(`${peerSet}-v6`))).toBe(false);
    expect(find(after, 6)?.rules.some((r) => r.includes(`${peerSet}-v6 src`))).toBe(true);
    expect(find(after, 4)).toBe(find(before, 4));
    const d = diffPlan(after, before, kernelStateAfter(before));
    expect(d.tables.map((t) => [t.key, t.change.write.map((c) => c.name)])).toEqual([
      ['ip6tables/filter', [db]],
    ]);
  });
});

describe('iptables kernel text', () => {
  it('declares our chains, never built-in ones, and adds rules after every declaration', () => {
    const plan = planForNode(irOf([DENY_DB]), 'node-a');
    const filter = table(plan, 4, 'filter') as TablePlan;
    const lines = restoreScript('filter', {
      write: filter.chains,
      deleteChains: [],
      insertJumps: filter.jumps,
      deleteJumps: [],
    }).split('\n');
    const firstRule = lines.findIndex((l) => l.startsWith('-'));
    expect(lines.slice(1, firstRule).every((l) => /^:SY-\S+ - \[0:0\]$/.test(l))).toBe(true);
    expect(lines.some((l) => l.startsWith(':FORWARD'))).toBe(false);
    expect(lines.filter((l) => l.startsWith('-I '))).toEqual([
      '-I FORWARD 1 -m comment --comment "switchyard" -j SY-FORWARD',
      '-I INPUT 1 -m comment --comment "switchyard" -j SY-INPUT',
    ]);
  });

  it('finds the failing line in every error format the tools print', () => {
    expect(
      failingLine(
        "iptables-restore v1.8.9 (nf_tables): Chain 'X' does not exist\nError occurred at line: 5\n",
      ),
    ).toBe(5);
    expect(failingLine('iptables-restore: line 7 failed\n')).toBe(7);
    expect(failingLine('ipset v7.17: Error in line 3: The set with the given name does not exist\n')).toBe(3);
    expect(failingLine('something else')).toBeUndefined();
  });

  it('reads counters back per endpoint and rule id from iptables-save -c', () => {
    const saved = `# Generated by iptables-save
*raw
:PREROUTING ACCEPT [10:600]
:SY-PREFILTER - [0:0]
[10:600] -A PREROUTING -m comment --comment switchyard -j SY-PREFILTER
[0:0] -A SY-PREFILTER -i lo -j RETURN
[3:180] -A SY-PREFILTER -m set --match-set sy-pf-1 src -m comment --comment "prefilter/blocklist" -j DROP
COMMIT
*filter
:FORWARD ACCEPT [0:0]
:SY-FORWARD - [0:0]
:SY-TO-WL - [0:0]
:SY-TW-0123456789ab - [0:0]
:SY-TWG-0123456789ab - [0:0]
[9:540] -A FORWARD -m comment --comment switchyard -j SY-FORWARD
[9:540] -A SY-TO-WL -o sy123 -m comment --comment "shop/db" -g SY-TW-0123456789ab
[1:60] -A SY-TW-0123456789ab -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
[2:120] -A SY-TW-0123456789ab -p tcp -m multiport --dports 1,2 -m comment --comment "np:shop/a/ingress/0" -g SY-ALLOW
[1:60] -A SY-TW-0123456789ab -p tcp -m tcp --dport 9 -m comment --comment "np:shop/a/ingress/0" -g SY-ALLOW
[4:240] -A SY-TW-0123456789ab -m comment --comment "default-deny" -j DROP
[5:300] -A SY-TWG-0123456789ab -m comment --comment gp:log/ingress/0 -j NFLOG --nflog-prefix "gp:log/ingress/0" --nflog-group 1
COMMIT
`;
    const tables = parseSave(saved, 4);
    expect(tables.map((t) => t.table)).toEqual(['raw', 'filter']);
    expect(tables[1]?.jumps).toEqual([
      { builtin: 'FORWARD', rule: '-m comment --comment switchyard -j SY-FORWARD', target: 'SY-FORWARD' },
    ]);
    expect(countersFromSaved(tables)).toEqual([
      { rule: 'prefilter/blocklist', packets: 3, bytes: 180 },
      { rule: 'gp:log/ingress/0', endpoint: 'shop/db', direction: 'ingress', packets: 5, bytes: 300 },
      { rule: 'np:shop/a/ingress/0', endpoint: 'shop/db', direction: 'ingress', packets: 3, bytes: 180 },
      { rule: 'shop/db/ingress/default', endpoint: 'shop/db', direction: 'ingress', packets: 4, bytes: 240 },
    ]);
    expect(commentOf('-m comment --comment "a b" -j X')).toBe('a b');
  });

  it('prints exactly the scripts a first apply runs, in order, for compile', () => {
    const text = iptablesBackend.render(irOf([DENY_DB]), 'node-a').text;
    const headers = text.split('\n').filter((l) => /^# (ipset|ip6?tables)/.test(l));
    expect(headers).toEqual([
      '# ipset restore  (build each set under a temporary name, swap it in, drop the old members)',
      '# iptables-nft-restore --noflush -w 10',
      '# ip6tables-nft-restore --noflush -w 10',
    ]);
  });
});

describe('iptables apply errors', () => {
  it('points at the rule iptables-nft blames on COMMIT', () => {
    const script = ['*filter', ':SY-A - [0:0]', '-A SY-A -j ACCEPT', '-A SY-A -j SY-NOPE', 'COMMIT', ''].join(
      '\n',
    );
    const stderr =
      "iptables-restore v1.8.9 (nf_tables): Chain 'SY-NOPE' does not exist\nError occurred at line: 5\n";
    expect(culpritLine(script, 5, stderr)).toBe(4);
    expect(culpritLine(script, 3, stderr)).toBe(3);
    expect(culpritLine(script, 5, 'other failure')).toBe(5);
  });
});
