import type { AgentStatus } from '../agent/api-types.js';
import { agentRequest } from '../agent/client.js';
import { apiSocket } from '../agent/paths.js';
import { listNetns } from '../netns/index.js';
import { agentStateDir, labAgents, labSupervisors, reached } from './agents.js';
import { isProbeServer } from './probe/control.js';
import { readState, stateLabs, type LabBackend, type LabStatus } from './state.js';
import type { LabLoadBalancer, LabOutside } from './outside.js';
import { topologyNetns, type LabPod } from './topology.js';

export interface LabSummary {
  name: string;
  /** `failed`: the lab's latest revision is not in force on some node (its agent reports why). */
  status: LabStatus | 'failed' | 'unreadable';
  /** The desired state's revision the lab last wrote (what every agent should have in force). */
  revision?: number;
  backend?: LabBackend;
  nodes: number;
  pods: number;
  probeServer?: { pid: number; running: boolean };
  /** Namespaces the state names that are missing from the kernel (a damaged lab). */
  missingNetns: string[];
  /** Pods born closed and not plugged yet: their policy is not in force (state.ts `closed`). */
  closed: string[];
  updatedAt?: string;
}

/**
 * What a node's agent says: `ok` (the lab's revision in force), `applying` (not yet, no error),
 * `failed` (it reports an error: the previous revision stays in force), `down` (no answer).
 */
export type NodeAgentState = 'ok' | 'applying' | 'failed' | 'down';

export interface LabNode {
  name: string;
  netns: string;
  address: string;
  /** Where the outside reaches the node (node ports). */
  externalAddress?: string;
  pods: number;
  /** The pid of the node's agent, when one runs. */
  agent?: number;
  /** The pid of its supervisor, which restarts it. */
  supervisor?: number;
  /** Only with agents (labDetail): the revision the node has in force, and how that compares. */
  revision?: string;
  state?: NodeAgentState;
  error?: string;
  restarts?: number;
}

export interface LabDetail extends LabSummary {
  nodeList: LabNode[];
  podList: LabPod[];
  /** Client namespaces outside the cluster (`lab probe --from outside:NAME`). */
  outsideList: LabOutside[];
  /** Load-balancer addresses and the node external addresses the fabric routes each to. */
  loadBalancers: LabLoadBalancer[];
}

export function labSummary(name: string, present = new Set(listNetns())): LabDetail {
  let state;
  try {
    state = readState(name);
  } catch {
    state = undefined;
  }
  if (!state)
    return {
      name,
      status: 'unreadable',
      nodes: 0,
      pods: 0,
      missingNetns: [],
      closed: [],
      nodeList: [],
      podList: [],
      outsideList: [],
      loadBalancers: [],
    };
  const t = state.topology ?? state.target;
  const probe = state.probe;
  const agents = new Map(labAgents(name).map((a) => [a.node, a.pid]));
  const supervisors = new Map(labSupervisors(name).map((a) => [a.node, a.pid]));
  return {
    name,
    status: state.status,
    ...(state.revision !== undefined ? { revision: state.revision } : {}),
    backend: state.backend,
    nodes: t?.nodes.length ?? 0,
    pods: t?.pods.length ?? 0,
    ...(probe ? { probeServer: { pid: probe.pid, running: isProbeServer(probe.pid, name) } } : {}),
    missingNetns: t ? topologyNetns(t).filter((n) => !present.has(n)) : [],
    closed: state.closed ?? [],
    updatedAt: state.updatedAt,
    nodeList: (t?.nodes ?? []).map((n) => ({
      name: n.name,
      netns: n.netns,
      address: n.address,
      ...(n.externalAddress ? { externalAddress: n.externalAddress } : {}),
      pods: (t?.pods ?? []).filter((p) => p.node === n.name).length,
      ...(agents.has(n.name) ? { agent: agents.get(n.name) } : {}),
      ...(supervisors.has(n.name) ? { supervisor: supervisors.get(n.name) } : {}),
    })),
    podList: t?.pods ?? [],
    outsideList: t?.outside ?? [],
    loadBalancers: t?.loadBalancers ?? [],
  };
}

export function allLabSummaries(): LabSummary[] {
  const present = new Set(listNetns());
  return stateLabs().map((n) => {
    const {
      nodeList: _n,
      podList: _p,
      outsideList: _o,
      loadBalancers: _l,
      ...summary
    } = labSummary(n, present);
    return summary;
  });
}

const STATUS_TIMEOUT_MS = 2000;

function nodeState(s: AgentStatus, revision: string): NodeAgentState {
  if (s.lastError) return 'failed';
  return reached(s.revision, revision) ? 'ok' : 'applying';
}

/** Each node's agent asked what it has in force (nodes without an agent or supervisor are left as they are). */
async function withAgentStates(d: LabDetail, agents: boolean): Promise<LabDetail> {
  if (!agents || d.revision === undefined) return d;
  const revision = String(d.revision);
  const nodeList = await Promise.all(
    d.nodeList.map(async (n): Promise<LabNode> => {
      try {
        const s = await agentRequest<AgentStatus>(apiSocket(agentStateDir(d.name, n.name)), '/v1/status', {
          timeoutMs: STATUS_TIMEOUT_MS,
        });
        return {
          ...n,
          ...(s.revision !== undefined ? { revision: s.revision } : {}),
          state: nodeState(s, revision),
          ...(s.lastError ? { error: s.lastError.message.split('\n')[0] ?? '' } : {}),
          restarts: s.restarts ?? 0,
        };
      } catch {
        return { ...n, state: 'down' };
      }
    }),
  );
  const failed = d.status === 'ready' && nodeList.some((n) => n.state === 'failed');
  return { ...d, nodeList, status: failed ? 'failed' : d.status };
}

/** labSummary, with each node's revision in force and state as its agent reports them. */
export async function labDetail(name: string, present = new Set(listNetns())): Promise<LabDetail> {
  const d = labSummary(name, present);
  let agents = false;
  try {
    agents = readState(name)?.agents === true;
  } catch {
    // unreadable: nothing to ask
  }
  return withAgentStates(d, agents);
}

/** allLabSummaries, where a lab whose latest revision failed on a node is `failed`. */
export async function allLabStatuses(): Promise<LabSummary[]> {
  const present = new Set(listNetns());
  return Promise.all(
    stateLabs().map(async (n) => {
      const { nodeList: _n, podList: _p, ...summary } = await labDetail(n, present);
      return summary;
    }),
  );
}
