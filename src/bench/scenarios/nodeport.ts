/**
 * Traffic from outside the cluster at scale: an outside client drives short connections (`wrk`,
 * `Connection: close`) through a NodePort to nginx in a backend pod, at 1, 100, 1k and 10k
 * services, on every backend in one run; and the request rate over kept connections (the
 * per-packet path of established flows). See support/nodeport-lab.ts for the lab and the two
 * entries (nodeport from outside; clusterip from a pod, the same generator), and
 * support/nodeport-report.ts for the rows, notes and targets.
 *
 * Each backend has a lab of its own (one node, a client pod, a backend pod), brought to the same
 * N services at each point; the backends then take turns run by run (new connections, connect
 * probes, kept connections), so a change in the machine's load hits all of them alike. Per
 * point the nodes' conntrack is emptied and nginx restarted; the backend pod keeps no TIME_WAIT
 * (see `dnatServerSysctls`), the client uses the whole port range (`clientSysctls`).
 *
 * `nodeport` and `nodeport-cpu` are two views of one measurement: run together, the second reuses
 * the first's data.
 */
import { performance } from 'node:perf_hooks';
import type { BackendName } from '../../dataplane/backend.js';
import { NODEPORT_XDP_ENV } from '../../dataplane/ebpf/nodeport-xdp.js';
import { availableBackends } from '../../dataplane/registry.js';
import { converge, labDown, outsideClient, type LabState } from '../../lab/index.js';
import { currentCgroup, removeCgroupTree, requireTool } from '../../netns/index.js';
import { errorMessage } from '../../util/errors.js';
import type { BenchContext, BenchScenario } from '../types.js';
import { connectBatch } from './support/connect.js';
import {
  cgroupCpuSeconds,
  clientSysctls,
  dnatServerSysctls,
  flushConntrack,
  perTenThousand,
  runWrk,
  softirqSeconds,
  startNginx,
  wrkErrorCount,
  WRK_CONNECTIONS,
  type NginxServer,
  type WrkOptions,
  type WrkReport,
} from './support/native-load.js';
import {
  entryPlan,
  LOAD_PORT,
  nodePortModel,
  outsideCgroup,
  PEER_PORT,
  podPlace,
  type Entry,
  type EntryPlan,
} from './support/nodeport-lab.js';
import {
  nodePortCpuResult,
  nodePortResult,
  type ConnectionRun,
  type NodePortData,
  type NodePortPoint,
} from './support/nodeport-report.js';

/**
 * The rows: every backend, and eBPF twice — as it runs (the node-port load balancer at XDP on the
 * fabric interface, tcx behind it) and with the load balancer at tcx only (`ebpf-tc`), so the two
 * hooks are compared in the same run. `lab` is the lab's suffix (`bnp-e`, `bnp-t`, …).
 */
interface Variant {
  row: string;
  backend: BackendName;
  lab: string;
  /** The environment the backend is created in (read when the lab's backend is loaded). */
  env?: Record<string, string>;
}
const VARIANTS: readonly Variant[] = [
  { row: 'ebpf', backend: 'ebpf', lab: 'e' },
  { row: 'ebpf-tc', backend: 'ebpf', lab: 't', env: { [NODEPORT_XDP_ENV]: '0' } },
  { row: 'iptables', backend: 'iptables', lab: 'i' },
  { row: 'nftables', backend: 'nftables', lab: 'n' },
];
const LAB_BASE = 'bnp';
const CONNECT_BATCH = WRK_CONNECTIONS;
const CONNECT_TIMEOUT_MS = 2000;
/** Connections of the peer check: a few, each logged by the backend. */
const PEER_CHECK_CONNECTIONS = 4;

export interface NodePortOptions {
  scales: readonly number[];
  /** 1-second wrk runs per backend and point (new connections, and again kept connections). */
  runs: number;
  /** Batches of `CONNECT_BATCH` timed connects per backend and point. */
  connectBatches: number;
  entry: Entry;
  backends?: readonly BackendName[];
  /** Labs are `<labBase>-<first letter of the backend>`. */
  labBase?: string;
}

export function nodePortOptions(quick: boolean, entry: Entry = defaultEntry()): NodePortOptions {
  return quick
    ? { scales: [1, 100, 1_000], runs: 3, connectBatches: 5, entry }
    : { scales: [1, 100, 1_000, 10_000], runs: 8, connectBatches: 20, entry };
}

/** nodeport when this build's model has NodePort services, else the pod → cluster IP path. */
export function defaultEntry(): Entry {
  try {
    nodePortModel(1, 'nodeport');
    return 'nodeport';
  } catch {
    return 'clusterip';
  }
}

/** One backend's lab at the current point. */
interface Turn {
  /** The row's name (the backend, or a variant of it). */
  backend: string;
  lab: string;
  point: NodePortPoint;
  plan?: EntryPlan;
  nginx?: NginxServer;
  /** cgroups whose CPU is the point's total: the client's and the backend pod's. */
  cgroups: string[];
}

const labName = (base: string, v: Variant): string => `${base}-${v.lab}`;

function variantsOf(opts: NodePortOptions): Variant[] {
  return VARIANTS.filter(
    (v) => availableBackends().includes(v.backend) && (opts.backends ?? [v.backend]).includes(v.backend),
  );
}

/** Runs `fn` with the variant's environment, then puts the environment back. */
async function withEnv<T>(env: Record<string, string> | undefined, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(env ?? {}).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved))
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
  }
}

async function bringUp(turn: Turn, state: LabState, services: number, entry: Entry): Promise<void> {
  for (const node of state.topology?.nodes ?? []) await flushConntrack(node.netns);
  // Every lab has an outside client `client`, wired by the lab itself.
  const plan = await entryPlan(state, services, entry, async (s) => outsideClient(s.name, 'client'));
  const server = podPlace(state, 'b/server');
  clientSysctls(plan.client.netns);
  dnatServerSysctls(server.netns);
  turn.nginx = await startNginx(server, turn.lab, {
    address: server.address,
    port: LOAD_PORT,
    keepAlive: true,
    peerLogPort: PEER_PORT,
  });
  turn.plan = plan;
  turn.cgroups = [plan.client.cgroup, server.cgroup];
}

function wrkOptions(plan: EntryPlan, reuse = false): WrkOptions {
  return { target: plan.load.address, port: plan.load.port, connections: WRK_CONNECTIONS, seconds: 1, reuse };
}

const failures = (r: WrkReport): number => wrkErrorCount(r) + r.badStatus;

/** One measured run of new connections, with the CPU spent over it. */
async function connectionRun(turn: Turn, plan: EntryPlan): Promise<ConnectionRun> {
  const cpu = (): number => turn.cgroups.reduce((sum, c) => sum + cgroupCpuSeconds(c), 0);
  const s0 = softirqSeconds();
  const c0 = cpu();
  const r = await runWrk(plan.client, wrkOptions(plan));
  const softirq = softirqSeconds() - s0;
  const total = cpu() - c0;
  return {
    connPerSec: r.requestsPerSecond,
    connections: r.requests,
    softirqPer10k: perTenThousand(softirq, r.requests),
    totalPer10k: perTenThousand(total, r.requests),
    wrkP50Ms: r.latencyMs.p50,
    wrkP99Ms: r.latencyMs.p99,
    failed: failures(r),
  };
}

/** Runs `fn` for every turn still measurable, `rounds` times, backends taking turns. */
async function inTurns(
  turns: readonly Turn[],
  rounds: number,
  fn: (turn: Turn, plan: EntryPlan) => Promise<void>,
): Promise<void> {
  for (let r = 0; r < rounds; r++)
    for (const turn of turns) {
      if (!turn.plan || turn.point.problem !== undefined) continue;
      try {
        await fn(turn, turn.plan);
      } catch (e) {
        turn.point.problem = errorMessage(e).split('\n')[0];
      }
    }
}

/** The point's measurements for every backend, in turns. */
async function measurePoint(turns: readonly Turn[], opts: NodePortOptions, home: string): Promise<void> {
  // Warm-up (caches, conntrack, the first connection): it must connect, or the backend does not serve the entry.
  await inTurns(turns, 1, async (turn, plan) => {
    const warm = await runWrk(plan.client, wrkOptions(plan));
    if (warm.requests === 0)
      turn.point.problem = `no connection through ${plan.load.address}:${plan.load.port} succeeded (does ${turn.backend} serve this entry?)`;
  });
  await inTurns(turns, opts.runs, async (turn, plan) => {
    turn.point.runs.push(await connectionRun(turn, plan));
  });
  await inTurns(turns, opts.connectBatches, async (turn, plan) => {
    const targets = Array.from({ length: CONNECT_BATCH }, () => plan.load);
    const { handshakes } = await connectBatch(plan.client, targets, home, CONNECT_TIMEOUT_MS);
    for (const h of handshakes) {
      if (h === undefined) turn.point.connectFailed++;
      else turn.point.connectMs.push(h);
    }
  });
  await inTurns(turns, opts.runs, async (turn, plan) => {
    const r = await runWrk(plan.client, wrkOptions(plan, true));
    turn.point.reused.push({ reqPerSec: r.requestsPerSecond, failed: failures(r) });
  });
  await inTurns(turns, 1, async (turn, plan) => {
    await runWrk(plan.client, {
      target: plan.peers.address,
      port: plan.peers.port,
      connections: PEER_CHECK_CONNECTIONS,
      seconds: 1,
    });
    turn.point.peers = { client: plan.client.address, seen: [...new Set(turn.nginx?.peers() ?? [])] };
  });
}

export async function measureNodePort(ctx: BenchContext, opts: NodePortOptions): Promise<NodePortData> {
  for (const tool of ['wrk', 'nginx', 'conntrack']) requireTool(tool);
  const names = variantsOf(opts);
  const base = opts.labBase ?? LAB_BASE;
  const home = currentCgroup();
  const points: NodePortPoint[] = [];
  let client = '';
  const down = async (): Promise<void> => {
    for (const b of names) {
      await labDown(labName(base, b));
      await removeCgroupTree(outsideCgroup(labName(base, b)));
    }
  };
  await down();
  try {
    for (const services of opts.scales) {
      const model = nodePortModel(services, opts.entry);
      const turns: Turn[] = [];
      try {
        for (const variant of names) {
          const { backend } = variant;
          const point: NodePortPoint = {
            backend: variant.row,
            services,
            applyMs: 0,
            runs: [],
            reused: [],
            connectMs: [],
            connectFailed: 0,
          };
          points.push(point);
          const turn: Turn = { backend: variant.row, lab: labName(base, variant), point, cgroups: [] };
          turns.push(turn);
          const start = performance.now();
          try {
            const { state } = await withEnv(variant.env, () =>
              converge({
                name: turn.lab,
                model,
                files: [],
                mode: 'up',
                backend,
                nodeCount: 1,
                // The lab applies the backend itself: no agent's flow sources spend CPU beside the
                // load (they differ per backend), and no agent start-up at 10k services.
                agents: false,
              }),
            );
            point.applyMs = performance.now() - start;
            await bringUp(turn, state, services, opts.entry);
            client = turn.plan?.client.what ?? client;
          } catch (e) {
            point.problem = `lab not ready: ${errorMessage(e).split('\n').slice(0, 2).join(' ')}`;
          }
        }
        await measurePoint(turns, opts, home);
      } finally {
        for (const turn of turns) {
          await turn.nginx?.stop();
          ctx.progress.tick(`${turn.backend} ${services}`);
        }
      }
    }
  } finally {
    await down();
  }
  return { entry: opts.entry, method: method(opts, client), points };
}

function method(opts: NodePortOptions, client: string): string[] {
  const entry =
    opts.entry === 'nodeport'
      ? `entry: NodePort from outside (${client || 'an outside namespace on the fabric'} → the node's external address and the node port of the middle service in the chain order; services are type NodePort while the range lasts, ClusterIP beyond)`
      : `entry: ClusterIP from a pod (${client || 'pod b/client'} → the middle service's cluster IP): this build has no NodePort services yet, so the harness loads the same nginx through the pod → service path`;
  return [
    entry,
    `per backend a one-node lab with N services (port 80 → nginx on ${LOAD_PORT} in pod b/server, 1 worker) and a service \`local\` (externalTrafficPolicy: Local, → ${PEER_PORT}, whose nginx logs $remote_addr); ` +
      "no agents (the lab applies each backend once); nodes' conntrack emptied before each point; backends take turns run by run",
    `new connections: \`wrk -t1 -c${WRK_CONNECTIONS} -H 'Connection: close'\`, ${opts.runs} runs of 1 s after a warm-up run, conn/s per run; ` +
      `connect latency: ${opts.connectBatches} batches of ${CONNECT_BATCH} concurrent connects from the client's namespace and cgroup, each timed to its completed handshake; ` +
      `reused connections: \`wrk -t1 -c${WRK_CONNECTIONS}\` with keep-alive, ${opts.runs} runs of 1 s, req/s per run; ` +
      'failed connections: wrk socket errors and non-2xx answers of every run, and connects that did not complete',
  ];
}

let memo: { key: string; data: Promise<NodePortData> } | undefined;

/** The measurement for this process and mode, made once even when both views are asked for. */
function shared(ctx: BenchContext): Promise<NodePortData> {
  const opts = nodePortOptions(ctx.quick);
  const key = JSON.stringify(opts);
  const names = variantsOf(opts);
  if (!memo || memo.key !== key) {
    ctx.progress.total(opts.scales.length * names.length);
    const data = measureNodePort(ctx, opts);
    memo = { key, data };
    data.catch(() => (memo = undefined));
  } else ctx.progress.total(0);
  return memo.data;
}

export const scenario: BenchScenario = {
  name: 'nodeport',
  description:
    'connections from outside through a NodePort (wrk → nginx, Connection: close) at 1, 100, 1k, 10k services on every backend: conn/s, connect p50/p99, CPU and failures per point, the request rate over kept connections, and the targets as ratios',
  run: async (ctx) => nodePortResult(await shared(ctx)),
};

export const cpuScenario: BenchScenario = {
  name: 'nodeport-cpu',
  description:
    'CPU seconds (softirq, and the client and backend cgroups) per 10k connections in the nodeport measurement',
  run: async (ctx) => nodePortCpuResult(await shared(ctx)),
};
