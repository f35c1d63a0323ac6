/**
 * Per-packet cost of policy evaluation with 10, 100, 1000 and 10000 rules on one endpoint, in
 * both policy modes: the rule walk, and the decision table (one lookup, whatever the rule count).
 * The rules are what support/policy-ir.ts makes (peers with excepts, varied ports, a Deny tier);
 * the probe SYN comes from a rule peer on a port no rule names, so the walk looks at every rule.
 *
 * Measured the same way for all three backends: each installs the policy through Backend.apply
 * in a one-node topology, a sender namespace floods the node's fabric veth with that SYN (AF_PACKET,
 * 60-byte frames), the node forwards it toward the pod and the policy drops it (iptables FORWARD
 * chain, nftables forward hook, eBPF tcx egress on the pod's host veth). ns/packet = the sending
 * thread's on-CPU time over a window / drops on the default-deny rule's own counter: one core
 * doing the whole path (on a veth the receive side runs in softirq on the sender's thread). The
 * eBPF program is also timed alone under PROG_TEST_RUN (the program only, no path). The notes
 * give each table's size, every apply time and the apply time of a one-rule change.
 *
 * Both families in one run, same sizes and method: IPv4 rows first (the advisor reads each
 * backend's first row), then the IPv6 policy (support/policy-ir.ts: the peers' IPv6 twins) with
 * SYNs over IPv6 to the pod's IPv6 address; every row says its `family`.
 */
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Backend, BackendName, NodeTarget } from '../../dataplane/backend.js';
import { TCX } from '../../dataplane/ebpf/layout.js';
import { OfflineNode, skbContext } from '../../dataplane/ebpf/offline-node.js';
import { measuredBackends } from './support/test-run.js';
import { MAX_TABLE_ENTRIES, POLICY_MODES, type PolicyMode } from '../../ir/decision-table.js';
import type { IR } from '../../ir/types.js';
import { errorMessage } from '../../util/errors.js';
import { summarize, upperMedian } from '../stats.js';
import type { BenchRow, BenchScenarioResult } from '../results.js';
import type { BenchContext, BenchScenario } from '../types.js';
import { buildFrame } from './support/frames.js';
import { IPPROTO_TCP } from '../../util/protocols.js';
import {
  describeTable,
  policyIR,
  POLICY_ENDPOINT,
  POLICY_POD,
  POLICY_PORT,
  POLICY_SOURCE,
  POLICY_SOURCE_V6,
  withOneRuleChanged,
  type Family,
} from './support/policy-ir.js';
import { NODE_MAC, SENDER_MAC } from './support/topology.js';
import { BENCH_NODE, floodInTurns, floodSetups, tearDownAll, type FloodSetup } from './support/turns.js';

export interface PolicyOptions {
  /** Rules per endpoint (the advisor reads `rules`). */
  rules: readonly number[];
  /** Both by default: decision tables next to the rule walk. */
  modes?: readonly PolicyMode[];
  windowMs: number;
  repetitions: number;
  testRunRepeat: number;
  backends?: readonly BackendName[];
  /** Also measure a policy of no rules (default deny only): the path's fixed cost, for the notes. */
  baseline: boolean;
  /** Address families measured (default both), each with the same rule counts and modes. */
  families?: readonly Family[];
}

const FAMILIES: readonly Family[] = [4, 6];

export function policyOptions(quick: boolean): PolicyOptions {
  return quick
    ? { rules: [10, 100, 1000, 10000], windowMs: 300, repetitions: 5, testRunRepeat: 10_000, baseline: true }
    : {
        rules: [10, 100, 1000, 10000],
        windowMs: 1000,
        repetitions: 9,
        testRunRepeat: 50_000,
        baseline: true,
      };
}

const NODE = BENCH_NODE;
const ORDER: readonly BackendName[] = ['ebpf', 'iptables', 'nftables'];

/** TCP SYNs to the probed port from one source, 1024 source ports (distinct conntrack tuples). */
function synFrames(family: Family): Buffer[] {
  return Array.from({ length: 1024 }, (_, i) =>
    buildFrame({
      srcMac: SENDER_MAC,
      dstMac: NODE_MAC,
      src: family === 6 ? POLICY_SOURCE_V6 : POLICY_SOURCE,
      dst: family === 6 ? (POLICY_POD.addressV6 as string) : POLICY_POD.address,
      protocol: IPPROTO_TCP,
      sport: 20_000 + i,
      dport: POLICY_PORT,
    }),
  );
}

async function defaultDrops(backend: Backend, target: NodeTarget): Promise<number> {
  return (await backend.counters(target))
    .filter((c) => c.rule === `${POLICY_ENDPOINT}/ingress/default`)
    .reduce((sum, c) => sum + c.packets, 0);
}

/** `${mode}:${rules}` */
type Point = string;
const point = (mode: PolicyMode, rules: number): Point => `${mode}:${rules}`;

interface TrafficResult {
  /** ns/packet samples per mode and rule count. */
  samples: Map<Point, number[]>;
  /** Frames sent that the default-deny counter did not see. */
  uncounted: Map<Point, number>;
  /** Wall-clock ns/packet at the largest rule count in walk mode, for the notes. */
  wall: number[];
  /** Apply times: the whole policy, and a one-rule change on top of it (ms). */
  applyMs: Map<Point, number>;
  changeMs: Map<Point, number>;
  /** Policies the backend refused (the reason), by point. */
  refused: Map<Point, string>;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/**
 * Installs the policy of `rules` rules on every setup, times a one-rule change on top of it at the
 * larger counts, and leaves the policy itself in force. Returns the setups that took it.
 */
async function installPolicy(
  setups: readonly FloodSetup[],
  out: Map<BackendName, TrafficResult>,
  mode: PolicyMode,
  rules: number,
  previous: Map<FloodSetup, IR | undefined>,
  family: Family,
): Promise<FloodSetup[]> {
  const ir = policyIR(rules, mode, family);
  const took: FloodSetup[] = [];
  for (const s of setups) {
    const r = out.get(s.name) as TrafficResult;
    try {
      r.applyMs.set(point(mode, rules), await timed(() => s.backend.apply(s.target, ir, previous.get(s))));
      previous.set(s, ir);
      if (rules >= 1000) {
        const changed = withOneRuleChanged(rules, mode, family);
        r.changeMs.set(point(mode, rules), await timed(() => s.backend.apply(s.target, changed, ir)));
        await s.backend.apply(s.target, ir, changed);
      }
      took.push(s);
    } catch (e) {
      r.refused.set(point(mode, rules), errorMessage(e).split('\n')[0] ?? '');
      // Whatever is in force is not this policy: the next apply starts from a clean slate.
      await s.backend.remove(s.target);
      previous.set(s, undefined);
    }
  }
  return took;
}

async function measureTraffic(
  names: readonly BackendName[],
  ruleCounts: readonly number[],
  modes: readonly PolicyMode[],
  opts: PolicyOptions,
  ctx: BenchContext,
  family: Family,
): Promise<Map<BackendName, TrafficResult>> {
  const out = new Map<BackendName, TrafficResult>(
    names.map((n) => [
      n,
      {
        samples: new Map(),
        uncounted: new Map(),
        wall: [],
        applyMs: new Map(),
        changeMs: new Map(),
        refused: new Map(),
      },
    ]),
  );
  const setups = await floodSetups(family === 6 ? 'po6' : 'po', names, [POLICY_POD], synFrames(family));
  const previous = new Map<FloodSetup, IR | undefined>();
  const top = Math.max(...ruleCounts);
  try {
    for (const mode of modes)
      for (const rules of ruleCounts) {
        const measured = await installPolicy(setups, out, mode, rules, previous, family);
        const at = point(mode, rules);
        await floodInTurns(
          measured,
          opts,
          (s) => defaultDrops(s.backend, s.target),
          (s, w, rep) => {
            const r = out.get(s.name) as TrafficResult;
            r.samples.set(at, [...(r.samples.get(at) ?? []), (w.cpuMs * 1e6) / w.drops]);
            r.uncounted.set(at, (r.uncounted.get(at) ?? 0) + Math.max(0, w.sent - w.drops));
            if (rules === top && mode === 'walk') r.wall.push((w.wallMs * 1e6) / w.drops);
            if (rules > 0)
              ctx.progress.tick(
                `${s.name} IPv${family} ${mode} ${rules} rules ${rep + 1}/${opts.repetitions}`,
              );
          },
        );
        if (rules > 0)
          for (let i = 0; i < (setups.length - measured.length) * opts.repetitions; i++)
            ctx.progress.tick(`${mode} ${rules} rules: refused`);
      }
  } finally {
    await tearDownAll(setups);
  }
  return out;
}

/** The eBPF backend's ingress program for the endpoint alone under PROG_TEST_RUN, maps filled as apply fills them. */
function measureTestRun(
  rules: number,
  mode: PolicyMode,
  opts: PolicyOptions,
  ctx: BenchContext,
  family: Family,
): number[] {
  const sizes = { counterSlots: Math.max(64, rules + 16), conntrackCapacity: 1024 };
  const node = new OfflineNode(policyIR(rules, mode, family), NODE, sizes);
  try {
    const program = node.program(POLICY_ENDPOINT, 'ingress');
    const data = synFrames(family)[0] as Buffer;
    const samples: number[] = [];
    for (let rep = 0; rep < opts.repetitions; rep++) {
      const r = program.testRun({
        data,
        repeat: opts.testRunRepeat,
        context: skbContext(),
        contextOutSize: 0,
      });
      if (r.retval !== TCX.SHOT) throw new Error(`policy program returned ${r.retval}, expected a drop`);
      samples.push(r.durationNs);
      ctx.progress.tick(`ebpf test-run IPv${family} ${mode} ${rules} rules`);
    }
    return samples;
  } finally {
    node.close();
  }
}

const HOOKS_NOTE =
  "hooks: iptables FORWARD → SY-TO-WL → per-endpoint chain; nftables forward hook → oifname vmap → per-endpoint chain; eBPF the endpoint's ingress program on tcx egress of the host veth. Walk: one rule after another. Table: the backend's decision-table lookup (docs/ebpf.md, docs/nftables.md, docs/iptables.md)";

function trafficNote(opts: PolicyOptions, families: readonly Family[]): string {
  const frames = families
    .map(
      (f) =>
        `IPv${f} ${(synFrames(f)[0] as Buffer).length}-byte from ${f === 6 ? POLICY_SOURCE_V6 : POLICY_SOURCE}`,
    )
    .join(', ');
  return `traffic: TCP SYNs (${frames}) to the pod's port ${POLICY_PORT}, each source inside the first rule peer's ipBlock, a port no rule names (rules: ipBlocks with an except, varied TCP/UDP ports and ranges, every tenth a Deny in a global tier ahead of the NetworkPolicy): the walk looks at every rule before the default denies; AF_PACKET sendmmsg into the node's fabric veth; ns/packet = on-CPU time of the sending thread (+ ksoftirqd) over a ${opts.windowMs} ms window / drops on the default-deny counter; backends take turns window by window, each in its own namespaces. The rows include a fixed path cost the same for every backend plus each backend's own fixed cost (netfilter: conntrack and the hook chains; eBPF: parse and conntrack map lookups)`;
}

/** Per backend: the no-rule baseline, per-rule slope, refusals, apply times and lost frames. */
function backendNotes(
  traffic: Map<BackendName, TrafficResult>,
  opts: PolicyOptions,
  modes: readonly PolicyMode[],
  family: Family,
): string[] {
  const notes: string[] = [];
  const top = Math.max(...opts.rules);
  for (const [backend, t] of traffic) {
    const name = `${backend} IPv${family}`;
    for (const mode of modes) {
      const base = upperMedian(t.samples.get(point(mode, 0)) ?? []);
      const atTop = t.samples.get(point(mode, top));
      if (opts.baseline && atTop)
        notes.push(
          `${name} ${mode}: a default-deny policy of no rules costs ${base.toFixed(0)} ns/packet; from 0 to ${top} rules ≈ ${((upperMedian(atTop) - base) / top).toFixed(1)} ns per rule`,
        );
      const applies = opts.rules
        .filter((r) => t.applyMs.has(point(mode, r)))
        .map((r) => {
          const change = t.changeMs.get(point(mode, r));
          return `${r} rules ${(t.applyMs.get(point(mode, r)) ?? 0).toFixed(0)} ms${change === undefined ? '' : ` (one-rule change ${change.toFixed(0)} ms)`}`;
        });
      if (applies.length > 0) notes.push(`${name} ${mode} apply: ${applies.join(', ')}`);
    }
    for (const [at, why] of t.refused)
      notes.push(`${name} refused ${at.replace(':', ' mode, ')} rules: ${why}`);
    const lost = [...t.uncounted.entries()].filter(([, n]) => n > 0);
    if (lost.length > 0)
      notes.push(
        `${name}: frames sent but not on the default-deny counter: ${lost.map(([at, n]) => `${n} at ${at}`).join(', ')}`,
      );
  }
  return notes;
}

export async function runPolicy(ctx: BenchContext, opts: PolicyOptions): Promise<BenchScenarioResult> {
  const names = measuredBackends(ORDER, opts.backends);
  const modes = opts.modes ?? POLICY_MODES;
  const families = opts.families ?? FAMILIES;
  const counts = opts.baseline ? [0, ...opts.rules] : [...opts.rules];
  const testRuns = names.includes('ebpf') ? opts.rules.length * modes.length : 0;
  ctx.progress.total(
    families.length * (names.length * modes.length * opts.rules.length + testRuns) * opts.repetitions,
  );
  const started = performance.now();
  const traffic = new Map<Family, Map<BackendName, TrafficResult>>();
  for (const family of families)
    traffic.set(family, await measureTraffic(names, counts, modes, opts, ctx, family));
  const rows: BenchRow[] = [];
  // Traffic rows first, IPv4 then IPv6, table mode first: the advisor compares each backend's
  // first matching row.
  for (const [family, byBackend] of traffic)
    for (const mode of modes)
      for (const rules of opts.rules)
        for (const [name, t] of byBackend) {
          const samples = t.samples.get(point(mode, rules));
          if (samples) rows.push(summarize(name, { rules, mode, method: 'traffic', family }, samples));
        }
  const refusedTestRuns: string[] = [];
  if (testRuns > 0)
    for (const family of families)
      for (const mode of modes)
        for (const rules of opts.rules)
          try {
            const samples = measureTestRun(rules, mode, opts, ctx, family);
            rows.push(summarize('ebpf', { rules, mode, method: 'test-run', family }, samples));
          } catch (e) {
            refusedTestRuns.push(
              `IPv${family} ${mode} mode, ${rules} rules: ${errorMessage(e).split('\n')[0] ?? ''}`,
            );
          }
  const notes = [
    trafficNote(opts, families),
    HOOKS_NOTE,
    `tables (ingress, as calc builds them; bound ${MAX_TABLE_ENTRIES} entries): ${opts.rules.map((r) => `${r} rules ${describeTable(policyIR(r, 'table'))}`).join('; ')}`,
    ...[...traffic].flatMap(([family, t]) => backendNotes(t, opts, modes, family)),
  ];
  for (const why of refusedTestRuns) notes.push(`ebpf test-run refused at ${why}`);
  if (testRuns > 0)
    notes.push(
      `ebpf test-run: the endpoint's ingress program alone under PROG_TEST_RUN (kernel-timed average over ${opts.testRunRepeat} runs per sample), without the path; not comparable with the traffic rows`,
    );
  const top = Math.max(...opts.rules);
  notes.push(
    `wall clock instead of on-CPU time at ${top} rules in walk mode (machine load ${loadavg()[0]?.toFixed(1)} at the end): ${[
      ...traffic,
    ]
      .flatMap(([family, t]) =>
        [...t].map(([name, r]) => `${name} IPv${family} ${upperMedian(r.wall).toFixed(0)} ns/packet`),
      )
      .join(', ')}`,
  );
  notes.push(`measured in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  return { name: 'policy', unit: 'ns/packet', better: 'lower', rows, notes };
}

export const scenario: BenchScenario = {
  name: 'policy',
  description:
    'per-packet cost of policy evaluation with 10/100/1000/10000 rules per endpoint on every backend, decision tables and rule walk',
  run: (ctx) => runPolicy(ctx, policyOptions(ctx.quick)),
};
