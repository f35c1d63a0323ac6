/**
 * How long the netfilter backends take to install policy at scale and to absorb the most common
 * change, one pod's labels. Synthetic IRs with N rules and N set addresses on one node, applied
 * inside a throwaway namespace (no traffic: only apply times matter here). Every registered
 * netfilter backend is measured in the same run, so the rows compare directly.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Backend, BackendName, NodeTarget } from '../../dataplane/backend.js';
import { availableBackends, loadBackend } from '../../dataplane/registry.js';
import type { Endpoint, IR, IpSet, Rule, RuleSet } from '../../ir/types.js';
import { summarize } from '../stats.js';
import type { BenchRow } from '../results.js';
import type { BenchScenario } from '../types.js';

const NODE = 'bench-node';
const RULES_PER_ENDPOINT = 50;
const ADDRESSES_PER_SET = 100;
const NETFILTER: readonly BackendName[] = ['iptables', 'nftables'];

/** The k-th address of 198.18.0.0/15, skipping every other one so no two set members merge into a shorter prefix. */
function spreadAddress(k: number): string {
  const n = 0xc612_0000 + 2 * k;
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

function setIdOf(i: number): string {
  return `sy-b${i.toString(16).padStart(11, '0')}`;
}

function sortCidrs(addresses: string[]): string[] {
  const key = (a: string): number => a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
  return addresses.sort((a, b) => key(a) - key(b)).map((a) => `${a}/32`);
}

/**
 * N rules over N/50 local endpoints (40 ingress, 10 egress each, default deny) and N addresses
 * in N/100 sets of 100 remote pods. `moved` relabels remote pod 0: it leaves set 0 for set 1, as
 * when a label change moves a pod from one selector's match to another's.
 */
export function syntheticIR(rules: number, moved = false): IR {
  const endpointCount = Math.max(1, Math.round(rules / RULES_PER_ENDPOINT));
  const setCount = Math.max(2, Math.round(rules / ADDRESSES_PER_SET));
  const members: string[][] = Array.from({ length: setCount }, () => []);
  for (let k = 0; k < rules; k++)
    members[Math.floor(k / ADDRESSES_PER_SET) % setCount]?.push(spreadAddress(k));
  if (moved) {
    const a = spreadAddress(0);
    members[0] = (members[0] ?? []).filter((m) => m !== a);
    members[1]?.push(a);
  }
  const ipSets: IpSet[] = members.map((m, i) => ({
    id: setIdOf(i),
    description: `pods app=${i}`,
    cidrs: sortCidrs([...m]),
  }));
  const endpoints: Endpoint[] = [];
  const ruleSets: RuleSet[] = [];
  for (let e = 0; e < endpointCount; e++) {
    const id = `bench/pod-${e}`;
    endpoints.push({
      id,
      namespace: 'bench',
      name: `pod-${e}`,
      node: NODE,
      addresses: [`198.19.${Math.floor(e / 250)}.${(e % 250) + 2}`],
      labels: { app: `local-${e}` },
      namespaceLabels: {},
      ports: [],
      hostInterface: `sy${e.toString(16).padStart(11, '0')}`,
    });
    for (const [direction, count, offset] of [
      ['ingress', 40, 0],
      ['egress', 10, 40],
    ] as const) {
      const policy = { kind: 'NetworkPolicy' as const, namespace: 'bench', name: `policy-${e}` };
      const kubernetesRules: Rule[] = Array.from({ length: count }, (_, j) => ({
        id: `np:bench/policy-${e}/${direction}/${j}`,
        policy,
        ruleIndex: j,
        action: 'allow',
        protocol: j % 5 === 4 ? 'UDP' : 'TCP',
        ports: j % 3 === 0 ? [{ first: 8000 + j, last: 8010 + j }] : [{ first: 1000 + j, last: 1000 + j }],
        peerSet: setIdOf((e * RULES_PER_ENDPOINT + offset + j) % setCount),
      }));
      ruleSets.push({
        endpoint: id,
        direction,
        globalRules: [],
        kubernetesRules,
        kubernetesDefault: 'deny',
        globalPolicies: [],
        kubernetesPolicies: [policy],
      });
    }
  }
  ruleSets.sort((a, b) =>
    a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : a.direction < b.direction ? -1 : 1,
  );
  return {
    version: 1,
    nodes: [{ name: NODE, address: '198.18.255.1' }],
    endpoints,
    ipSets,
    ipPortSets: [],
    ruleSets,
    services: [],
    prefilters: [],
  };
}

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

async function measure(
  backend: Backend,
  target: NodeTarget,
  rules: number,
  repetitions: number,
  tick: (label: string) => void,
): Promise<{ rows: BenchRow[]; changed: number }> {
  const base = syntheticIR(rules);
  const moved = syntheticIR(rules, true);
  const scratch: number[] = [];
  const update: number[] = [];
  let changed = 0;
  for (let i = 0; i < repetitions; i++) {
    await backend.remove(target);
    scratch.push(await timed(() => backend.apply(target, base)));
    tick(`${backend.name} ${rules} scratch`);
  }
  // Alternate the label back and forth: each apply is a real one-label change.
  for (let i = 0; i < repetitions * 2; i++) {
    const [from, to] = i % 2 === 0 ? [base, moved] : [moved, base];
    update.push(
      await timed(async () => {
        changed = (await backend.apply(target, to, from)).changed.length;
      }),
    );
    tick(`${backend.name} ${rules} one label`);
  }
  await backend.remove(target);
  const params = (op: string): BenchRow['params'] => ({ rules, ips: rules, op });
  return {
    rows: [
      summarize(backend.name, params('from scratch'), scratch),
      summarize(backend.name, params('one pod label'), update),
    ],
    changed,
  };
}

export const scenario: BenchScenario = {
  name: 'netfilter-update',
  description:
    'apply time of N rules and N set addresses from scratch, and of one pod label change at that scale',
  async run(ctx) {
    const scales = ctx.quick ? [1_000, 10_000] : [1_000, 10_000, 50_000];
    const repetitions = (rules: number): number =>
      ctx.quick ? (rules <= 1_000 ? 3 : 2) : rules <= 10_000 ? 5 : 3;
    const names = NETFILTER.filter((n) => availableBackends().includes(n));
    const backends = await Promise.all(names.map((n) => loadBackend(n)));
    ctx.progress.total(backends.length * scales.reduce((n, s) => n + 3 * repetitions(s), 0));
    const netns = `sy-bnf-${process.pid}`;
    const target: NodeTarget = { scope: 'bench', node: NODE, netns };
    const rows: BenchRow[] = [];
    const notes: string[] = [
      `synthetic IR per scale N: N/${RULES_PER_ENDPOINT} endpoints with ${RULES_PER_ENDPOINT} rules each (default deny), N addresses in N/${ADDRESSES_PER_SET} sets`,
      'one pod label: one address moves between two sets (apply with the previous IR, so backends may write only the difference)',
    ];
    const missing = NETFILTER.filter((n) => !names.includes(n));
    if (missing.length > 0) notes.push(`not registered, not measured: ${missing.join(', ')}`);
    if (existsSync(`/run/netns/${netns}`)) ip(['netns', 'del', netns]);
    ip(['netns', 'add', netns]);
    try {
      for (const rules of scales) {
        for (const backend of backends) {
          const r = await measure(backend, target, rules, repetitions(rules), (label) =>
            ctx.progress.tick(label),
          );
          rows.push(...r.rows);
          notes.push(`${backend.name} N=${rules}: a one-label update wrote ${r.changed} object(s)`);
        }
      }
    } finally {
      ip(['netns', 'del', netns]);
    }
    return { name: 'netfilter-update', unit: 'ms', better: 'lower', rows, notes };
  },
};
