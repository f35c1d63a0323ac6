/**
 * How many packets per second one core drops from deny-listed sources with a 100k-CIDR
 * prefilter: the eBPF backend's XDP program against the netfilter backends' raw PREROUTING rule
 * (ipset hash:net / nft interval set). Every backend installs its real prefilter through
 * Backend.apply into a node namespace; a sender namespace floods that node's fabric veth with
 * minimum-size UDP frames from listed sources; the drops the backend's own counter reports over
 * a window, divided by the sending thread's on-CPU time (on a veth the receive side runs in
 * softirq on that thread), give the rate. The XDP program is also timed alone with PROG_TEST_RUN.
 * Both families in one run: IPv4 rows first (the advisor reads each backend's first row), then the
 * same sizes over IPv6 (a list of the same prefix-length mix in fd00:5957::/32, IPv6 frames);
 * every row says its `family`.
 */
import { performance } from 'node:perf_hooks';
import { Program, XdpAction } from '../../bpf/index.js';
import type { Backend, BackendName, NodeTarget } from '../../dataplane/backend.js';
import { programMaps, type NodeMaps } from '../../dataplane/ebpf/maps.js';
import { isIpv6Cidr, prefilterProgram, PREFILTER_PROGRAM_NAME } from '../../dataplane/ebpf/prefilter.js';
import type { IR } from '../../ir/types.js';
import { summarize, upperMedian } from '../stats.js';
import type { BenchRow, BenchScenarioResult } from '../results.js';
import type { BenchContext, BenchScenario } from '../types.js';
import { denyList, denyList6, firstAddress } from './support/cidrs.js';
import { buildFrame } from './support/frames.js';
import { IPPROTO_UDP } from '../../util/protocols.js';
import { NODE_ADDRESS, NODE_MAC, SENDER_MAC } from './support/topology.js';
import { measuredBackends, withNodeProgram } from './support/test-run.js';
import { BENCH_NODE, floodInTurns, floodSetups, tearDownAll } from './support/turns.js';

export interface PrefilterOptions {
  /** Deny-listed CIDRs (the advisor reads this param). */
  cidrs: number;
  /** Flood window per repetition. */
  windowMs: number;
  repetitions: number;
  /** PROG_TEST_RUN repeat per repetition. */
  testRunRepeat: number;
  /** Distinct deny-listed sources the flood cycles through. */
  sources: number;
  backends?: readonly BackendName[];
  /** Address families measured, each with its own list of `cidrs` (default both). */
  families?: readonly Family[];
}

export type Family = 4 | 6;
const FAMILIES: readonly Family[] = [4, 6];
/** Where the flood is addressed: the node's fabric address (IPv6: the raw table drops before routing). */
const NODE_ADDRESS_V6 = 'fd00:5957:ffff::1';

export function prefilterOptions(quick: boolean): PrefilterOptions {
  return quick
    ? { cidrs: 100_000, windowMs: 400, repetitions: 5, testRunRepeat: 200_000, sources: 4096 }
    : { cidrs: 100_000, windowMs: 1000, repetitions: 9, testRunRepeat: 1_000_000, sources: 8192 };
}

const NODE = BENCH_NODE;
const LIST = 'bench-deny';
const SET_ID = 'sy-pf-bench';
const ORDER: readonly BackendName[] = ['ebpf', 'iptables', 'nftables'];

function prefilterIR(cidrs: readonly string[]): IR {
  return {
    version: 1,
    nodes: [{ name: NODE, address: NODE_ADDRESS }],
    endpoints: [],
    ipSets: [{ id: SET_ID, description: 'bench deny list', cidrs: [...cidrs] }],
    ipPortSets: [],
    ruleSets: [],
    services: [],
    prefilters: [{ name: LIST, nodes: [NODE], set: SET_ID }],
  };
}

/** Evenly spread members of the list, as frames from those sources to the node. */
function floodFrames(cidrs: readonly string[], count: number, family: Family): Buffer[] {
  const step = Math.max(1, Math.floor(cidrs.length / count));
  return Array.from({ length: Math.min(count, cidrs.length) }, (_, i) =>
    buildFrame({
      srcMac: SENDER_MAC,
      dstMac: NODE_MAC,
      src: firstAddress(cidrs[i * step] as string),
      dst: family === 6 ? NODE_ADDRESS_V6 : NODE_ADDRESS,
      protocol: IPPROTO_UDP,
      sport: 1024 + (i % 60_000),
      dport: 9,
    }),
  );
}

async function dropped(backend: Backend, target: NodeTarget): Promise<number> {
  const counters = await backend.counters(target);
  return counters.filter((c) => c.rule === `prefilter/${LIST}`).reduce((sum, c) => sum + c.packets, 0);
}

interface TrafficResult {
  samples: number[];
  wall: number[];
  counted: number;
  sent: number;
}

async function measureTraffic(
  names: readonly BackendName[],
  ir: IR,
  frames: readonly Buffer[],
  opts: PrefilterOptions,
  ctx: BenchContext,
  family: Family,
): Promise<{ results: Map<BackendName, TrafficResult>; applyMs: Map<BackendName, number> }> {
  const results = new Map<BackendName, TrafficResult>(
    names.map((n) => [n, { samples: [], wall: [], counted: 0, sent: 0 }]),
  );
  const applyMs = new Map<BackendName, number>();
  const setups = await floodSetups(family === 6 ? 'pf6' : 'pf', names, [], frames);
  try {
    for (const s of setups) {
      const started = performance.now();
      await s.backend.apply(s.target, ir);
      applyMs.set(s.name, performance.now() - started);
    }
    await floodInTurns(
      setups,
      opts,
      (s) => dropped(s.backend, s.target),
      (s, w, rep) => {
        const r = results.get(s.name) as TrafficResult;
        r.samples.push(w.drops / (w.cpuMs / 1000));
        r.wall.push(w.drops / (w.wallMs / 1000));
        r.counted += w.drops;
        r.sent += w.sent;
        ctx.progress.tick(`${s.name} IPv${family} ${rep + 1}/${opts.repetitions}`);
      },
    );
  } finally {
    await tearDownAll(setups);
  }
  return { results, applyMs };
}

/** The backend's own XDP prefilter program alone, against a trie with the same list. */
function measureTestRun(
  cidrs: readonly string[],
  frames: readonly Buffer[],
  opts: PrefilterOptions,
  ctx: BenchContext,
  family: Family,
): BenchRow {
  const load = (maps: NodeMaps): Program => {
    const trie = cidrs.some(isIpv6Cidr) ? maps.pfTrie6 : maps.pfTrie;
    trie.updateBatch(cidrs.map((c) => [c, 0] as const));
    return Program.load({
      name: PREFILTER_PROGRAM_NAME,
      type: 'xdp',
      instructions: prefilterProgram(),
      maps: programMaps(maps),
    });
  };
  return withNodeProgram({ counterSlots: 16, conntrackCapacity: 16 }, load, (program) => {
    // A few different sources per repetition: one repeated key would stay in cache lines a
    // real flood from many sources does not.
    const picks = frames.filter((_, i) => i % Math.max(1, Math.floor(frames.length / 8)) === 0).slice(0, 8);
    const samples: number[] = [];
    for (let rep = 0; rep < opts.repetitions; rep++) {
      let ns = 0;
      for (const data of picks) {
        const r = program.testRun({
          data: Buffer.from(data),
          repeat: Math.ceil(opts.testRunRepeat / picks.length),
        });
        if (r.retval !== XdpAction.DROP)
          throw new Error(`prefilter program returned ${r.retval} for a listed source, not XDP_DROP`);
        ns += r.durationNs / picks.length;
      }
      samples.push(1e9 / Math.max(ns, 0.5));
      ctx.progress.tick(`ebpf test-run IPv${family} ${rep + 1}/${opts.repetitions}`);
    }
    const frame = (picks[0] as Buffer).length;
    return summarize('ebpf', { cidrs: opts.cidrs, method: 'test-run', frame, family }, samples);
  });
}

interface FamilyRun {
  family: Family;
  cidrs: string[];
  frames: Buffer[];
}

export async function runPrefilter(ctx: BenchContext, opts: PrefilterOptions): Promise<BenchScenarioResult> {
  const names = measuredBackends(ORDER, opts.backends);
  const families = opts.families ?? FAMILIES;
  const perFamily = names.length * opts.repetitions + (names.includes('ebpf') ? opts.repetitions : 0);
  ctx.progress.total(families.length * perFamily);
  const runs: FamilyRun[] = families.map((family) => {
    const cidrs = family === 6 ? denyList6(opts.cidrs) : denyList(opts.cidrs);
    return { family, cidrs, frames: floodFrames(cidrs, opts.sources, family) };
  });
  const traffic: BenchRow[] = [];
  const testRuns: BenchRow[] = [];
  const notes: string[] = [];
  for (const run of runs) {
    const ir = prefilterIR(run.cidrs);
    const { results, applyMs } = await measureTraffic(names, ir, run.frames, opts, ctx, run.family);
    const params = {
      cidrs: opts.cidrs,
      method: 'traffic',
      frame: (run.frames[0] as Buffer).length,
      family: run.family,
    };
    for (const [name, r] of results) {
      traffic.push(summarize(name, params, r.samples));
      notes.push(
        `${name} IPv${run.family}: apply of ${opts.cidrs} CIDRs ${((applyMs.get(name) ?? 0) / 1000).toFixed(1)} s; counted ${r.counted} drops of ${r.sent} frames sent; by the wall clock ${upperMedian(r.wall).toFixed(0)} pps`,
      );
    }
    if (names.includes('ebpf')) testRuns.push(measureTestRun(run.cidrs, run.frames, opts, ctx, run.family));
  }
  const frames = runs.map((r) => `IPv${r.family} ${(r.frames[0] as Buffer).length}-byte`).join(', ');
  notes.push(
    `traffic: UDP frames (${frames}) from ${runs[0]?.frames.length ?? 0} listed sources, AF_PACKET sendmmsg (qdisc bypassed) into the node's fabric veth per ${opts.windowMs} ms window, backends taking turns window by window, each in its own namespaces; pps = drops on each backend's own prefilter counter / on-CPU time of the sending thread (+ ksoftirqd). On a veth the receive path runs in softirq on the sending thread, so each figure is one core doing the sender's AF_PACKET transmit (the same for every backend) plus the receive path up to the drop; the wall-clock figures in the notes also count time spent waiting for a CPU`,
    "ebpf traffic = the backend's XDP program in driver mode on the veth (pf_trie for IPv4, pf_trie6 for IPv6); iptables = raw PREROUTING -m set (hash:net; ip6tables and an inet6 set for IPv6); nftables = prerouting at priority raw, ip/ip6 saddr @set (interval). Native XDP on a veth gets an skb the sender already allocated and converts it (copied into a page with XDP headroom when, as with AF_PACKET frames, the skb has too little), so XDP's advantage on a NIC — dropping before any skb exists — does not show here",
    `ebpf test-run = the same XDP program alone under PROG_TEST_RUN (kernel-timed, ${opts.testRunRepeat} runs per sample over 8 sources): an upper bound, with no driver or sender cost — not comparable with the traffic rows`,
    `deny list: ${opts.cidrs} disjoint CIDRs mixing /30, /31 and /32 of 198.18.0.0/15 (IPv4), /126, /127 and /128 of fd00:5957:dead::/48 (IPv6); hash:net probes once per prefix length present. Each family is its own run with its own list; rows carry family 4 or 6`,
  );
  // Traffic rows first, IPv4 before IPv6: the advisor compares each backend's first row.
  return { name: 'prefilter', unit: 'pps', better: 'higher', rows: [...traffic, ...testRuns], notes };
}

export const scenario: BenchScenario = {
  name: 'prefilter',
  description:
    'packets per second one core drops with 100k deny-listed CIDRs: XDP (eBPF backend) vs the raw table (iptables ipset, nftables set)',
  run: (ctx) => runPrefilter(ctx, prefilterOptions(ctx.quick)),
};
