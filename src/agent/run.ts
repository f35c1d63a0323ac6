/**
 * `switchyard agent`: the daemon. Wires the desired-state source, the reconcile loop, flow
 * sources, metrics and the local API together, and runs until SIGTERM/SIGINT. Stopping leaves
 * the dataplane in force; a new agent adopts it.
 */
import { readFileSync, rmSync, unwatchFile, watchFile } from 'node:fs';
import { pino, type Logger } from 'pino';
import type { EtcdTlsFiles } from '../datastore/etcd.js';
import type { Backend, BackendName, NodeTarget } from '../dataplane/backend.js';
import { loadBackend } from '../dataplane/registry.js';
import type { PolicyMode } from '../ir/decision-table.js';
import { policyId, type IR } from '../ir/types.js';
import { FlowTable } from '../observe/flows.js';
import { PeerDirectory } from '../observe/peers.js';
import { AgentMetrics, type AgentView } from '../observe/metrics.js';
import { RuleCatalog } from '../observe/rules.js';
import { Agent } from './agent.js';
import { startApi, startMetricsListener, type ApiServers } from './api.js';
import { isEtcdSource, type DesiredSource, type DesiredState } from './desired.js';
import { DirectorySource } from './dir-source.js';
import { startObservers, type Observers } from './observers.js';
import { readRestarts, writeReady } from './restarts.js';
import { metricsAddress, writeMetricsUrl } from './metrics-url.js';
import { apiSocket } from './paths.js';
import { privateDir } from '../util/private-files.js';

export interface RunAgentOptions {
  node: string;
  backend: BackendName;
  netns: string;
  scope: string;
  /** A directory, or `etcd:http://HOST:PORT`. */
  source: string;
  stateDir: string;
  /** Nodes to spread unplaced pods over, for manifest directories. */
  nodeCount?: number;
  /** Decision tables or the rule walk, for sources the agent compiles (manifests, etcd). */
  policyMode: PolicyMode;
  /**
   * JSON `{pod: cgroup directory}` for sources that do not carry it (etcd): a lab writes it next
   * to the pods it builds; re-read when it changes.
   */
  cgroupsFile?: string;
  /** The client certificate for an etcd source (https). */
  etcdTls?: EtcdTlsFiles;
  /** Also serve the API on 127.0.0.1:PORT, behind `token`. */
  listen?: { host: string; port: number; token: string };
  /** Serve /metrics on this loopback address; port 0: the kernel picks (a restart keeps the port it had when free). */
  metrics?: { host: string; port: number };
  flows: boolean;
  /** Process context on flows (tracing programs); default true. */
  processTracing?: boolean;
  /** How often the kernel's flow aggregates are drained (ms); default FLOW_INTERVAL_MS. */
  flowIntervalMs?: number;
  reconcileMs?: number;
  logger?: Logger;
}

export interface RunningAgent {
  agent: Agent;
  flows: FlowTable;
  socket: string;
  stop(): Promise<void>;
}

function readCgroupsFile(path: string): Record<string, string> {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, string>;
  } catch {
    return {};
  }
}

export function createLogger(name: string): Logger {
  const pretty = process.stdout.isTTY;
  return pino({
    name,
    level: process.env.SWITCHYARD_LOG_LEVEL ?? 'info',
    ...(pretty
      ? { transport: { target: 'pino-pretty', options: { colorize: true, ignore: 'pid,hostname' } } }
      : {}),
  });
}

/** Pod → cgroup directory, and the flow table's cgroup id → pod map built from it. */
class PodCgroups {
  pods = new Map<string, string>();

  constructor(
    private readonly node: string,
    private readonly cgroupsFile: string | undefined,
  ) {}

  /** From the desired state, or (etcd knows no cgroups) from `cgroupsFile`. */
  all(desired: DesiredState | undefined): Record<string, string> {
    return desired?.cgroups ?? (this.cgroupsFile ? readCgroupsFile(this.cgroupsFile) : {});
  }

  /** cgroup directories of this node's pods (what the process tracer follows). */
  local(desired: DesiredState | undefined): string[] {
    const local = new Set(desired?.ir.endpoints.filter((e) => e.node === this.node).map((e) => e.id));
    return Object.entries(this.all(desired))
      .filter(([pod]) => local.has(pod))
      .map(([, path]) => path);
  }

  async refresh(desired: DesiredState | undefined): Promise<void> {
    const { cgroupId } = await import('../observe/process-tracer.js');
    const next = new Map<string, string>();
    for (const [pod, path] of Object.entries(this.all(desired))) {
      try {
        next.set(String(cgroupId(path)), pod);
      } catch {
        // the pod's cgroup is not there (yet)
      }
    }
    this.pods = next;
  }
}

/**
 * The agent's source. The etcd client (grpc, protobuf: ~25 MiB resident) is loaded only by agents
 * that follow an etcd, not by those watching a directory.
 */
async function desiredSource(opts: RunAgentOptions, logger: Logger): Promise<DesiredSource> {
  const { EtcdSource } = isEtcdSource(opts.source)
    ? await import('./etcd-source.js')
    : { EtcdSource: undefined };
  return EtcdSource
    ? new EtcdSource(opts.source, {
        node: opts.node,
        stateDir: opts.stateDir,
        logger,
        policyMode: opts.policyMode,
        ...(opts.etcdTls ? { tls: opts.etcdTls } : {}),
      })
    : new DirectorySource(opts.source, {
        ...(opts.nodeCount ? { nodeCount: opts.nodeCount } : {}),
        policyMode: opts.policyMode,
        node: opts.node,
        stateDir: opts.stateDir,
      });
}

/** Refuses to run a backend the kernel cannot carry, saying what it lacks. */
async function requireSupport(backend: Backend): Promise<void> {
  const support = await backend.checkSupport();
  if (!support.supported)
    throw new Error(`the ${backend.name} backend cannot run here: ${support.missing.join('; ')}`);
}

interface Observability {
  flows: FlowTable;
  metrics: AgentMetrics;
  cgroups: PodCgroups;
  /** A new rule catalogue and peer directory for what was applied (name the policy of each rule and the pods at both ends of flows). */
  catalogue(ir: IR): void;
}

/** What metrics read of the agent in force: revisions, last success, this node's endpoints and policies. */
function agentView(agent: Agent): AgentView {
  const ir = agent.appliedIR;
  const local = new Set(ir?.endpoints.filter((e) => e.node === agent.target.node).map((e) => e.id));
  const policies = new Set<string>();
  for (const rs of ir?.ruleSets ?? [])
    if (local.has(rs.endpoint))
      for (const p of [...rs.globalPolicies, ...rs.kubernetesPolicies]) policies.add(policyId(p));
  const s = agent.status;
  return {
    ...(s.revision !== undefined ? { revision: s.revision } : {}),
    ...(s.desiredRevision !== undefined ? { desiredRevision: s.desiredRevision } : {}),
    ...(s.lastApply ? { lastApplyAt: s.lastApply.at } : {}),
    endpoints: local.size,
    policies: policies.size,
  };
}

function observability(
  opts: RunAgentOptions,
  backend: Backend,
  target: NodeTarget,
  agent: () => Agent,
  source: DesiredSource,
): Observability {
  let catalog = new RuleCatalog(undefined);
  let peers = new PeerDirectory(undefined);
  const cgroups = new PodCgroups(opts.node, opts.cgroupsFile);
  const flows = new FlowTable({
    node: opts.node,
    policyOf: (rule) => catalog.policyOf(rule),
    podOfCgroup: (id) => cgroups.pods.get(id),
    peerOf: (address) => peers.peerOf(address),
  });
  const metrics = new AgentMetrics(
    {
      counters: () => backend.counters(target),
      conntrackEntries: () => backend.conntrack(target).count(),
      flowStats: () => flows.stats(),
      describeRule: (rule) => catalog.describe(rule),
      policy: () => agent().status.policy,
      agent: () => agentView(agent()),
      scrapeStarted: () => agent().workStarted(),
      scrapeEnded: () => agent().workEnded(),
      ...(isEtcdSource(opts.source) ? { etcdConnected: () => source.stats?.connected === true } : {}),
    },
    { node: opts.node, backend: opts.backend },
  );
  const catalogue = (ir: IR): void => {
    catalog = new RuleCatalog(ir);
    peers = new PeerDirectory(ir);
  };
  return { flows, metrics, cgroups, catalogue };
}

export async function runAgent(opts: RunAgentOptions): Promise<RunningAgent> {
  const logger = opts.logger ?? createLogger(`agent ${opts.node}`);
  const target: NodeTarget = { scope: opts.scope, node: opts.node, netns: opts.netns };
  // Lab tests make the kernel refuse this agent's writes with it (test/kernel/lab-born-closed).
  const refuse = process.env.SWITCHYARD_TEST_REFUSE_WRITES;
  const backend = await loadBackend(opts.backend, {
    flowLogs: opts.flows,
    ...(refuse ? { refuseWritesWhile: refuse } : {}),
  });
  await requireSupport(backend);
  privateDir(opts.stateDir);

  const source = await desiredSource(opts, logger);
  // The agent is made after its observers (its hooks feed them); a scrape reads its status later.
  const obs = observability(opts, backend, target, () => agent, source);
  let observers: Observers | undefined;
  const refreshCgroups = (desired: DesiredState | undefined): void =>
    void obs.cgroups.refresh(desired).then(() => observers?.refresh());
  const agent: Agent = new Agent({
    target,
    backend,
    source,
    stateDir: opts.stateDir,
    logger,
    ...(opts.reconcileMs ? { reconcileMs: opts.reconcileMs } : {}),
    podCgroups: (desired) => obs.cgroups.all(desired),
    hooks: {
      onApplied: (mode, seconds, desired) => {
        obs.metrics.applyDuration.observe({ mode }, seconds);
        obs.catalogue(desired.ir);
        refreshCgroups(desired);
      },
      onRepair: () => obs.metrics.repairs.inc(),
      onError: (stage) => obs.metrics.errors.inc({ stage }),
    },
  });
  // Restarts by the lab's supervisor, counted across this agent's lives.
  agent.status.restarts = readRestarts(opts.stateDir)?.restarts ?? 0;
  obs.metrics.restarts.inc(agent.status.restarts);
  const socket = apiSocket(opts.stateDir);
  const servers: ApiServers[] = [];
  try {
    await agent.start();
    if (opts.flows) {
      observers = await startObservers({
        target,
        backend,
        sink: obs.flows,
        logger,
        ir: () => agent.appliedIR,
        ...(opts.flowIntervalMs ? { intervalMs: opts.flowIntervalMs } : {}),
        cgroups: () => obs.cgroups.local(agent.desiredState),
        processTracing: opts.processTracing !== false,
      });
      logger.info({ sources: observers.running() }, 'flow sources running');
    }
    const { flows, metrics } = obs;
    servers.push(
      await startApi({ agent, flows, metrics }, { socket, ...(opts.listen ? { tcp: opts.listen } : {}) }),
    );
    if (opts.metrics) {
      const listener = await startMetricsListener(metrics, metricsAddress(opts.stateDir, opts.metrics));
      servers.push(listener);
      agent.status.metricsUrl = listener.url;
      writeMetricsUrl(opts.stateDir, listener.url);
    }
  } catch (e) {
    await observers?.stop();
    await Promise.all(servers.map((s) => s.close()));
    await agent.stop();
    throw e;
  }
  const cgroupsFile = opts.cgroupsFile;
  if (cgroupsFile)
    watchFile(cgroupsFile, { interval: 1000, persistent: false }, () => refreshCgroups(agent.desiredState));
  // For a supervisor: from now on an exit is no failure to start (not part of a crash loop).
  writeReady(opts.stateDir, process.pid);
  logger.info({ socket, source: source.description, netns: opts.netns }, 'agent running');
  return {
    agent,
    flows: obs.flows,
    socket,
    stop: async () => {
      if (cgroupsFile) unwatchFile(cgroupsFile);
      await Promise.all(servers.map((s) => s.close()));
      await observers?.stop();
      await agent.stop();
    },
  };
}

/** `switchyard agent --uninstall`: removes the node's dataplane and the agent's record. */
export async function uninstallAgent(
  opts: Pick<RunAgentOptions, 'node' | 'backend' | 'netns' | 'scope' | 'stateDir'>,
): Promise<void> {
  const backend = await loadBackend(opts.backend);
  await backend.remove({ scope: opts.scope, node: opts.node, netns: opts.netns });
  rmSync(opts.stateDir, { recursive: true, force: true });
}
