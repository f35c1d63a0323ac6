/**
 * Service load balancing at scale: new-connection rate and latency from a client pod to N
 * ClusterIP services (1 … 10k) over one backend pod, for eBPF connect-time load balancing and
 * for the netfilter backends' per-packet DNAT, in one throwaway lab whose policy backend is
 * switched between them; and, in the same run, how long each backend takes to load 10k services
 * from scratch and to absorb one endpoint change among them (notes: those are milliseconds).
 *
 * Two clients per point, both in the client pod's namespace and cgroup (so the cgroup sock_addr
 * hooks see their sockets), against nginx in the backend pod (service port 80 → 8080):
 *   wrk (the main rows): native load, `wrk -t1 -H 'Connection: close'`, so each request is a new
 *     connection, to one VIP: the middle one in the order iptables matches them (`middleVip`);
 *     1-second runs after a warm-up run, one conn/s sample each;
 *   node: batches of 200 non-blocking connects to random services made by this process (it joins
 *     the pod's cgroup and its thread the namespace), counted once the handshake completed.
 * nginx answers and closes; the backend pod keeps no TIME_WAIT (see `dnatServerSysctls`) and the
 * node's conntrack is emptied before each point, so no point inherits the previous one's state.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, rmdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Backend, BackendName, NodeTarget } from '../../dataplane/backend.js';
import { serviceCgroup } from '../../dataplane/ebpf/services.js';
import { availableBackends, loadBackend } from '../../dataplane/registry.js';
import type { IR, ServicePortTable } from '../../ir/types.js';
import { converge, labDown, type LabState } from '../../lab/index.js';
import type { Model } from '../../model/index.js';
import { currentCgroup, requireTool } from '../../netns/index.js';
import { median, summarize } from '../stats.js';
import type { BenchRow } from '../results.js';
import type { BenchContext, BenchScenario } from '../types.js';
import { connectBatch } from './support/connect.js';
import { benchModel } from './support/manifests.js';
import {
  clientSysctls,
  dnatServerSysctls,
  flushConntrack,
  perTenThousand,
  runWrk,
  softirqSeconds,
  startNginx,
  wrkErrorCount,
  WRK_CONNECTIONS,
  type PodPlace,
  type WrkReport,
} from './support/native-load.js';
import { errorMessage } from '../../util/errors.js';

const LAB = 'bench-svc';
const BACKENDS: readonly BackendName[] = ['ebpf', 'iptables', 'nftables'];
const BATCH = 200;
const CONNECT_TIMEOUT_MS = 2000;
/** nginx in the backend pod; the pod declares no port, so the lab's probe server leaves it free. */
const TARGET_PORT = 8080;

/** The i-th service address: 198.19.0.0/17 from .1 on. */
export function vip(i: number): string {
  const n = i + 1;
  return `198.19.${n >> 8}.${n & 0xff}`;
}

/**
 * The service (its index) a bench loads among services 0 … N-1 named `s<i>` in namespace b: the
 * middle one in the order of their service-port ids (`b/s<i>:80/TCP`), which is the order
 * iptables' dispatch chain matches them one by one, so it walks half of the chain as random
 * targets would on average (hash lookups do not care).
 */
export function middleService(services: number): number {
  const ids = Array.from({ length: services }, (_, i) => ({ i, id: `b/s${i}:80/TCP` }));
  ids.sort((a, b) => (a.id < b.id ? -1 : 1));
  return ids[Math.floor((services - 1) / 2)]?.i ?? 0;
}

/** The VIP wrk loads at N services: that of `middleService`. */
export function middleVip(services: number): string {
  return vip(middleService(services));
}

function model(services: number): Model {
  const docs = [
    'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n',
    'apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\n  namespace: b\n  labels: { app: client }\nspec:\n  containers: [{ name: c }]\n',
    'apiVersion: v1\nkind: Pod\nmetadata:\n  name: server\n  namespace: b\n  labels: { app: server }\nspec:\n  containers: [{ name: c }]\n',
  ];
  for (let i = 0; i < services; i++)
    docs.push(
      `apiVersion: v1\nkind: Service\nmetadata:\n  name: s${i}\n  namespace: b\nspec:\n  clusterIP: ${vip(i)}\n` +
        `  selector: { app: server }\n  ports: [{ port: 80, targetPort: ${TARGET_PORT}, protocol: TCP }]\n`,
    );
  return benchModel('bench', 'bench-services.yaml', docs);
}

interface BatchResult {
  ok: number;
  failed: number;
  ms: number;
  latencies: number[];
}

/** One batch of connects to random services from the client pod. */
async function batch(client: PodPlace, services: number, home: string): Promise<BatchResult> {
  const targets = Array.from({ length: BATCH }, () => ({
    address: vip(Math.floor(Math.random() * services)),
    port: 80,
  }));
  const { handshakes, ms } = await connectBatch(client, targets, home, CONNECT_TIMEOUT_MS);
  const latencies = handshakes.filter((r): r is number => r !== undefined);
  return { ok: latencies.length, failed: BATCH - latencies.length, ms, latencies };
}

function podOf(state: LabState, id: string): PodPlace & { address: string } {
  const p = state.topology?.pods.find((x) => x.id === id);
  if (!p) throw new Error(`bench lab has no pod ${id}`);
  return { netns: p.netns, cgroup: `${state.cgroupRoot}/${p.slug}`, address: p.address };
}

/** The wrk side of one point: `runs` 1-second runs after a warm-up run, and softirq CPU over them. */
async function wrkPoint(
  client: PodPlace,
  services: number,
  runs: number,
): Promise<{ reports: WrkReport[]; softirq: number }> {
  const opts = {
    target: middleVip(services),
    port: 80,
    connections: WRK_CONNECTIONS,
    seconds: 1,
  };
  const warm = await runWrk(client, opts);
  if (warm.requests === 0) return { reports: [], softirq: 0 };
  const s0 = softirqSeconds();
  const reports: WrkReport[] = [];
  for (let r = 0; r < runs; r++) reports.push(await runWrk(client, opts));
  return { reports, softirq: softirqSeconds() - s0 };
}

/** The node-client side of one point: `rounds` batches (after a probe batch that must connect). */
async function nodePoint(
  client: PodPlace,
  services: number,
  rounds: number,
  home: string,
): Promise<{ rates: number[]; latencies: number[]; failed: number } | undefined> {
  const probe = await batch(client, services, home);
  if (probe.ok === 0) return undefined;
  const rates: number[] = [];
  const latencies: number[] = [];
  let failed = 0;
  for (let r = 0; r < rounds; r++) {
    const b = await batch(client, services, home);
    rates.push((b.ok / b.ms) * 1000);
    latencies.push(...b.latencies);
    failed += b.failed;
  }
  return { rates, latencies, failed };
}

/** Per point: node-client batches and 1-second wrk runs. */
function pointOptions(quick: boolean): { rounds: number; wrkRuns: number } {
  return quick ? { rounds: 5, wrkRuns: 3 } : { rounds: 15, wrkRuns: 8 };
}

export async function connectionRows(
  ctx: BenchContext,
  scales: readonly number[],
  notes: string[],
  names: readonly BackendName[] = BACKENDS.filter((b) => availableBackends().includes(b)),
  lab = LAB,
): Promise<BenchRow[]> {
  for (const tool of ['wrk', 'nginx', 'conntrack']) requireTool(tool);
  const rows: BenchRow[] = [];
  const { rounds, wrkRuns } = pointOptions(ctx.quick);
  const home = currentCgroup();
  await labDown(lab);
  try {
    for (const services of scales) {
      const m = model(services);
      for (const backend of names) {
        const point = `${backend} N=${services}`;
        const applyStart = performance.now();
        let state: LabState;
        try {
          state = (await converge({ name: lab, model: m, files: [], mode: 'up', backend, nodeCount: 1 }))
            .state;
        } catch (e) {
          notes.push(`${point}: lab apply failed: ${errorMessage(e).split('\n')[0]}`);
          ctx.progress.tick(`${backend} ${services}`);
          continue;
        }
        const applyMs = performance.now() - applyStart;
        const client = podOf(state, 'b/client');
        const server = podOf(state, 'b/server');
        for (const node of state.topology?.nodes ?? []) await flushConntrack(node.netns);
        clientSysctls(client.netns);
        dnatServerSysctls(server.netns);
        const nginx = await startNginx(server, lab, { address: server.address, port: TARGET_PORT });
        try {
          const w = await wrkPoint(client, services, wrkRuns);
          const n = await nodePoint(client, services, rounds, home);
          if (w.reports.length === 0 || !n) {
            notes.push(`${point}: no connection to a service succeeded (does ${backend} render services?)`);
            continue;
          }
          const made = w.reports.reduce((sum, r) => sum + r.requests, 0);
          const errors = w.reports.reduce((sum, r) => sum + wrkErrorCount(r) + r.badStatus, 0);
          const ms = (f: (r: WrkReport) => number): string => median(w.reports.map(f)).toFixed(2);
          rows.push(
            summarize(
              backend,
              { services, metric: 'new connections', client: 'wrk' },
              w.reports.map((r) => r.requestsPerSecond),
            ),
          );
          rows.push(summarize(backend, { services, metric: 'new connections', client: 'node' }, n.rates));
          const lat = summarize(backend, { services }, n.latencies);
          notes.push(
            `${point}: wrk latency p50 ${ms((r) => r.latencyMs.p50)} ms, p99 ${ms((r) => r.latencyMs.p99)} ms (median of the runs), ` +
              `softirq ${perTenThousand(w.softirq, made).toFixed(2)} CPU-s per 10k connections, ${errors} errors; ` +
              `node client: connect latency median ${lat.median.toFixed(2)} ms (p10 ${lat.p10.toFixed(2)}, p90 ${lat.p90.toFixed(2)}) ` +
              `with ${BATCH} connects in flight, ${n.failed} failed; lab apply ${Math.round(applyMs)} ms`,
          );
        } finally {
          await nginx.stop();
          ctx.progress.tick(`${backend} ${services}`);
        }
      }
    }
  } finally {
    await labDown(lab);
  }
  return rows;
}

/** N services of 2 backends each over a pool of 500 pod addresses; `changed` swaps one endpoint of service 0. */
export function serviceIR(services: number, changed = false): IR {
  const pod = (k: number): string => `198.18.${(k >> 7) + 1}.${(k & 0x7f) + 2}`;
  const tables: ServicePortTable[] = Array.from({ length: services }, (_, i) => ({
    id: `b/s${i}:80/TCP`,
    service: `b/s${i}`,
    address: vip(i),
    port: 80,
    protocol: 'TCP',
    backends: [0, 1].map((j) => {
      const k = i === 0 && j === 1 && changed ? 500 : (i * 2 + j) % 500;
      return { endpoint: `b/p${k}`, address: pod(k), port: 8080 };
    }),
    affinity: { mode: 'None' },
  }));
  return {
    version: 1,
    nodes: [{ name: 'bench-node', address: '198.18.255.1' }],
    endpoints: [],
    ipSets: [],
    ipPortSets: [],
    ruleSets: [],
    services: tables,
    prefilters: [],
  };
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

export async function syncRows(
  ctx: BenchContext,
  notes: string[],
  names: readonly BackendName[] = BACKENDS.filter((b) => availableBackends().includes(b)),
): Promise<BenchRow[]> {
  // --quick stays at 1k like the connection rows: netfilter backends need minutes for 10k.
  const services = ctx.quick ? 1_000 : 10_000;
  const reps = ctx.quick ? 2 : 3;
  const netns = `sy-bsvc-${process.pid}`;
  const scope = `bench-svc-sync-${process.pid}`;
  const target: NodeTarget = { scope, node: 'bench-node', netns };
  const base = serviceIR(services);
  const moved = serviceIR(services, true);
  const rows: BenchRow[] = [];
  if (existsSync(`/run/netns/${netns}`)) execFileSync('ip', ['netns', 'del', netns]);
  execFileSync('ip', ['netns', 'add', netns]);
  try {
    for (const name of names) {
      let backend: Backend;
      try {
        backend = await loadBackend(name);
      } catch (e) {
        notes.push(`${name}: not loaded: ${errorMessage(e)}`);
        continue;
      }
      const scratch: number[] = [];
      const change: number[] = [];
      try {
        for (let i = 0; i < reps; i++) {
          await backend.remove(target);
          scratch.push(await timed(() => backend.apply(target, base)));
        }
        for (let i = 0; i < reps * 2; i++) {
          const [from, to] = i % 2 === 0 ? [base, moved] : [moved, base];
          change.push(await timed(() => backend.apply(target, to, from)));
        }
        rows.push(summarize(name, { services, op: 'from scratch' }, scratch));
        rows.push(summarize(name, { services, op: 'one endpoint change' }, change));
      } catch (e) {
        notes.push(`${name}: service sync failed: ${errorMessage(e).split('\n')[0]}`);
      } finally {
        await backend.remove(target).catch(() => undefined);
      }
      ctx.progress.tick(`${name} sync`);
    }
  } finally {
    execFileSync('ip', ['netns', 'del', netns]);
    try {
      const cgroup = serviceCgroup(scope);
      if (existsSync(cgroup)) rmdirSync(cgroup);
    } catch {
      // not created (no cgroup2) or busy: harmless, empty
    }
  }
  notes.push(
    `sync: ${services} services × 2 backends applied with Backend.apply to an empty node (no endpoints, no policy); ` +
      'one endpoint change = one backend of one service replaced (applied with the previous IR)',
  );
  return rows;
}

export const scenario: BenchScenario = {
  name: 'services',
  description:
    'new-connection rate (native wrk → nginx, and a Node.js client) through 1, 100, 1k, 10k ClusterIP services (eBPF connect-time LB vs iptables vs nftables DNAT), and service sync time at 10k (1k with --quick)',
  async run(ctx) {
    const scales = ctx.quick ? [1, 100, 1_000] : [1, 100, 1_000, 10_000];
    const names = BACKENDS.filter((b) => availableBackends().includes(b));
    ctx.progress.total(scales.length * names.length + names.length);
    const notes: string[] = [
      `one client pod, one backend pod running nginx, N services (port 80 → ${TARGET_PORT}); node's conntrack emptied before each point; ` +
        `client=wrk: \`wrk -t1 -c${WRK_CONNECTIONS} -H 'Connection: close'\` in the client pod against the middle service by name (iptables matches services in name order), ` +
        `${pointOptions(ctx.quick).wrkRuns} runs of 1 s after a warm-up run, conn/s per run (wrk latency: request on a fresh connection, the handshake is not in it); ` +
        `client=node: ${BATCH} connects from this Node.js process to random services per batch, rate = established/elapsed per batch`,
    ];
    const rows = await connectionRows(ctx, scales, notes);
    // Sync times are milliseconds, not conn/s: reported as notes of the same run.
    for (const r of await syncRows(ctx, notes))
      notes.push(
        `sync ${r.backend} ${r.params.services} services, ${r.params.op}: median ${r.median.toFixed(1)} ms (p10 ${r.p10.toFixed(1)}, p90 ${r.p90.toFixed(1)})`,
      );
    return { name: 'services', unit: 'conn/s', better: 'higher', rows, notes };
  },
};
