/**
 * Per-packet cost of policy evaluation with 10, 100 and 1000 rules on one endpoint, every rule
 * looked at: each is "TCP port 80 from set S" and the packet is a TCP SYN to port 80 from an
 * address in no set, so it walks the whole list into the default deny.
 *
 * Measured the same way for all three backends: each installs the policy through Backend.apply
 * in a one-node topology, a sender namespace floods the node's fabric veth with that SYN (AF_PACKET,
 * 60-byte frames), the node forwards it toward the pod and the policy drops it (iptables FORWARD
 * chain, nftables forward hook, eBPF tcx egress on the pod's host veth). ns/packet = the sending
 * thread's on-CPU time over a window / drops on the default-deny rule's own counter: one core
 * doing the whole path (on a veth the receive side runs in softirq on the sender's thread). The
 * eBPF program is also timed alone under PROG_TEST_RUN (the program only, no path).
 */
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { Program } from '../../bpf/index.js';
import type { Backend, BackendName, NodeTarget } from '../../dataplane/backend.js';
import { SKB, TCX } from '../../dataplane/ebpf/layout.js';
import { programMaps, type NodeMaps } from '../../dataplane/ebpf/maps.js';
import { allocate, nodeView } from '../../dataplane/ebpf/node.js';
import { policyProgram } from '../../dataplane/ebpf/program.js';
import { addSetMembers, planSetSync } from '../../dataplane/ebpf/sync.js';
import type { IR, IpSet, PolicyRef, Rule, RuleSet } from '../../ir/types.js';
import { summarize, upperMedian } from '../stats.js';
import type { BenchRow, BenchScenarioResult } from '../results.js';
import type { BenchContext, BenchScenario } from '../types.js';
import { buildFrame, intToIpv4, MIN_FRAME } from './support/frames.js';
import { IPPROTO_TCP } from '../../util/protocols.js';
import { NODE_ADDRESS, NODE_MAC, SENDER_MAC, type BenchPod } from './support/topology.js';
import { measuredBackends, withNodeProgram } from './support/test-run.js';
import { BENCH_NODE, floodInTurns, floodSetups, tearDownAll } from './support/turns.js';

export interface PolicyOptions {
  /** Rules per endpoint (the advisor reads `rules`). */
  rules: readonly number[];
  windowMs: number;
  repetitions: number;
  testRunRepeat: number;
  backends?: readonly BackendName[];
  /** Also measure a policy of no rules (default deny only): the path's fixed cost, for the notes. */
  baseline: boolean;
}

export function policyOptions(quick: boolean): PolicyOptions {
  return quick
    ? { rules: [10, 100, 1000], windowMs: 300, repetitions: 5, testRunRepeat: 10_000, baseline: true }
    : { rules: [10, 100, 1000], windowMs: 1000, repetitions: 9, testRunRepeat: 50_000, baseline: true };
}

const NODE = BENCH_NODE;
const ENDPOINT = 'bench/server';
const SOURCE = '198.18.100.1';
const POD: BenchPod = {
  role: 'pod',
  address: '198.18.0.2',
  hostInterface: 'syb0000000001',
  mac: '02:00:5e:12:00:02',
};
const SETS = 50;
const ORDER: readonly BackendName[] = ['ebpf', 'iptables', 'nftables'];
const POLICY: PolicyRef = { kind: 'NetworkPolicy', namespace: 'bench', name: 'many-rules' };

/** 50 sets of one /30 each in 198.18.1.0/24: none holds the flood's source. */
function benchSets(): IpSet[] {
  return Array.from({ length: SETS }, (_, i) => ({
    id: `sy-bpol-${String(i).padStart(3, '0')}`,
    description: `bench peers ${i}`,
    cidrs: [`${intToIpv4(0xc612_0100 + i * 4)}/30`],
  }));
}

/** One endpoint whose ingress has `rules` TCP/80 rules from sets that never hold the sender. */
export function policyIR(rules: number): IR {
  const sets = benchSets();
  const kubernetesRules: Rule[] = Array.from({ length: rules }, (_, j) => ({
    id: `np:bench/many-rules/ingress/${j}`,
    policy: POLICY,
    ruleIndex: j,
    action: 'allow',
    protocol: 'TCP',
    ports: [{ first: 80, last: 80 }],
    peerSet: (sets[j % SETS] as IpSet).id,
  }));
  const ruleSets: RuleSet[] = [
    {
      endpoint: ENDPOINT,
      direction: 'egress',
      globalRules: [],
      kubernetesRules: [],
      kubernetesDefault: 'allow',
      globalPolicies: [],
      kubernetesPolicies: [],
    },
    {
      endpoint: ENDPOINT,
      direction: 'ingress',
      globalRules: [],
      kubernetesRules,
      kubernetesDefault: 'deny',
      globalPolicies: [],
      kubernetesPolicies: [POLICY],
    },
  ];
  return {
    version: 1,
    nodes: [{ name: NODE, address: NODE_ADDRESS }],
    endpoints: [
      {
        id: ENDPOINT,
        namespace: 'bench',
        name: 'server',
        node: NODE,
        addresses: [POD.address],
        labels: { app: 'server' },
        namespaceLabels: {},
        ports: [],
        hostInterface: POD.hostInterface,
      },
    ],
    ipSets: sets,
    ipPortSets: [],
    ruleSets,
    services: [],
    prefilters: [],
  };
}

/** TCP SYNs to the pod's port 80 from one source, 1024 source ports (distinct conntrack tuples). */
function synFrames(): Buffer[] {
  return Array.from({ length: 1024 }, (_, i) =>
    buildFrame({
      srcMac: SENDER_MAC,
      dstMac: NODE_MAC,
      src: SOURCE,
      dst: POD.address,
      protocol: IPPROTO_TCP,
      sport: 20_000 + i,
      dport: 80,
    }),
  );
}

async function defaultDrops(backend: Backend, target: NodeTarget): Promise<number> {
  return (await backend.counters(target))
    .filter((c) => c.rule === `${ENDPOINT}/ingress/default`)
    .reduce((sum, c) => sum + c.packets, 0);
}

interface TrafficResult {
  /** ns/packet samples per rule count. */
  samples: Map<number, number[]>;
  /** Frames sent that the default-deny counter did not see, per rule count. */
  uncounted: Map<number, number>;
  /** Wall-clock ns/packet, for the notes: how much waiting for a CPU inflated it. */
  wall: number[];
}

async function measureTraffic(
  names: readonly BackendName[],
  ruleCounts: readonly number[],
  opts: PolicyOptions,
  ctx: BenchContext,
): Promise<Map<BackendName, TrafficResult>> {
  const out = new Map<BackendName, TrafficResult>(
    names.map((n) => [n, { samples: new Map(), uncounted: new Map(), wall: [] }]),
  );
  const setups = await floodSetups('po', names, [POD], synFrames());
  try {
    for (const rules of ruleCounts) {
      for (const s of setups) await s.backend.apply(s.target, policyIR(rules));
      await floodInTurns(
        setups,
        opts,
        (s) => defaultDrops(s.backend, s.target),
        (s, w, rep) => {
          const r = out.get(s.name) as TrafficResult;
          r.samples.set(rules, [...(r.samples.get(rules) ?? []), (w.cpuMs * 1e6) / w.drops]);
          r.uncounted.set(rules, (r.uncounted.get(rules) ?? 0) + Math.max(0, w.sent - w.drops));
          if (rules === Math.max(...ruleCounts)) r.wall.push((w.wallMs * 1e6) / w.drops);
          if (rules > 0) ctx.progress.tick(`${s.name} ${rules} rules ${rep + 1}/${opts.repetitions}`);
        },
      );
    }
  } finally {
    await tearDownAll(setups);
  }
  return out;
}

/** The eBPF backend's generated ingress program for the endpoint, alone under PROG_TEST_RUN. */
function measureTestRun(rules: number, opts: PolicyOptions, ctx: BenchContext): number[] {
  const view = nodeView(policyIR(rules), NODE);
  const alloc = allocate(view);
  const load = (maps: NodeMaps): Program => {
    addSetMembers(maps, planSetSync(maps, view, alloc));
    const rs = view.ruleSets.find((r) => r.direction === 'ingress');
    if (!rs) throw new Error('no ingress rule set');
    const generated = policyProgram(rs, alloc);
    return Program.load({
      name: generated.name,
      type: 'sched_cls',
      expectedAttachType: 'tcx_egress',
      instructions: generated.program,
      maps: programMaps(maps),
    });
  };
  const sizes = { counterSlots: Math.max(64, rules + 16), conntrackCapacity: 1024 };
  return withNodeProgram(sizes, load, (program) => {
    // ingress_ifindex ≠ 0: a forwarded packet, judged by policy (0 would be the node's own).
    const context = Buffer.alloc(SKB.testContextSize);
    context.writeUInt32LE(1, SKB.ingressIfindex);
    const data = synFrames()[0] as Buffer;
    const samples: number[] = [];
    for (let rep = 0; rep < opts.repetitions; rep++) {
      const r = program.testRun({ data, repeat: opts.testRunRepeat, context, contextOutSize: 0 });
      if (r.retval !== TCX.SHOT) throw new Error(`policy program returned ${r.retval}, expected a drop`);
      samples.push(r.durationNs);
      ctx.progress.tick(`ebpf test-run ${rules} rules`);
    }
    return samples;
  });
}

export async function runPolicy(ctx: BenchContext, opts: PolicyOptions): Promise<BenchScenarioResult> {
  const names = measuredBackends(ORDER, opts.backends);
  const counts = opts.baseline ? [0, ...opts.rules] : [...opts.rules];
  ctx.progress.total(
    (names.length + (names.includes('ebpf') ? 1 : 0)) * opts.rules.length * opts.repetitions,
  );
  const started = performance.now();
  const traffic = await measureTraffic(names, counts, opts, ctx);
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  // Traffic rows first: the advisor compares each backend's first row at a rule count.
  for (const rules of opts.rules) {
    for (const [name, t] of traffic) {
      rows.push(summarize(name, { rules, method: 'traffic' }, t.samples.get(rules) ?? []));
    }
  }
  if (names.includes('ebpf')) {
    for (const rules of opts.rules)
      rows.push(summarize('ebpf', { rules, method: 'test-run' }, measureTestRun(rules, opts, ctx)));
  }
  notes.push(
    `traffic: ${MIN_FRAME}-byte TCP SYNs to the pod's port 80 from a source in none of the rules' sets, AF_PACKET sendmmsg into the node's fabric veth, forwarded by the node and dropped by the endpoint's default deny after every rule was looked at; ns/packet = on-CPU time of the sending thread (+ ksoftirqd) over a ${opts.windowMs} ms window / drops on the default-deny counter; backends take turns window by window, each in its own namespaces. On a veth the whole receive/forward path runs in softirq on the sending thread, so the rows include a fixed path cost the same for every backend plus each backend's own fixed cost (netfilter: conntrack and the hook chains; eBPF: parse and conntrack map lookups)`,
    "hooks: iptables FORWARD → SY-TO-WL → per-endpoint chain (-p tcp --dport 80 -m set per rule); nftables forward hook → oifname vmap → per-endpoint chain; eBPF the endpoint's ingress program on tcx egress of the host veth",
    `ebpf test-run: the same generated program alone under PROG_TEST_RUN (kernel-timed average over ${opts.testRunRepeat} runs per sample), without the path (the kind of figure docs/ebpf.md quotes, there with a one-prefix set; here the set trie holds ${SETS} prefixes); not comparable with the traffic rows`,
  );
  const top = Math.max(...opts.rules);
  if (opts.baseline) {
    for (const [name, t] of traffic) {
      const base = upperMedian(t.samples.get(0) ?? []);
      const perRule = (upperMedian(t.samples.get(top) ?? []) - base) / top;
      notes.push(
        `${name}: the same path with a default-deny policy of no rules costs ${base.toFixed(0)} ns/packet; from 0 to ${top} rules ≈ ${perRule.toFixed(1)} ns per rule`,
      );
    }
  }
  notes.push(
    `wall clock instead of on-CPU time at ${top} rules (machine load ${loadavg()[0]?.toFixed(1)} at the end): ${[
      ...traffic,
    ]
      .map(([name, t]) => `${name} ${upperMedian(t.wall).toFixed(0)} ns/packet`)
      .join(', ')}`,
  );
  for (const [name, t] of traffic) {
    const lost = [...t.uncounted.entries()].filter(([, n]) => n > 0);
    if (lost.length > 0)
      notes.push(
        `${name}: frames sent but not on the default-deny counter: ${lost.map(([r, n]) => `${n} at ${r} rules`).join(', ')}`,
      );
  }
  notes.push(`measured in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  return { name: 'policy', unit: 'ns/packet', better: 'lower', rows, notes };
}

export const scenario: BenchScenario = {
  name: 'policy',
  description: 'per-packet cost of policy evaluation with 10/100/1000 rules per endpoint on every backend',
  run: (ctx) => runPolicy(ctx, policyOptions(ctx.quick)),
};
