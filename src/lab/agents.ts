/**
 * A lab runs one agent per node, as a real cluster runs one per host: `lab up` and `lab apply`
 * write the desired state (the IR with the addresses the lab allocated, the model, the pods'
 * cgroups) to the lab's `desired/` directory, and wait until every node's agent reports that
 * revision in force, or the error that kept it out.
 */
import { existsSync } from 'node:fs';
import { join, sep } from 'node:path';
import type { AgentStatus } from '../agent/agent.js';
import { agentRequest } from '../agent/client.js';
import { DESIRED_FILE, isEtcdSource, type DesiredState } from '../agent/desired.js';
import { AgentLaunchError, waitForAgent, type AgentWatch } from '../agent/launch.js';
import { AGENT_MARK, agentLog, apiSocket } from '../agent/paths.js';
import type { BackendName } from '../dataplane/backend.js';
import type { PolicyMode } from '../ir/decision-table.js';
import { cgroup2Mount } from '../netns/index.js';
import { argValue, findMarkedProcesses, type MarkedProcess } from '../netns/processes.js';
import { stopProcesses } from './detached.js';
import { labEtcdTls } from './etcd.js';
import { LabError } from './errors.js';
import { AGENTS_CGROUP, CGROUP_DIR } from './names.js';
import { labDir, isAlive } from './state.js';
import { launchSupervisor, SUPERVISOR_MARK } from './supervisor.js';
import { privateDir, writePrivateFileAtomic } from '../util/private-files.js';

export interface LabAgentNode {
  name: string;
  netns: string;
}

export interface AgentProcess {
  pid: number;
  scope: string;
  node: string;
  backend: string;
  source: string;
  stateDir: string;
  /** Its `--policy-mode` ('' when not given). */
  policyMode: string;
}

const START_TIMEOUT_MS = 60_000;
const APPLY_TIMEOUT_MS = 180_000;
/** How long an etcd-fed agent's failure may last before the lab reports it (it retries meanwhile). */
const ERROR_GRACE_MS = 10_000;

export function desiredDir(lab: string): string {
  return join(labDir(lab), 'desired');
}

export function agentStateDir(lab: string, node: string): string {
  return join(labDir(lab), 'agents', node);
}

function described({ pid, argv }: MarkedProcess): AgentProcess {
  return {
    pid,
    scope: argValue(argv, '--scope'),
    node: argValue(argv, '--node'),
    stateDir: argValue(argv, '--state-dir'),
    backend: argValue(argv, '--backend'),
    source: argValue(argv, '--source'),
    policyMode: argValue(argv, '--policy-mode'),
  };
}

/** Every agent process on the machine, by its command line. */
export function findAgents(): AgentProcess[] {
  return findMarkedProcesses(AGENT_MARK).map(described);
}

/** Every agent supervisor on the machine (src/lab/supervisor.ts), described by its agent's flags. */
export function findSupervisors(): AgentProcess[] {
  return findMarkedProcesses(SUPERVISOR_MARK).map(described);
}

function ofLab(lab: string): (a: AgentProcess) => boolean {
  const dir = desiredDir(lab);
  return (a) => a.scope === lab && (a.source === dir || isEtcdSource(a.source));
}

/** Agents of `lab`: started with its scope, watching its desired directory or an etcd. */
export function labAgents(lab: string): AgentProcess[] {
  return findAgents().filter(ofLab(lab));
}

/** The supervisors of `lab`'s agents. */
export function labSupervisors(lab: string): AgentProcess[] {
  return findSupervisors().filter(ofLab(lab));
}

/**
 * Each lab agent runs in a cgroup of its own, so a fault test can cut exactly one node's agent
 * off from etcd (src/lab/partition.ts) without touching anything else.
 */
export function agentCgroup(lab: string, node: string): string {
  return join(cgroup2Mount(), CGROUP_DIR, lab, AGENTS_CGROUP, node);
}

/**
 * Stops agents (SIGTERM: they leave the dataplane in force), all of the lab's or those `keep`
 * rejects. Their supervisors go first, so nothing starts them again; then the agents themselves,
 * which also finds agents whose supervisor was killed.
 */
export async function stopLabAgents(
  lab: string,
  keep: (a: AgentProcess) => boolean = () => false,
): Promise<number[]> {
  const supervisors = labSupervisors(lab)
    .filter((a) => !keep(a))
    .map((a) => a.pid);
  await stopProcesses(supervisors, 'SIGTERM');
  const pids = labAgents(lab)
    .filter((a) => !keep(a))
    .map((a) => a.pid);
  await stopProcesses(pids, 'SIGTERM');
  return [...supervisors, ...pids];
}

/** Agents and supervisors whose lab no longer exists (its state directory is gone): what a crash can leave. */
export async function stopOrphanAgents(labsRoot: string): Promise<number[]> {
  // A lab agent's source (desired/) or, watching etcd, its state directory lies in the lab's.
  const gone = (path: string): boolean => path.startsWith(`${labsRoot}${sep}`) && !existsSync(path);
  const orphan = (a: AgentProcess): boolean => gone(a.source) || (isEtcdSource(a.source) && gone(a.stateDir));
  const supervisors = findSupervisors()
    .filter(orphan)
    .map((a) => a.pid);
  await stopProcesses(supervisors, 'SIGKILL');
  const pids = findAgents()
    .filter(orphan)
    .map((a) => a.pid);
  await stopProcesses(pids, 'SIGKILL');
  return [...supervisors, ...pids];
}

/** Pod → cgroup of a cluster lab's pods: etcd does not know them, the lab writes them here. */
export function cgroupsFile(lab: string): string {
  return join(labDir(lab), 'cgroups.json');
}

export function writeCgroups(lab: string, cgroups: Record<string, string>): void {
  const path = cgroupsFile(lab);
  writePrivateFileAtomic(path, JSON.stringify(cgroups), `${path}.tmp`);
}

export function writeDesired(lab: string, state: DesiredState): void {
  const dir = desiredDir(lab);
  privateDir(dir);
  const path = join(dir, DESIRED_FILE);
  writePrivateFileAtomic(path, JSON.stringify(state), `${path}.tmp`);
}

/** The launcher's errors (exited, timed out) as the lab's, which the CLI prints as they are. */
function asLabError(e: unknown): unknown {
  return e instanceof AgentLaunchError ? new LabError(e.message, { cause: e }) : e;
}

/** Starts the node's agent under a supervisor (src/lab/supervisor.ts); returns the supervisor's pid. */
function startAgent(
  lab: string,
  node: LabAgentNode,
  backend: BackendName,
  source: string,
  policyMode: PolicyMode | undefined,
): number {
  return launchSupervisor({
    node: node.name,
    netns: node.netns,
    backend,
    scope: lab,
    source,
    ...(policyMode ? { policyMode } : {}),
    stateDir: agentStateDir(lab, node.name),
    ...(isEtcdSource(source) ? { cgroupsFile: cgroupsFile(lab), etcdTls: labEtcdTls(lab) } : {}),
    cgroup: agentCgroup(lab, node.name),
    // Every lab agent serves Prometheus metrics on a loopback port the kernel picks (no two labs
    // collide); the agent records it in its state directory and `node status` shows it.
    metrics: LAB_AGENT_METRICS,
  });
}

/** Loopback, any free port. */
export const LAB_AGENT_METRICS = '127.0.0.1:0';

export interface SyncAgentsOptions {
  /** Default the lab's `desired/` directory. */
  source?: string;
  /** Nodes whose agents cannot hear of the revision (cut off from etcd): not waited for. */
  unreachable?: readonly string[];
  /** For agents that compile the desired state themselves (etcd); a lab's `desired/` carries its IR. */
  policyMode?: PolicyMode;
}

/**
 * Makes the lab's agents exactly one per node with `backend` (agents of other backends or of
 * nodes that left are stopped), then waits until each has `revision` in force.
 */
export async function syncLabAgents(
  lab: string,
  nodes: readonly LabAgentNode[],
  backend: BackendName,
  revision: string,
  opts: SyncAgentsOptions = {},
): Promise<void> {
  const { source = desiredDir(lab), unreachable = [], policyMode } = opts;
  const wanted = new Map(nodes.map((n) => [n.name, n]));
  await stopLabAgents(
    lab,
    (a) =>
      a.backend === backend &&
      a.source === source &&
      a.policyMode === (policyMode ?? '') &&
      wanted.get(a.node)?.netns !== undefined,
  );
  // A supervised agent is watched through its supervisor, which outlives the agent's restarts.
  const running = new Map(labAgents(lab).map((a) => [a.node, a.pid]));
  for (const s of labSupervisors(lab)) running.set(s.node, s.pid);
  const pids = new Map<string, number>();
  for (const n of nodes)
    pids.set(n.name, running.get(n.name) ?? startAgent(lab, n, backend, source, policyMode));
  // Agents watching etcd may have seen the write before the lab built what it needs (a new pod's
  // interface): ask them to try again now, and give their failures a moment to clear.
  const fromEtcd = isEtcdSource(source);
  if (fromEtcd)
    await Promise.all(
      [...running.keys()].map((node) =>
        agentRequest(apiSocket(agentStateDir(lab, node)), '/v1/sync', {
          method: 'POST',
          timeoutMs: 5000,
        }).catch(() => undefined),
      ),
    );
  await Promise.all(
    nodes
      .filter((n) => !unreachable.includes(n.name))
      .map((n) =>
        waitForRevision(lab, n.name, pids.get(n.name) ?? 0, revision, fromEtcd ? ERROR_GRACE_MS : 0),
      ),
  );
}

/**
 * Whether `have` is `wanted` or newer. Revisions count up (the lab's, and etcd's, where an agent
 * may already be past the write it is waited for).
 */
export function reached(have: string | undefined, wanted: string): boolean {
  if (have === wanted) return true;
  if (have === undefined || !/^\d+$/.test(have) || !/^\d+$/.test(wanted)) return false;
  return Number(have) >= Number(wanted);
}

/** Whether the agent's status shows `revision` in force; throws once its error has lasted `graceMs`. */
function revisionInForce(node: string, revision: string, graceMs: number): (s: AgentStatus) => boolean {
  let failingSince: number | undefined;
  return (s) => {
    if (reached(s.revision, revision) && reached(s.desiredRevision, revision) && !s.lastError) return true;
    const failing =
      s.lastError !== undefined &&
      reached(s.desiredRevision, revision) &&
      reached(s.lastError.revision ?? revision, revision);
    failingSince = failing ? (failingSince ?? Date.now()) : undefined;
    if (s.lastError && failingSince !== undefined && Date.now() - failingSince >= graceMs)
      throw new LabError(
        `the ${s.backend} backend failed on node ${node}: ${s.lastError.message}\n` +
          `(the previous state stays in force; fix the cause and run 'switchyard lab apply')`,
      );
    return false;
  };
}

/** Waits for the agent of `node` (started by this or an earlier command, so watched by pid). */
async function waitForRevision(
  lab: string,
  node: string,
  pid: number,
  revision: string,
  graceMs = 0,
): Promise<void> {
  const stateDir = agentStateDir(lab, node);
  const agent: AgentWatch = {
    pid,
    socket: apiSocket(stateDir),
    what: `the agent of node ${node}`,
    log: agentLog(stateDir),
    exitCode: () => (isAlive(pid) ? undefined : null),
  };
  try {
    await waitForAgent(agent, {
      until: revisionInForce(node, revision, graceMs),
      goal: `put revision ${revision} in force`,
      timeoutMs: APPLY_TIMEOUT_MS,
      startTimeoutMs: START_TIMEOUT_MS,
      pollMs: 15,
    });
  } catch (e) {
    throw asLabError(e);
  }
}
