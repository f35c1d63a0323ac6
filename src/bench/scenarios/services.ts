/**
 * Service load balancing at scale: new-connection rate and connect latency from a client pod to
 * N ClusterIP services (1 … 10k) over one backend pod, for eBPF connect-time load balancing and
 * for the netfilter backends' per-packet DNAT, in one throwaway lab whose policy backend is
 * switched between them; and, in the same run, how long each backend takes to load 10k services
 * from scratch and to absorb one endpoint change among them (notes: those are milliseconds).
 *
 * Connections are made in-process like the lab's prober: the process joins the client pod's
 * cgroup (so the cgroup sock_addr hooks see its sockets) and the thread its namespace, starts a
 * batch of non-blocking connects to random services, and counts a connection once the handshake
 * completed. The pod's probe server answers and closes, so TIME_WAIT stays on the server side.
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
import { currentCgroup } from '../../netns/index.js';
import { summarize } from '../stats.js';
import type { BenchRow } from '../results.js';
import type { BenchContext, BenchScenario } from '../types.js';
import { connectBatch } from './support/connect.js';
import { benchModel } from './support/manifests.js';
import { errorMessage } from '../../util/errors.js';

const LAB = 'bench-svc';
const BACKENDS: readonly BackendName[] = ['ebpf', 'iptables', 'nftables'];
const BATCH = 200;
const CONNECT_TIMEOUT_MS = 2000;

/** The i-th service address: 198.19.0.0/16 from .1 on. */
function vip(i: number): string {
  const n = i + 1;
  return `198.19.${n >> 8}.${n & 0xff}`;
}

function model(services: number): Model {
  const docs = [
    'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n',
    'apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\n  namespace: b\n  labels: { app: client }\nspec:\n  containers: [{ name: c }]\n',
    'apiVersion: v1\nkind: Pod\nmetadata:\n  name: server\n  namespace: b\n  labels: { app: server }\n' +
      'spec:\n  containers: [{ name: c, ports: [{ containerPort: 8080, protocol: TCP }] }]\n',
  ];
  for (let i = 0; i < services; i++)
    docs.push(
      `apiVersion: v1\nkind: Service\nmetadata:\n  name: s${i}\n  namespace: b\nspec:\n  clusterIP: ${vip(i)}\n` +
        `  selector: { app: server }\n  ports: [{ port: 80, targetPort: 8080, protocol: TCP }]\n`,
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
async function batch(
  client: { netns: string; cgroup: string },
  services: number,
  home: string,
): Promise<BatchResult> {
  const targets = Array.from({ length: BATCH }, () => ({
    address: vip(Math.floor(Math.random() * services)),
    port: 80,
  }));
  const { handshakes, ms } = await connectBatch(client, targets, home, CONNECT_TIMEOUT_MS);
  const latencies = handshakes.filter((r): r is number => r !== undefined);
  return { ok: latencies.length, failed: BATCH - latencies.length, ms, latencies };
}

function podOf(state: LabState, id: string): { netns: string; cgroup: string } {
  const p = state.topology?.pods.find((x) => x.id === id);
  if (!p) throw new Error(`bench lab has no pod ${id}`);
  return { netns: p.netns, cgroup: `${state.cgroupRoot}/${p.slug}` };
}

export async function connectionRows(
  ctx: BenchContext,
  scales: readonly number[],
  notes: string[],
  names: readonly BackendName[] = BACKENDS.filter((b) => availableBackends().includes(b)),
): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const rounds = ctx.quick ? 5 : 15;
  const home = currentCgroup();
  await labDown(LAB);
  try {
    for (const services of scales) {
      const m = model(services);
      for (const backend of names) {
        const applyStart = performance.now();
        let state: LabState;
        try {
          state = (await converge({ name: LAB, model: m, files: [], mode: 'up', backend, nodeCount: 1 }))
            .state;
        } catch (e) {
          notes.push(`${backend} N=${services}: lab apply failed: ${errorMessage(e).split('\n')[0]}`);
          ctx.progress.tick(`${backend} ${services}`);
          continue;
        }
        const applyMs = performance.now() - applyStart;
        const client = podOf(state, 'b/client');
        const probe = await batch(client, services, home);
        if (probe.ok === 0) {
          notes.push(
            `${backend} N=${services}: no connection to a service succeeded (does ${backend} render services?)`,
          );
          ctx.progress.tick(`${backend} ${services}`);
          continue;
        }
        const rates: number[] = [];
        const latencies: number[] = [];
        let failed = 0;
        for (let r = 0; r < rounds; r++) {
          const b = await batch(client, services, home);
          rates.push((b.ok / b.ms) * 1000);
          latencies.push(...b.latencies);
          failed += b.failed;
        }
        rows.push(summarize(backend, { services, metric: 'new connections' }, rates));
        const lat = summarize(backend, { services }, latencies);
        notes.push(
          `${backend} N=${services}: connect latency median ${lat.median.toFixed(2)} ms (p10 ${lat.p10.toFixed(2)}, p90 ${lat.p90.toFixed(2)}) ` +
            `with ${BATCH} connects in flight; ${failed} failed; lab apply ${Math.round(applyMs)} ms`,
        );
        ctx.progress.tick(`${backend} ${services}`);
      }
    }
  } finally {
    await labDown(LAB);
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
    'new-connection rate through 1, 100, 1k, 10k ClusterIP services (eBPF connect-time LB vs iptables vs nftables DNAT), and service sync time at 10k (1k with --quick)',
  async run(ctx) {
    const scales = ctx.quick ? [1, 100, 1_000] : [1, 100, 1_000, 10_000];
    const names = BACKENDS.filter((b) => availableBackends().includes(b));
    ctx.progress.total(scales.length * names.length + names.length);
    const notes: string[] = [
      `one client pod, one backend pod, N services (port 80 → 8080); ${BATCH} connects to random services per batch, rate = established/elapsed per batch`,
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
