import { listNetns } from '../netns/index.js';
import { labAgents } from './agents.js';
import { isProbeServer } from './probe/control.js';
import { readState, stateLabs, type LabBackend, type LabStatus } from './state.js';
import { topologyNetns, type LabPod } from './topology.js';

export interface LabSummary {
  name: string;
  status: LabStatus | 'unreadable';
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

export interface LabDetail extends LabSummary {
  /** `agent` is the pid of the node's agent, when one runs. */
  nodeList: { name: string; netns: string; address: string; pods: number; agent?: number }[];
  podList: LabPod[];
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
    };
  const t = state.topology ?? state.target;
  const probe = state.probe;
  const agents = new Map(labAgents(name).map((a) => [a.node, a.pid]));
  return {
    name,
    status: state.status,
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
      pods: (t?.pods ?? []).filter((p) => p.node === n.name).length,
      ...(agents.has(n.name) ? { agent: agents.get(n.name) } : {}),
    })),
    podList: t?.pods ?? [],
  };
}

export function allLabSummaries(): LabSummary[] {
  const present = new Set(listNetns());
  return stateLabs().map((n) => {
    const { nodeList: _n, podList: _p, ...summary } = labSummary(n, present);
    return summary;
  });
}
