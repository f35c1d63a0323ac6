/**
 * What flow records cost: throughput with flow records on vs off, per backend, in one run.
 * Target: at most 5% on eBPF.
 *
 * Each backend gets its own lab (two nodes, a client pod on node-1, a server pod on node-2, so
 * traffic crosses the fabric and both nodes enforce: the client's egress and the server's ingress
 * policies allow exactly this pair on TCP 80, 5201 and 8080). The lab itself runs no backend; per turn
 * a real `switchyard agent` process per node is started on the lab's compiled desired state,
 * after the node's dataplane and the agent's record were removed, so every turn is a full apply:
 *
 *   flows off: `switchyard agent --no-flows`: the backend built with flowLogs false (no ring
 *              buffer events on eBPF, no NFLOG rules on netfilter) and no event sources;
 *   flows on:  `switchyard agent`: flowLogs true and the agent's sources consuming (ring buffer
 *              + conntrack map on eBPF, NFLOG + conntrack events on netfilter, the process tracer)
 *              into its FlowTable, exactly as a node runs it.
 *
 * So the only difference between the two sides is the flow flag of the same agent, and the cost
 * includes the kernel producing events and the agent consuming them on the same 2 cores.
 * Workloads, one after the other in each turn (both nodes' conntrack emptied before it):
 *   bulk = one iperf3 TCP stream client → server (samples: 1-second intervals after the first);
 *   connections (wrk) = native load: `wrk -t1 -H 'Connection: close'` in the client pod against
 *     nginx in the server pod, so each request is a new connection (samples: 1-second wrk runs
 *     after a warm-up run; see support/native-load.ts for what its latency includes);
 *   connections (node client) = batches of 200 concurrent short TCP connections to the lab's
 *     probe server, made by this process (samples: one rate per batch after a warm-up batch).
 * Turns interleave off/on per backend in ABBA order across rounds. Rows are % of the flows-off
 * median of the same backend and workload; absolute figures, latency, the agents' and softirq CPU
 * per 10k connections and the events recorded/lost while on are in the notes.
 */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { AgentStatus } from '../../agent/agent.js';
import { agentRequest } from '../../agent/client.js';
import type { LaunchedAgent } from '../../agent/launch.js';
import { FLOW_INTERVAL_MS, type BackendName } from '../../dataplane/backend.js';
import { agentStateDir, desiredDir, writeDesired } from '../../lab/agents.js';
import { converge, labDown, type LabPod, type LabState } from '../../lab/index.js';
import type { Model } from '../../model/index.js';
import { currentCgroup, requireTool, spawnInNetns } from '../../netns/index.js';
import type { Flow, FlowStats } from '../../observe/flows.js';
import { median, summarize } from '../stats.js';
import type { BenchRow, BenchScenarioResult } from '../results.js';
import { measuredScenario, type BenchContext, type BenchScenario } from '../types.js';
import {
  agentFlowSources,
  cpuSeconds,
  resetNode,
  startAgent,
  stopAgent,
  waitForSync,
} from './support/agents.js';
import { connectBatch } from './support/connect.js';
import {
  clientSysctls,
  flushConntrack,
  perTenThousand,
  runWrk,
  softirqSeconds,
  startNginx,
  wrkErrorCount,
  WRK_CONNECTIONS,
  type NginxServer,
} from './support/native-load.js';
import { measuredBackends } from './support/test-run.js';
import { allowYaml, benchModel, namespaceYaml, podYaml } from './support/manifests.js';

export interface ObserveOptions {
  /** Rounds; each runs every backend once with flows off and once on (ABBA across rounds). */
  rounds: number;
  bulkSeconds: number;
  /** 1-second wrk runs per turn, after one warm-up run. */
  wrkRuns: number;
  /** wrk's connections in flight (default WRK_CONNECTIONS). */
  wrkConnections?: number;
  /** Node-client connection batches per turn, after one warm-up batch (0: no node-client row). */
  connectionBatches: number;
  backends?: readonly BackendName[];
  /** Lab name prefix (default bob<pid>: "bench observe"); a lab per backend gets `-<b>` appended. */
  labPrefix?: string;
}

export function observeOptions(quick: boolean): ObserveOptions {
  return quick
    ? // No node-client row: a few batches of it are noise, and quick stays under 2 minutes.
      { rounds: 2, bulkSeconds: 3, wrkRuns: 2, connectionBatches: 0 }
    : { rounds: 4, bulkSeconds: 8, wrkRuns: 8, connectionBatches: 20 };
}

export const TARGET_EBPF_COST = 0.05;
/** The project's target for what flow records may cost, by backend. */
const TARGET_COST: Partial<Record<BackendName, number>> = { ebpf: TARGET_EBPF_COST };
const ORDER: readonly BackendName[] = ['iptables', 'nftables', 'ebpf'];
const IPERF_PORT = 5201;
const PROBE_PORT = 80;
/** nginx in the server pod: a port the pod does not declare, so the lab's probe server leaves it free. */
const HTTP_PORT = 8080;
const BATCH = 200;
const CONNECT_TIMEOUT_MS = 2000;
const REVISION = 'observe';
const SYNC_TIMEOUT_MS = 120_000;
/** The agents' flow interval (they poll or drain the kernel once per interval), plus slack. */
const AGENT_DRAIN_MS = FLOW_INTERVAL_MS + 100;

function model(): Model {
  const ns = 'bench';
  const ports = [PROBE_PORT, IPERF_PORT, HTTP_PORT];
  return benchModel('observe', 'observe.yaml', [
    namespaceYaml(ns),
    podYaml({ ns, name: 'client', node: 'node-1', ports: [PROBE_PORT] }),
    podYaml({ ns, name: 'server', node: 'node-2', ports: [PROBE_PORT] }),
    allowYaml({
      ns,
      name: 'server-from-client',
      pods: 'server',
      direction: 'ingress',
      peer: 'client',
      ports,
    }),
    allowYaml({ ns, name: 'client-to-server', pods: 'client', direction: 'egress', peer: 'server', ports }),
  ]);
}

/** off: --no-flows; untraced: flows without process tracing; on: the default agent. */
type Flows = 'off' | 'untraced' | 'on';
/** bulk: iperf3; wrk: native connections; node: connections made by this process. */
export type Workload = 'bulk' | 'wrk' | 'node';
const WORKLOADS: readonly Workload[] = ['bulk', 'wrk', 'node'];
type CostedWorkload = Exclude<Workload, 'node'>;
/** How a workload reads in rows and notes. */
const LABEL: Record<Workload, { workload: string; client: string }> = {
  bulk: { workload: 'bulk', client: 'iperf3' },
  wrk: { workload: 'connections', client: 'wrk' },
  node: { workload: 'connections', client: 'node' },
};

interface BackendLab {
  backend: BackendName;
  lab: string;
  state: LabState;
  client: LabPod;
  server: LabPod;
  cgroup: (p: LabPod) => string;
  nginx: NginxServer;
}

/** One 1-second wrk run. */
export interface WrkSample {
  /** Completed requests per second: new connections per second under `Connection: close`. */
  connPerSecond: number;
  connections: number;
  /** Request latency on a fresh connection (wrk's clock starts after the connect). */
  p50Ms: number;
  p99Ms: number;
  /** Socket errors (connect, read, write, timeout) plus non-2xx/3xx answers. */
  errors: number;
}

/**
 * What one workload of a turn cost: CPU seconds of both agents (until they caught up with it) and
 * of softirq on all CPUs (while it ran).
 */
export interface WorkloadCost {
  agentSeconds: number;
  softirqSeconds: number;
  /** Wall time of the workload itself. */
  seconds: number;
  /** How long after the workload the agents were quiet again (see `catchUp`). */
  lagSeconds: number;
  /** New connections made, warm-ups included (0 for bulk). */
  connections: number;
}

export interface TurnData {
  backend: BackendName;
  flows: Flows;
  round: number;
  gbps: number[];
  wrk: WrkSample[];
  /** Node-client rates per batch. */
  connRates: number[];
  connFailed: number;
  /** Node-client connections made, warm-up included. */
  nodeConnections: number;
  /**
   * What the iperf3 and wrk workloads cost (the node client's batches are too short for CPU
   * accounting over an agent's flow interval).
   */
  cost: Record<CostedWorkload, WorkloadCost>;
  /** Flow counters of both agents at the end of the turn (on only). */
  flowStats?: { events: number; lost: number; rateLimited: number; flows: number };
  /** The client pod's own connections as its node's records show them (on only). */
  coverage?: Coverage;
  sources?: string[];
}

/**
 * Records of the client pod's egress decisions for connections its own processes opened (wrk and
 * iperf3 run in its cgroup; the node client does not): how many name the deciding rule and the
 * process, weighted by the connections they stand for.
 */
export interface Coverage {
  records: number;
  connections: number;
  withRule: number;
  withProcess: number;
}

function coverageOf(flows: readonly Flow[], client: string): Coverage {
  const own = flows.filter(
    (f) =>
      f.endpoint === client &&
      f.direction === 'egress' &&
      f.verdict === 'allow' &&
      (f.dport === HTTP_PORT || f.dport === IPERF_PORT),
  );
  const weigh = (keep: (f: Flow) => boolean): number =>
    own.filter(keep).reduce((n, f) => n + f.connections, 0);
  return {
    records: own.length,
    connections: weigh(() => true),
    withRule: weigh((f) => f.rule !== ''),
    withProcess: weigh((f) => f.process !== undefined),
  };
}

export interface ObserveData {
  options: ObserveOptions;
  turns: TurnData[];
}

function exited(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.on('error', () => resolve(-1));
    child.on('close', (code) => resolve(code ?? -1));
  });
}

async function iperfServer(lab: BackendLab): Promise<ChildProcess> {
  const child = spawnInNetns({
    netns: lab.server.netns,
    cgroup: lab.cgroup(lab.server),
    argv: [requireTool('iperf3'), '-s', '-1', '-p', String(IPERF_PORT), '--forceflush'],
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('iperf3 server did not start within 5 s')), 5000);
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('Server listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      reject(new Error(`iperf3 server exited (${code}) before listening`));
    });
  }).catch((e: unknown) => {
    if (child.exitCode === null) child.kill('SIGKILL');
    throw e;
  });
  return child;
}

/** One iperf3 stream; Gbit/s of each 1-second interval after the first. */
async function bulk(lab: BackendLab, seconds: number): Promise<number[]> {
  const srv = await iperfServer(lab);
  try {
    const child = spawnInNetns({
      netns: lab.client.netns,
      cgroup: lab.cgroup(lab.client),
      argv: [
        requireTool('iperf3'),
        ...['-c', lab.server.address, '-p', String(IPERF_PORT), '-t', String(seconds), '-i', '1', '-J'],
      ],
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    const code = await exited(child);
    const report = JSON.parse(out || '{}') as {
      error?: string;
      intervals?: { sum: { seconds: number; bits_per_second: number } }[];
    };
    if (code !== 0 || report.error) throw new Error(`iperf3 client failed (${code}): ${report.error ?? ''}`);
    const gbps = (report.intervals ?? [])
      .slice(1)
      .filter((i) => i.sum.seconds > 0.5)
      .map((i) => i.sum.bits_per_second / 1e9);
    if (gbps.length === 0) throw new Error('iperf3 reported no interval after the first');
    return gbps;
  } finally {
    if (srv.exitCode === null) srv.kill('SIGKILL');
    await exited(srv);
  }
}

/** One second of wrk from the client pod against nginx in the server pod. */
async function wrkRun(lab: BackendLab, connections: number): Promise<WrkSample> {
  const r = await runWrk(
    { netns: lab.client.netns, cgroup: lab.cgroup(lab.client) },
    { target: lab.nginx.address, port: lab.nginx.port, connections, seconds: 1 },
  );
  return {
    connPerSecond: r.requestsPerSecond,
    connections: r.requests,
    p50Ms: r.latencyMs.p50,
    p99Ms: r.latencyMs.p99,
    errors: wrkErrorCount(r) + r.badStatus,
  };
}

/** A batch of concurrent connects from the client pod (its netns and cgroup): established per second. */
async function connectionBatch(lab: BackendLab, home: string): Promise<{ rate: number; ok: number }> {
  const targets = Array.from({ length: BATCH }, () => ({ address: lab.server.address, port: PROBE_PORT }));
  const client = { netns: lab.client.netns, cgroup: lab.cgroup(lab.client) };
  const { handshakes, ms } = await connectBatch(client, targets, home, CONNECT_TIMEOUT_MS);
  const ok = handshakes.filter((h) => h !== undefined).length;
  return { rate: ok / (ms / 1000), ok };
}

async function setUpLab(backend: BackendName, prefix: string): Promise<BackendLab> {
  const lab = `${prefix}-${backend[0] ?? 'x'}`;
  await labDown(lab);
  const m = model();
  const r = await converge({ name: lab, model: m, files: [], mode: 'up', backend: 'none', nodeCount: 2 });
  const pods = r.state.topology?.pods ?? [];
  const client = pods.find((p) => p.id === 'bench/client');
  const server = pods.find((p) => p.id === 'bench/server');
  if (!client || !server) throw new Error('observe lab has no bench/client or bench/server');
  if (client.node === server.node) throw new Error('observe lab placed client and server on one node');
  writeDesired(lab, {
    revision: REVISION,
    ir: r.state.ir,
    model: m,
    cgroups: Object.fromEntries(pods.map((p) => [p.id, join(r.state.cgroupRoot, p.slug)])),
  });
  const cgroup = (p: LabPod): string => join(r.state.cgroupRoot, p.slug);
  try {
    clientSysctls(client.netns);
    const nginx = await startNginx({ netns: server.netns, cgroup: cgroup(server) }, lab, {
      address: server.address,
      port: HTTP_PORT,
    });
    return { backend, lab, state: r.state, client, server, cgroup, nginx };
  } catch (e) {
    await labDown(lab);
    throw e;
  }
}

async function startAgents(lab: BackendLab, flows: Flows): Promise<LaunchedAgent[]> {
  const handles: LaunchedAgent[] = [];
  try {
    for (const node of lab.state.topology?.nodes ?? []) {
      const stateDir = agentStateDir(lab.lab, node.name);
      await resetNode(lab.backend, { scope: lab.lab, node: node.name, netns: node.netns }, stateDir);
      await flushConntrack(node.netns);
      handles.push(
        startAgent({
          lab: lab.lab,
          node: node.name,
          netns: node.netns,
          backend: lab.backend,
          source: desiredDir(lab.lab),
          stateDir,
          flows: flows !== 'off',
          processTracing: flows === 'on',
        }),
      );
    }
    await Promise.all(
      handles.map((h) =>
        waitForSync(h, (s) => s.revision === REVISION && s.lastApply !== undefined, SYNC_TIMEOUT_MS),
      ),
    );
  } catch (e) {
    await Promise.all(handles.map(stopAgent));
    throw e;
  }
  return handles;
}

function agentCpu(agents: readonly LaunchedAgent[]): number {
  return agents.reduce((sum, h) => sum + cpuSeconds(h.pid), 0);
}

/** Agents count as caught up once both together use at most this share of a core over a window. */
const SETTLED_SHARE = 0.1;
const SETTLE_WINDOW_MS = 200;
const SETTLE_MAX_MS = 5000;

/**
 * After a workload: waits `drainMs` (the agents drain kernel counters and poll conntrack once per
 * interval, so the work a load caused can arrive up to an interval later), then until the agents
 * are quiet (at most SETTLE_MAX_MS); returns the seconds waited.
 */
async function catchUp(agents: readonly LaunchedAgent[], drainMs: number): Promise<number> {
  const start = performance.now();
  if (drainMs > 0) await new Promise((r) => setTimeout(r, drainMs));
  let last = agentCpu(agents);
  while (performance.now() - start < drainMs + SETTLE_MAX_MS) {
    await new Promise((r) => setTimeout(r, SETTLE_WINDOW_MS));
    const now = agentCpu(agents);
    if (now - last <= (SETTLED_SHARE * SETTLE_WINDOW_MS) / 1000) break;
    last = now;
  }
  return (performance.now() - start) / 1000;
}

/**
 * Runs `work` and measures what it cost: softirq CPU and wall time over the work itself, and the
 * agents' CPU until they caught up with it (`catchUp`), so an agent that drains periodically or
 * lags behind the load is charged for all the work the load made, and the next workload is not.
 */
async function costed<T>(
  agents: readonly LaunchedAgent[],
  work: () => Promise<T>,
  connections: (result: T) => number,
  drainMs: number,
): Promise<{ result: T; cost: WorkloadCost }> {
  const a0 = agentCpu(agents);
  const s0 = softirqSeconds();
  const t0 = performance.now();
  const result = await work();
  const seconds = (performance.now() - t0) / 1000;
  const softirq = softirqSeconds() - s0;
  const lagSeconds = await catchUp(agents, drainMs);
  const cost = {
    agentSeconds: agentCpu(agents) - a0,
    softirqSeconds: softirq,
    seconds,
    lagSeconds,
    connections: connections(result),
  };
  return { result, cost };
}

/** The node-client batches of a turn (none when `batches` is 0), after one warm-up batch. */
async function nodeClient(
  lab: BackendLab,
  batches: number,
  home: string,
): Promise<{ rates: number[]; failed: number; connections: number }> {
  if (batches === 0) return { rates: [], failed: 0, connections: 0 };
  const warmUp = await connectionBatch(lab, home);
  const out: { rate: number; ok: number }[] = [];
  for (let i = 0; i < batches; i++) out.push(await connectionBatch(lab, home));
  return {
    rates: out.map((r) => r.rate),
    failed: out.reduce((n, r) => n + BATCH - r.ok, 0),
    connections: out.reduce((n, r) => n + r.ok, warmUp.ok),
  };
}

async function turn(
  lab: BackendLab,
  flows: Flows,
  round: number,
  opts: ObserveOptions,
  home: string,
): Promise<TurnData> {
  const agents = await startAgents(lab, flows);
  try {
    // A stream makes one flow: the agents have little to catch up with.
    const b = await costed(
      agents,
      () => bulk(lab, opts.bulkSeconds),
      () => 0,
      0,
    );
    const inFlight = opts.wrkConnections ?? WRK_CONNECTIONS;
    const w = await costed(
      agents,
      async () => {
        // The warm-up run's connections count for CPU (the agents still work on them during the
        // measured runs), not for rates.
        const warmUp = await wrkRun(lab, inFlight);
        const samples: WrkSample[] = [];
        for (let i = 0; i < opts.wrkRuns; i++) samples.push(await wrkRun(lab, inFlight));
        return { warmUp, samples };
      },
      (r) => r.warmUp.connections + r.samples.reduce((n, s) => n + s.connections, 0),
      AGENT_DRAIN_MS,
    );
    const node = await nodeClient(lab, opts.connectionBatches, home);
    const data: TurnData = {
      backend: lab.backend,
      flows,
      round,
      gbps: b.result,
      wrk: w.result.samples,
      connRates: node.rates,
      connFailed: node.failed,
      nodeConnections: node.connections,
      cost: { bulk: b.cost, wrk: w.cost },
    };
    if (flows === 'on') {
      // The agents poll conntrack once per flow interval: let the last connections' totals arrive
      // (after wrk, catching up already waited that long).
      if (opts.connectionBatches > 0) await new Promise((r) => setTimeout(r, AGENT_DRAIN_MS));
      const stats = await Promise.all(
        agents.map(
          async (h) =>
            (
              await agentRequest<AgentStatus & { flows: FlowStats }>(h.socket, '/v1/status', {
                timeoutMs: 10_000,
              })
            ).flows,
        ),
      );
      data.flowStats = {
        events: stats.reduce((sum, s) => sum + s.events, 0),
        lost: stats.reduce((sum, s) => sum + Object.values(s.lost).reduce((x, y) => x + y, 0), 0),
        rateLimited: stats.reduce((sum, s) => sum + s.rateLimited, 0),
        flows: stats.reduce((sum, s) => sum + s.flows, 0),
      };
      data.sources = [...new Set(agents.flatMap((h) => agentFlowSources(h) ?? []))];
      const flows = await Promise.all(
        agents.map(
          async (h) =>
            (await agentRequest<{ flows: Flow[] }>(h.socket, '/v1/flows?limit=10000', { timeoutMs: 10_000 }))
              .flows,
        ),
      );
      data.coverage = coverageOf(flows.flat(), lab.client.id);
    }
    return data;
  } finally {
    await Promise.all(agents.map(stopAgent));
  }
}

export async function measureObserve(ctx: BenchContext, opts: ObserveOptions): Promise<ObserveData> {
  for (const tool of ['iperf3', 'wrk', 'nginx', 'conntrack']) requireTool(tool);
  const names = measuredBackends(ORDER, opts.backends);
  ctx.progress.total(names.length * (1 + 3 * opts.rounds));
  const prefix = opts.labPrefix ?? `bob${process.pid % 100_000}`;
  const labs: BackendLab[] = [];
  const turns: TurnData[] = [];
  const home = currentCgroup();
  try {
    for (const b of names) {
      labs.push(await setUpLab(b, prefix));
      ctx.progress.tick(`${b} lab`);
    }
    for (let round = 0; round < opts.rounds; round++) {
      // ABBA: off then on in even rounds, on then off in odd ones, so a drift in the machine's
      // load over a round pair hits both sides alike.
      const modes: Flows[] = round % 2 === 0 ? ['off', 'untraced', 'on'] : ['on', 'untraced', 'off'];
      for (const lab of labs) {
        for (const flows of modes) {
          turns.push(await turn(lab, flows, round, opts, home));
          ctx.progress.tick(`${lab.backend} flows ${flows} ${round + 1}/${opts.rounds}`);
        }
      }
    }
  } finally {
    for (const lab of labs) {
      try {
        await lab.nginx.stop();
      } finally {
        await labDown(lab.lab);
      }
    }
  }
  return { options: opts, turns };
}

export interface ObserveCost {
  backend: BackendName;
  workload: Workload;
  off: number;
  on: number;
  /** 1 - on/off. */
  cost: number;
  /** Flows on without process tracing. */
  untraced: number;
  /** What process tracing costs on top of flow records: 1 - on/untraced. */
  tracingCost: number;
}

/** The samples a workload's rows are made of: Gbit/s or connections per second. */
function samplesOf(t: TurnData, workload: Workload): number[] {
  if (workload === 'bulk') return t.gbps;
  if (workload === 'wrk') return t.wrk.map((s) => s.connPerSecond);
  return t.connRates;
}

function measuredWorkloads(data: ObserveData): Workload[] {
  return WORKLOADS.filter((w) => data.turns.some((t) => samplesOf(t, w).length > 0));
}

export function observeCosts(data: ObserveData): ObserveCost[] {
  const out: ObserveCost[] = [];
  for (const backend of [...new Set(data.turns.map((t) => t.backend))]) {
    for (const workload of measuredWorkloads(data)) {
      const pick = (flows: Flows): number[] =>
        data.turns
          .filter((t) => t.backend === backend && t.flows === flows)
          .flatMap((t) => samplesOf(t, workload));
      const off = median(pick('off'));
      const on = median(pick('on'));
      const untraced = median(pick('untraced'));
      out.push({ backend, workload, off, on, cost: 1 - on / off, untraced, tracingCost: 1 - on / untraced });
    }
  }
  return out;
}

/** Totals of a workload's cost over the turns of one backend and side. */
function totalCost(turns: readonly TurnData[], workload: CostedWorkload): WorkloadCost {
  const sum = (f: (c: WorkloadCost) => number): number => turns.reduce((n, t) => n + f(t.cost[workload]), 0);
  return {
    agentSeconds: sum((c) => c.agentSeconds),
    softirqSeconds: sum((c) => c.softirqSeconds),
    seconds: sum((c) => c.seconds),
    lagSeconds: sum((c) => c.lagSeconds),
    connections: sum((c) => c.connections),
  };
}

/** The connection workloads' CPU per 10k connections, e.g. "agents 0.41 s, softirq 0.52 s". */
function perTenThousandText(c: WorkloadCost): string {
  const fmt = (s: number): string => `${perTenThousand(s, c.connections).toFixed(2)} s`;
  return `agents ${fmt(c.agentSeconds)}, softirq ${fmt(c.softirqSeconds)}`;
}

/** wrk's latency over a side's runs: medians of the runs' percentiles, the cycle, the errors. */
function wrkLatencyText(data: ObserveData, backend: BackendName, flows: Flows): string {
  const samples = data.turns.filter((t) => t.backend === backend && t.flows === flows).flatMap((t) => t.wrk);
  const inFlight = data.options.wrkConnections ?? WRK_CONNECTIONS;
  const rate = median(samples.map((s) => s.connPerSecond));
  return (
    `p50 ${median(samples.map((s) => s.p50Ms)).toFixed(2)} ms, p99 ${median(samples.map((s) => s.p99Ms)).toFixed(2)} ms, ` +
    `cycle ${((1000 * inFlight) / rate).toFixed(2)} ms, ${samples.reduce((n, s) => n + s.errors, 0)} errors`
  );
}

/** One backend and workload: absolute figures off → on, the cost, and what the workload cost in CPU. */
function costNote(data: ObserveData, c: ObserveCost): string {
  const turnsOf = (flows: Flows): TurnData[] =>
    data.turns.filter((t) => t.backend === c.backend && t.flows === flows);
  const bulkLoad = c.workload === 'bulk';
  const unit = bulkLoad ? 'Gbit/s' : 'conn/s';
  const fmt = (v: number): string => (bulkLoad ? v.toFixed(2) : v.toFixed(0));
  const limit = c.workload === 'node' ? undefined : TARGET_COST[c.backend];
  const target =
    limit !== undefined ? `; target ≤ ${limit * 100}%: ${c.cost <= limit ? 'PASS' : 'FAIL'}` : '';
  const noise = c.cost < 0 ? ' (on faster than off: the noise of this machine)' : '';
  const head =
    `${c.backend} ${LABEL[c.workload].workload} (${LABEL[c.workload].client}): ` +
    `off ${fmt(c.off)} ${unit}, on ${fmt(c.on)} ${unit}, cost ${(100 * c.cost).toFixed(1)}%${noise}${target}; ` +
    `on without process tracing ${fmt(c.untraced)} ${unit}: tracing costs ${(100 * c.tracingCost).toFixed(1)}%`;
  if (c.workload === 'node') return head;
  const workload = c.workload;
  const side = (flows: Flows): WorkloadCost => totalCost(turnsOf(flows), workload);
  const core = (flows: Flows): string =>
    `${((100 * side(flows).agentSeconds) / side(flows).seconds).toFixed(0)}%`;
  const lag = (side('on').lagSeconds / Math.max(1, turnsOf('on').length)).toFixed(1);
  let detail = `both agents' CPU ${core('off')} of a core off, ${core('on')} on (quiet ${lag} s after the load)`;
  if (workload === 'wrk')
    detail +=
      `; per 10k connections off: ${perTenThousandText(side('off'))}; on: ${perTenThousandText(side('on'))}` +
      `; latency (median of the runs) off: ${wrkLatencyText(data, c.backend, 'off')}; on: ${wrkLatencyText(data, c.backend, 'on')}`;
  return `${head}; ${detail}`;
}

export function observeResult(data: ObserveData): BenchScenarioResult {
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  const costs = observeCosts(data);
  const turnsOf = (backend: BackendName, flows: Flows): TurnData[] =>
    data.turns.filter((t) => t.backend === backend && t.flows === flows);
  for (const c of costs) {
    for (const flows of ['off', 'untraced', 'on'] as const) {
      const samples = turnsOf(c.backend, flows)
        .flatMap((t) => samplesOf(t, c.workload))
        .map((v) => (100 * v) / c.off);
      const label = flows === 'untraced' ? 'on, no process tracing' : flows;
      rows.push(summarize(c.backend, { ...LABEL[c.workload], flows: label }, samples));
    }
  }
  const o = data.options;
  notes.push(
    `per backend a lab of 2 nodes (client pod on node-1, server pod on node-2, egress and ingress policies allowing TCP ${PROBE_PORT}, ${IPERF_PORT} and ${HTTP_PORT}); ` +
      'per turn one `switchyard agent` per node after the dataplane was removed and conntrack emptied: flows off = `--no-flows` (backend with flowLogs false, no event sources), ' +
      'flows on = the default agent (flowLogs true, its event sources and the process tracer feeding its flow table); ' +
      'on, no process tracing = `--no-process-tracing` (the same without the tracing programs: the row that shows what process context costs); ' +
      `${o.rounds} rounds, off/on in ABBA order; bulk = one iperf3 TCP stream for ${o.bulkSeconds} s (1-s intervals after the first); ` +
      `connections client=wrk: native load, \`wrk -t1 -c${o.wrkConnections ?? WRK_CONNECTIONS} -H 'Connection: close'\` in the client pod against nginx (1 worker, \`return 200\`) in the server pod, ` +
      `each request a new connection, ${o.wrkRuns} runs of 1 s after a warm-up run, conn/s per run` +
      (o.connectionBatches > 0
        ? `; connections client=node: ${o.connectionBatches} batches of ${BATCH} concurrent connects from this Node.js process to the server's probe port (after one warm-up batch), rate per batch (no CPU figures: a few batches are shorter than the agents' flow interval)`
        : ''),
    'rows are % of the same backend and workload with flows off (median of its samples = 100); cost = 1 - on/off of the medians',
    "wrk latency: from writing the request on a fresh connection to the whole answer (wrk's clock starts once the connect completed, so the handshake is not in it); " +
      'cycle = connections in flight / conn/s (Little), the handshake, request and close of one connection; ' +
      "agents' CPU: both agents' utime+stime from the start of a workload (its warm-up included) until they are quiet again (wrk: one flow interval after it, then ≤ 10% of a core for 0.2 s; at most 5 s more), as % of a core over the workload's duration; " +
      'softirq: the softirq column of /proc/stat (all CPUs, the whole machine) over the workload; per 10k connections = CPU seconds / connections made (warm-up included) × 10k',
  );
  for (const c of costs) notes.push(costNote(data, c));
  for (const backend of [...new Set(data.turns.map((t) => t.backend))]) {
    const on = turnsOf(backend, 'on');
    const sum = (f: (s: NonNullable<TurnData['flowStats']>) => number): number =>
      on.reduce((n, t) => n + (t.flowStats ? f(t.flowStats) : 0), 0);
    const connections = on.reduce((n, t) => n + t.cost.wrk.connections + t.nodeConnections, 0);
    const failed = data.turns.filter((t) => t.backend === backend).reduce((n, t) => n + t.connFailed, 0);
    const cover = (f: (c: Coverage) => number): number =>
      on.reduce((n, t) => n + (t.coverage ? f(t.coverage) : 0), 0);
    const share = (n: number): string =>
      `${(
        (100 * n) /
        Math.max(
          1,
          cover((c) => c.connections),
        )
      ).toFixed(1)}%`;
    const wrkMade = on.reduce((n, t) => n + t.cost.wrk.connections, 0);
    notes.push(
      `${backend} flows on: ${sum((s) => s.events)} events recorded, ${sum((s) => s.lost)} lost in the kernel or dropped by a source, ` +
        `${sum((s) => s.rateLimited)} refused by the flow table's rate limit, ${sum((s) => s.flows)} flows in the tables at the end of the turns ` +
        `(${on.length} turns, ~${connections} connections + iperf3); sources: ${[...new Set(on.flatMap((t) => t.sources ?? []))].join(', ') || 'none reported'}` +
        (failed > 0 ? `; ${failed} node-client connects failed over all turns` : ''),
    );
    notes.push(
      `${backend} flows on, the client pod's own connections (wrk, iperf3): ${cover((c) => c.records)} records standing for ` +
        `${cover((c) => c.connections)} connections (wrk made ${wrkMade}, iperf3 ${on.length * 2}); deciding rule on ${share(cover((c) => c.withRule))}, ` +
        `process on ${share(cover((c) => c.withProcess))} (target ≥ 99%)`,
    );
  }
  return { name: 'observe', unit: '% of flows-off', better: 'higher', rows, notes };
}

export const scenario: BenchScenario = measuredScenario({
  name: 'observe',
  description:
    'throughput (bulk TCP, and connection rate under native wrk → nginx load and from a Node.js client) with flow records on vs off per backend, a real agent per node (target: ≤ 5% cost on eBPF)',
  options: observeOptions,
  measure: measureObserve,
  result: observeResult,
});
