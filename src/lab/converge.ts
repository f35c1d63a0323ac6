/**
 * `lab up` and `lab apply`: make the kernel match a model, touching only the difference. Pods
 * that did not change keep their namespace, address and probe sockets.
 */
import { join } from 'node:path';
import { ETCD_SOURCE_PREFIX } from '../agent/desired.js';
import { allocate, buildIR, DEFAULT_NODE_COUNT, type Allocations, type BuildOptions } from '../calc/index.js';
import type { Backend } from '../dataplane/backend.js';
import { loadBackend } from '../dataplane/registry.js';
import { DEFAULT_POLICY_MODE, type PolicyMode } from '../ir/decision-table.js';
import type { IR } from '../ir/types.js';
import type { Model } from '../model/index.js';
import { cgroup2Mount, ensureCgroup, listNetns, requireRoot, requireTools } from '../netns/index.js';
import { stopLabAgents, syncLabAgents, writeCgroups, writeDesired } from './agents.js';
import { destroyLab } from './down.js';
import { LabError } from './errors.js';
import { CGROUP_DIR, checkLabName } from './names.js';
import { outsideNames } from './outside.js';
import { planChanges, plugBatches, type KernelPlan } from './plan.js';
import { reloadIfRunning, syncProbeServer, writeProbeConfig } from './probe/control.js';
import { silentProgress, type Progress } from './progress.js';
import { buildPart, plugPods, tearDownPart } from './realize.js';
import { clearStale, recoverTopology } from './recover.js';
import { labDir, readState, withLabLock, writeState, type LabBackend, type LabState } from './state.js';
import { buildTopology, topologyNetns, type Topology } from './topology.js';
import { errorMessage } from '../util/errors.js';

export interface ConvergeOptions {
  name: string;
  model: Model;
  files: string[];
  /** `up` creates or converges; `apply` requires a lab that exists. */
  mode: 'up' | 'apply';
  /** Default: the lab's current backend, else none. */
  backend?: LabBackend;
  /** Default: the lab's current node count, else calc's default. */
  nodeCount?: number;
  /** Default: the lab's current mode, else DEFAULT_POLICY_MODE. */
  policyMode?: PolicyMode;
  progress?: Progress;
  /**
   * Run one agent per node that keeps the dataplane in sync (default: as before, else true).
   * Without agents the lab applies the backend itself, once.
   */
  agents?: boolean;
  /**
   * Cluster mode: the model was read from this etcd at `revision`, and the agents watch it there
   * (the lab only builds namespaces, links and probes, and waits for the agents).
   */
  cluster?: { etcd: string; revision: number; unreachable?: readonly string[] };
  /** Outside clients besides `client` (default: the lab's current ones). */
  outside?: readonly string[];
}

export interface ConvergeResult {
  state: LabState;
  /** The lab's kernel state was missing or from an interrupted run, so it was rebuilt from scratch. */
  rebuilt: boolean;
  /** An interrupted run (or vanished pods) was converged from what the kernel really holds, in place. */
  recovered: boolean;
  /** Pods still closed after this run (their node's agent was not waited for): normally none. */
  closed: string[];
  added: string[];
  removed: string[];
  /** Pods whose namespace was recreated (node or address changed): in both lists above. */
  nodesAdded: string[];
  nodesRemoved: string[];
  /** Set when the policy backend was switched. */
  backendChange?: { from: LabBackend; to: LabBackend };
  durationMs: number;
}

function missingNetns(t: Topology): string[] {
  const present = new Set(listNetns());
  return topologyNetns(t).filter((n) => !present.has(n));
}

/** Allocations for `model`, keeping what the lab's last run allocated. */
function allocateOrFail(model: Model, nodeCount: number, prev: LabState | undefined): Allocations {
  try {
    // Lab pods are dual-stack: every pod gets an IPv6 address beside its IPv4 one.
    return allocate(model, prev?.allocations ?? {}, { nodeCount, dualStackPods: true });
  } catch (e) {
    throw new LabError(errorMessage(e), { cause: e });
  }
}

function buildIROrFail(model: Model, allocations: Allocations, opts: BuildOptions = {}): IR {
  try {
    return buildIR(model, allocations, opts);
  } catch (e) {
    throw new LabError(errorMessage(e), { cause: e });
  }
}

async function applyBackend(
  backend: Backend,
  lab: string,
  topology: Topology,
  ir: IR,
  previous: IR | undefined,
  podCgroups: Readonly<Record<string, string>>,
): Promise<void> {
  for (const n of topology.nodes) {
    const known = previous?.nodes.some((p) => p.name === n.name);
    const target = { scope: lab, node: n.name, netns: n.netns, podCgroups };
    try {
      await backend.apply(target, ir, known ? previous : undefined);
    } catch (e) {
      throw new LabError(
        `the ${backend.name} backend failed on node ${n.name}: ${errorMessage(e)}\n` +
          `(the lab's namespaces and probes are up; fix the cause and run 'switchyard lab apply')`,
      );
    }
  }
}

async function removeOldBackend(
  name: LabBackend,
  lab: string,
  topology: Topology | undefined,
): Promise<void> {
  if (name === 'none' || !topology) return;
  const old = await loadBackend(name);
  for (const n of topology.nodes) await old.remove({ scope: lab, node: n.name, netns: n.netns });
}

/** What the backend would refuse for its size (eBPF: the verifier's limit), before anything changes. */
function refuseOverLimits(backend: Backend | undefined, ir: IR): void {
  const refused = ir.nodes.flatMap((n) =>
    (backend?.limits?.(ir, n.name) ?? []).map((l) => `node ${n.name}: ${l}`),
  );
  if (refused.length > 0)
    throw new LabError(
      `the ${backend?.name ?? ''} backend cannot install this; nothing was changed:\n${refused.join('\n')}`,
    );
}

/** What a run changes, checked before anything in the kernel does. */
interface Request {
  name: string;
  prev: LabState | undefined;
  backendName: LabBackend;
  nodeCount: number;
  policyMode: PolicyMode;
  /** Whether agents keep the backend in sync (asked for; none run without a backend). */
  wantAgents: boolean;
  agents: boolean;
  backend: Backend | undefined;
  /** The outside clients' names (`client` among them). */
  outside: string[];
}

async function checkRequest(opts: ConvergeOptions, name: string): Promise<Request> {
  const prev = readState(name);
  if (opts.mode === 'apply' && !prev) {
    throw new LabError(`lab '${name}' is not up: start it with 'switchyard lab up FILES --lab ${name}'`);
  }
  if (prev?.cluster && !opts.cluster)
    throw new LabError(
      `lab '${name}' is a cluster: its desired state lives in etcd; change it with ` +
        `'switchyard apply FILES --lab ${name}' (or 'switchyard cluster down --lab ${name}' first)`,
    );
  const backendName = opts.backend ?? prev?.backend ?? 'none';
  if (opts.cluster && backendName === 'none')
    throw new LabError('a cluster needs a policy backend for its agents (--backend iptables|nftables|ebpf)');
  const nodeCount = opts.nodeCount ?? prev?.nodeCount ?? DEFAULT_NODE_COUNT;
  const policyMode = opts.policyMode ?? prev?.policyMode ?? DEFAULT_POLICY_MODE;
  const wantAgents = opts.cluster ? true : (opts.agents ?? prev?.agents ?? true);
  // Load first: an unavailable backend is reported before anything in the kernel changes.
  const backend = backendName === 'none' ? undefined : await loadBackend(backendName);
  const had = (prev?.topology?.outside ?? prev?.target?.outside ?? []).map((o) => o.name);
  return {
    outside: outsideNames(opts.outside ?? had),
    name,
    prev,
    backendName,
    nodeCount,
    policyMode,
    wantAgents,
    agents: backendName !== 'none' && wantAgents,
    backend,
  };
}

/** The kernel's way from what the last run left to `topology`. */
interface KernelChange {
  /** The lab's kernel state was missing or half-built: it is rebuilt from scratch. */
  rebuilt: boolean;
  /** The last run was interrupted (or pods vanished): `current` is what the kernel really holds. */
  recovered: boolean;
  /** What is in the kernel to diff against (none when rebuilt or new). */
  current: Topology | undefined;
  topology: Topology;
  plan: KernelPlan;
}

/** Every pod address the last run knew: routes to those that are gone go when recovering. */
function knownAddresses(prev: LabState): string[] {
  return [...(prev.topology?.pods ?? []), ...(prev.target?.pods ?? [])].map((p) => p.address);
}

/**
 * Plans the kernel change. A run that died half-way, or pods whose namespaces vanished, are
 * converged from what the kernel really holds (recover.ts): what that run half-made is removed,
 * the rest is diffed against, and the agents keep enforcing throughout. Only a lab that cannot be
 * read back (no topology, a node or the fabric gone, an interrupted backend switch) is removed to
 * start over, keeping allocations so addresses stay; its pods are born closed like any other.
 */
async function prepareKernelChange(
  req: Request,
  ir: IR,
  cgroupRoot: string,
  progress: Progress,
): Promise<KernelChange> {
  const { name, prev } = req;
  const damaged =
    prev !== undefined &&
    (prev.status !== 'ready' || !prev.topology || missingNetns(prev.topology).length > 0);
  // A lab being created or removed when its run died has nothing worth keeping.
  const recoverable = prev?.status === 'applying' || prev?.status === 'ready';
  const recovery = damaged && recoverable ? await recoverTopology(prev) : undefined;
  const rebuilt = damaged && !recovery;
  const current = rebuilt ? undefined : (recovery?.current ?? prev?.topology);
  const topology = buildTopology(name, ir, prev?.topology ?? prev?.target, req.outside);
  const plan = planChanges(
    current,
    topology,
    recovery && prev ? { resync: { addresses: knownAddresses(prev) } } : {},
  );
  if (rebuilt) {
    progress.phase('removing the broken lab', 1);
    const report = await destroyLab(name, { keepStateDir: true });
    if (report.problems.length > 0)
      throw new LabError(`cannot clean lab '${name}': ${report.problems.join('; ')}`);
    progress.tick();
  }
  if (recovery) {
    progress.phase('recovering an interrupted run', 1);
    // The probe server lets go of the namespaces about to go, as for pods that leave.
    const dir = labDir(name);
    writeProbeConfig(dir, name, cgroupRoot, recovery.current.pods);
    await reloadIfRunning(dir, name, prev?.probe);
    await clearStale(recovery, cgroupRoot);
    progress.tick();
  }
  refuseForeignNetns(name, plan);
  return { rebuilt, recovered: recovery !== undefined, current, topology, plan };
}

/**
 * Someone else's namespace under one of our names (another lab whose name shares our prefix,
 * another tool): refuse before recording it as ours.
 */
function refuseForeignNetns(name: string, plan: KernelPlan): void {
  const present = new Set(listNetns());
  const deleting = new Set(plan.deleteNetns);
  const clash = plan.createNetns.filter((n) => present.has(n) && !deleting.has(n));
  if (clash.length > 0) {
    throw new LabError(
      `network namespace ${clash.slice(0, 3).join(', ')}${clash.length > 3 ? ' …' : ''} already exists but is not ` +
        `part of lab '${name}' (another lab or tool uses the name): pick another --lab, or remove it ` +
        `('switchyard lab down --lab ${name}' removes what an earlier run of this lab left)`,
    );
  }
}

function initialState(
  opts: ConvergeOptions,
  req: Request,
  change: KernelChange,
  allocations: Allocations,
  ir: IR,
  cgroupRoot: string,
): LabState {
  const { prev, backendName } = req;
  const { current, rebuilt, plan } = change;
  const now = new Date().toISOString();
  // Pods still closed from an earlier run (a failed policy), and every pod this run creates.
  const ids = new Set(change.topology.pods.map((p) => p.id));
  const closed = new Set([
    ...(current ? (prev?.closed ?? []) : []).filter((id) => ids.has(id)),
    ...plan.addedPods.map((p) => p.id),
  ]);
  return {
    version: 1,
    name: req.name,
    status: current ? 'applying' : 'creating',
    createdAt: current && prev ? prev.createdAt : now,
    updatedAt: now,
    backend: backendName,
    nodeCount: req.nodeCount,
    policyMode: req.policyMode,
    files: opts.files,
    model: opts.model,
    ir,
    ...(current && prev?.backendIR && prev.backend === backendName ? { backendIR: prev.backendIR } : {}),
    allocations,
    ...(current ? { topology: current } : {}),
    target: change.topology,
    ...(closed.size > 0 ? { closed: [...closed].sort() } : {}),
    ...(current && prev && prev.backend !== backendName ? { switchingFrom: prev.backend } : {}),
    cgroupRoot,
    ...(prev?.probe && !rebuilt ? { probe: prev.probe } : {}),
    agents: req.wantAgents,
    revision: opts.cluster ? opts.cluster.revision : (prev?.revision ?? 0) + 1,
    ...(opts.cluster ? { cluster: { etcd: opts.cluster.etcd } } : {}),
  };
}

/** Namespaces, links and routes: leaving pods first (probes and agents let go of them), then arrivals. */
async function changeKernel(
  req: Request,
  change: KernelChange,
  state: LabState,
  progress: Progress,
): Promise<void> {
  const { name, prev, backendName } = req;
  const { plan, current } = change;
  const dir = labDir(name);
  if (plan.removedPods.length > 0 && current) {
    const leaving = new Set(plan.removedPods.map((p) => p.id));
    writeProbeConfig(
      dir,
      name,
      state.cgroupRoot,
      current.pods.filter((p) => !leaving.has(p.id)),
    );
    await reloadIfRunning(dir, name, state.probe);
  }
  // Agents that would keep the old dataplane alive (or fight the lab applying it) go first.
  if (prev && (prev.backend !== backendName || !req.agents)) await stopLabAgents(name);
  if (prev && current && prev.backend !== backendName) await removeOldBackend(prev.backend, name, current);
  await tearDownPart(plan, state.cgroupRoot);
  await buildPart(plan, state.cgroupRoot, progress);
}

/**
 * Probe servers for every pod. A pod is ready once its probe server listens: only ready pods back
 * services (same allocations, so nothing else in the IR moves).
 */
async function startProbes(
  opts: ConvergeOptions,
  state: LabState,
  topology: Topology,
  progress: Progress,
): Promise<void> {
  progress.phase('probe server', 1);
  const dir = labDir(state.name);
  writeProbeConfig(dir, state.name, state.cgroupRoot, topology.pods);
  const synced = await syncProbeServer(dir, state.name, state.probe);
  state.probe = synced.info;
  state.ir = buildIROrFail(opts.model, state.allocations, {
    readyPods: synced.serving,
    policyMode: state.policyMode ?? DEFAULT_POLICY_MODE,
  });
  progress.tick();
}

/** What putting the run's policy in force needs. */
interface PolicyStep {
  opts: ConvergeOptions;
  req: Request;
  state: LabState;
  topology: Topology;
  progress: Progress;
}

/** Policy in force: through the agents (etcd or `desired/`), or applied by the lab itself. */
async function applyPolicy({ opts, req, state, topology, progress }: PolicyStep): Promise<void> {
  const { backend, name } = req;
  if (!backend) return;
  const cgroups = Object.fromEntries(topology.pods.map((p) => [p.id, join(state.cgroupRoot, p.slug)]));
  if (opts.cluster) {
    progress.phase(`${backend.name} policy (agents, etcd)`, 1);
    writeCgroups(name, cgroups);
    await syncLabAgents(name, topology.nodes, backend.name, String(opts.cluster.revision), {
      source: `${ETCD_SOURCE_PREFIX}${opts.cluster.etcd}`,
      unreachable: opts.cluster.unreachable ?? [],
      policyMode: req.policyMode,
    });
  } else if (req.agents) {
    progress.phase(`${backend.name} policy (agents)`, 1);
    writeDesired(name, { revision: String(state.revision), ir: state.ir, model: opts.model, cgroups });
    await syncLabAgents(name, topology.nodes, backend.name, String(state.revision));
  } else {
    progress.phase(`${backend.name} policy`, 1);
    await applyBackend(backend, name, topology, state.ir, state.backendIR, cgroups);
  }
  state.backendIR = state.ir;
  writeState(state);
  progress.tick();
}

/**
 * Policy in force, then the pods born closed are plugged. When the policy fails they stay closed
 * (no traffic in or out), and the error says so; the next successful apply plugs them.
 */
async function applyPolicyThenPlug(step: PolicyStep): Promise<void> {
  const { opts, state, topology } = step;
  try {
    await applyPolicy(step);
  } catch (e) {
    const closed = state.closed ?? [];
    if (closed.length === 0) throw e;
    throw new LabError(
      `${errorMessage(e)}\npods kept closed (no traffic in or out) until an apply succeeds: ${closed.join(', ')}`,
      { cause: e },
    );
  }
  // Pods on nodes whose agents could not hear of this revision (cut off from etcd) stay closed.
  const unheard = new Set(opts.cluster?.unreachable ?? []);
  const byId = new Map(topology.pods.map((p) => [p.id, p]));
  const plug = (state.closed ?? []).filter((id) => {
    const p = byId.get(id);
    return p !== undefined && !unheard.has(p.node);
  });
  if (plug.length === 0) return;
  await plugPods(plugBatches(topology, plug));
  const left = (state.closed ?? []).filter((id) => !plug.includes(id));
  if (left.length > 0) state.closed = left;
  else delete state.closed;
  writeState(state);
}

export async function converge(opts: ConvergeOptions): Promise<ConvergeResult> {
  const started = performance.now();
  const name = checkLabName(opts.name);
  requireRoot(`switchyard lab ${opts.mode}`);
  requireTools(['ip', 'nsenter', 'sh']);
  const cgroupRoot = join(cgroup2Mount(), CGROUP_DIR, name);
  const progress = opts.progress ?? silentProgress;
  return withLabLock(name, async () => {
    const req = await checkRequest(opts, name);
    const allocations = allocateOrFail(opts.model, req.nodeCount, req.prev);
    const ir = buildIROrFail(opts.model, allocations, { policyMode: req.policyMode });
    refuseOverLimits(req.backend, ir);
    const change = await prepareKernelChange(req, ir, cgroupRoot, progress);
    const state = initialState(opts, req, change, allocations, ir, cgroupRoot);
    // Recorded before the first kernel change: a crash from here on is cleaned up by name.
    writeState(state);
    ensureCgroup(cgroupRoot);
    await changeKernel(req, change, state, progress);
    await startProbes(opts, state, change.topology, progress);
    state.status = 'ready';
    state.topology = change.topology;
    delete state.target;
    delete state.switchingFrom;
    writeState(state);
    await applyPolicyThenPlug({ opts, req, state, topology: change.topology, progress });
    progress.done();
    const { plan, rebuilt, recovered } = change;
    const { prev, backendName } = req;
    return {
      state,
      rebuilt,
      recovered,
      closed: state.closed ?? [],
      added: plan.addedPods.map((p) => p.id),
      removed: plan.removedPods.map((p) => p.id),
      nodesAdded: plan.addedNodes.map((n) => n.name),
      nodesRemoved: plan.removedNodes.map((n) => n.name),
      ...(prev && prev.backend !== backendName
        ? { backendChange: { from: prev.backend, to: backendName } }
        : {}),
      durationMs: Math.round(performance.now() - started),
    };
  });
}
