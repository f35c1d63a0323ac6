/**
 * `lab up` and `lab apply`: make the kernel match a model, touching only the difference. Pods
 * that did not change keep their namespace, address and probe sockets.
 */
import { join } from 'node:path';
import { ETCD_SOURCE_PREFIX } from '../agent/desired.js';
import { buildIR, DEFAULT_NODE_COUNT, type CalcOptions } from '../calc/index.js';
import type { Backend } from '../dataplane/backend.js';
import { loadBackend } from '../dataplane/registry.js';
import type { IR } from '../ir/types.js';
import type { Model } from '../model/index.js';
import { cgroup2Mount, ensureCgroup, listNetns, requireRoot, requireTools } from '../netns/index.js';
import { stopLabAgents, syncLabAgents, writeCgroups, writeDesired } from './agents.js';
import { destroyLab } from './down.js';
import { LabError } from './errors.js';
import { CGROUP_DIR, checkLabName } from './names.js';
import { planChanges, type KernelPlan } from './plan.js';
import { reloadIfRunning, syncProbeServer, writeProbeConfig } from './probe/control.js';
import { silentProgress, type Progress } from './progress.js';
import { buildPart, tearDownPart } from './realize.js';
import {
  allocationsOf,
  labDir,
  readState,
  withLabLock,
  writeState,
  type LabBackend,
  type LabState,
} from './state.js';
import { buildTopology, topologyNetns, type Topology } from './topology.js';

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
}

export interface ConvergeResult {
  state: LabState;
  /** The lab's kernel state was missing or from an interrupted run, so it was rebuilt from scratch. */
  rebuilt: boolean;
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

function buildIROrFail(
  model: Model,
  nodeCount: number,
  prev: LabState | undefined,
  extra: Omit<CalcOptions, 'nodeCount'> = {},
): IR {
  try {
    return buildIR(model, {
      nodeCount,
      ...(prev ? { previous: prev.allocations } : {}),
      ...extra,
    });
  } catch (e) {
    throw new LabError((e as Error).message);
  }
}

async function applyBackend(
  backend: Backend,
  lab: string,
  topology: Topology,
  ir: IR,
  previous: IR | undefined,
): Promise<void> {
  for (const n of topology.nodes) {
    const known = previous?.nodes.some((p) => p.name === n.name);
    try {
      await backend.apply({ scope: lab, node: n.name, netns: n.netns }, ir, known ? previous : undefined);
    } catch (e) {
      throw new LabError(
        `the ${backend.name} backend failed on node ${n.name}: ${(e as Error).message}\n` +
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

export async function converge(opts: ConvergeOptions): Promise<ConvergeResult> {
  const started = performance.now();
  const name = checkLabName(opts.name);
  requireRoot(`switchyard lab ${opts.mode}`);
  requireTools(['ip', 'nsenter', 'sh']);
  const cgroupRoot = join(cgroup2Mount(), CGROUP_DIR, name);
  const progress = opts.progress ?? silentProgress;
  return withLabLock(name, async () => {
    const prev = readState(name);
    if (opts.mode === 'apply' && !prev) {
      throw new LabError(`lab '${name}' is not up: start it with 'switchyard lab up FILES --name ${name}'`);
    }
    if (prev?.cluster && !opts.cluster)
      throw new LabError(
        `lab '${name}' is a cluster: its desired state lives in etcd; change it with ` +
          `'switchyard apply FILES --lab ${name}' (or 'switchyard cluster down --name ${name}' first)`,
      );
    const backendName = opts.backend ?? prev?.backend ?? 'none';
    if (opts.cluster && backendName === 'none')
      throw new LabError(
        'a cluster needs a policy backend for its agents (--backend iptables|nftables|ebpf)',
      );
    const nodeCount = opts.nodeCount ?? prev?.nodeCount ?? DEFAULT_NODE_COUNT;
    const wantAgents = opts.cluster ? true : (opts.agents ?? prev?.agents ?? true);
    const agents = backendName !== 'none' && wantAgents;
    // Load first: an unavailable backend is reported before anything in the kernel changes.
    const backend = backendName === 'none' ? undefined : await loadBackend(backendName);
    const ir = buildIROrFail(opts.model, nodeCount, prev);

    // A run that died half-way, or namespaces that vanished, cannot be diffed against: start over
    // (keeping allocations, so addresses stay what they were).
    const rebuilt =
      prev !== undefined &&
      (prev.status !== 'ready' || !prev.topology || missingNetns(prev.topology).length > 0);
    const current = rebuilt ? undefined : prev?.topology;
    const topology = buildTopology(name, ir, prev?.topology ?? prev?.target);
    const plan: KernelPlan = planChanges(current, topology);
    if (rebuilt) {
      progress.phase('removing the broken lab', 1);
      const report = await destroyLab(name, { keepStateDir: true });
      if (report.problems.length > 0)
        throw new LabError(`cannot clean lab '${name}': ${report.problems.join('; ')}`);
      progress.tick();
    }

    // Someone else's namespace under one of our names (another lab whose name shares our prefix,
    // another tool): refuse before recording it as ours.
    const present = new Set(listNetns());
    const deleting = new Set(plan.deleteNetns);
    const clash = plan.createNetns.filter((n) => present.has(n) && !deleting.has(n));
    if (clash.length > 0) {
      throw new LabError(
        `network namespace ${clash.slice(0, 3).join(', ')}${clash.length > 3 ? ' …' : ''} already exists but is not ` +
          `part of lab '${name}' (another lab or tool uses the name): pick another --name, or remove it ` +
          `('switchyard lab down --name ${name}' removes what an earlier run of this lab left)`,
      );
    }

    const now = new Date().toISOString();
    const state: LabState = {
      version: 1,
      name,
      status: current ? 'applying' : 'creating',
      createdAt: current && prev ? prev.createdAt : now,
      updatedAt: now,
      backend: backendName,
      nodeCount,
      files: opts.files,
      model: opts.model,
      ir,
      ...(current && prev?.backendIR && prev.backend === backendName ? { backendIR: prev.backendIR } : {}),
      allocations: allocationsOf(ir),
      ...(current ? { topology: current } : {}),
      target: topology,
      cgroupRoot,
      ...(prev?.probe && !rebuilt ? { probe: prev.probe } : {}),
      agents: wantAgents,
      revision: opts.cluster ? opts.cluster.revision : (prev?.revision ?? 0) + 1,
      ...(opts.cluster ? { cluster: { etcd: opts.cluster.etcd } } : {}),
    };
    // Recorded before the first kernel change: a crash from here on is cleaned up by name.
    writeState(state);
    ensureCgroup(cgroupRoot);

    const dir = labDir(name);
    if (plan.removedPods.length > 0 && current) {
      const leaving = new Set(plan.removedPods.map((p) => p.id));
      writeProbeConfig(
        dir,
        name,
        cgroupRoot,
        current.pods.filter((p) => !leaving.has(p.id)),
      );
      await reloadIfRunning(dir, name, state.probe);
    }
    // Agents that would keep the old dataplane alive (or fight the lab applying it) go first.
    if (prev && (prev.backend !== backendName || !agents)) await stopLabAgents(name);
    if (prev && current && prev.backend !== backendName) await removeOldBackend(prev.backend, name, current);
    await tearDownPart(plan, cgroupRoot);
    await buildPart(plan, cgroupRoot, progress);

    progress.phase('probe server', 1);
    writeProbeConfig(dir, name, cgroupRoot, topology.pods);
    const synced = await syncProbeServer(dir, name, state.probe);
    state.probe = synced.info;
    // A pod is ready once its probe server listens: only ready pods back services (same
    // allocations, so nothing else in the IR moves).
    state.ir = buildIROrFail(opts.model, nodeCount, undefined, {
      previous: allocationsOf(ir),
      readyPods: synced.serving,
    });
    progress.tick();
    state.status = 'ready';
    state.topology = topology;
    delete state.target;
    writeState(state);

    const cgroups = Object.fromEntries(topology.pods.map((p) => [p.id, join(cgroupRoot, p.slug)]));
    if (backend && opts.cluster) {
      progress.phase(`${backend.name} policy (agents, etcd)`, 1);
      writeCgroups(name, cgroups);
      await syncLabAgents(
        name,
        topology.nodes,
        backend.name,
        String(opts.cluster.revision),
        `${ETCD_SOURCE_PREFIX}${opts.cluster.etcd}`,
        opts.cluster.unreachable ?? [],
      );
      state.backendIR = state.ir;
      writeState(state);
      progress.tick();
    } else if (backend && agents) {
      progress.phase(`${backend.name} policy (agents)`, 1);
      writeDesired(name, {
        revision: String(state.revision),
        ir: state.ir,
        model: opts.model,
        cgroups,
      });
      await syncLabAgents(name, topology.nodes, backend.name, String(state.revision));
      state.backendIR = state.ir;
      writeState(state);
      progress.tick();
    } else if (backend) {
      progress.phase(`${backend.name} policy`, 1);
      await applyBackend(backend, name, topology, state.ir, state.backendIR);
      state.backendIR = state.ir;
      writeState(state);
      progress.tick();
    }
    progress.done();
    return {
      state,
      rebuilt,
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
