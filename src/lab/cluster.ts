/**
 * Cluster mode in the lab: a real etcd holds the desired state and every node's agent watches it,
 * as felix watches Calico's datastore. The lab plays the rest of a cluster: it builds pods'
 * namespaces, links and probe servers from what etcd says (the kubelet and CNI's part), so a pod
 * written with `switchyard apply --lab` gets a network as well as a policy.
 */
import { existsSync } from 'node:fs';
import type { BackendName } from '../dataplane/backend.js';
import type { PolicyMode } from '../ir/decision-table.js';
import { applyManifests, type WriteResult } from '../datastore/apply.js';
import { storedDocument } from '../datastore/documents.js';
import { EtcdStore } from '../datastore/etcd.js';
import { formatIssue, validateManifestDocuments } from '../model/index.js';
import { requireRoot } from '../netns/index.js';
import type { AgentStatus } from '../agent/agent.js';
import { agentRequest } from '../agent/client.js';
import { apiSocket } from '../agent/paths.js';
import { agentCgroup, agentStateDir, labAgents } from './agents.js';
import { converge, type ConvergeResult } from './converge.js';
import { destroyLab } from './down.js';
import { LabError } from './errors.js';
import {
  etcdLeader,
  etcdRunning,
  isMember,
  killEtcd,
  killEtcdMember,
  readEtcdInfo,
  restartEtcd,
  startEtcd,
  type EtcdInfo,
  type EtcdMember,
  type EtcdMemberCount,
} from './etcd.js';
import { checkLabName } from './names.js';

export { DEFAULT_CLUSTER } from './names.js';
import { cutOff, heal, isCutOff } from './partition.js';
import type { Progress } from './progress.js';
import { privateLabDir, readState } from './state.js';
import { errorMessage } from '../util/errors.js';

export interface ClusterUpOptions {
  name: string;
  files: string[];
  backend: BackendName;
  nodeCount?: number;
  /** etcd members: 1 (default: the running etcd's count) or 3. */
  etcdMembers?: EtcdMemberCount;
  /** Default: the lab's current mode, else DEFAULT_POLICY_MODE. */
  policyMode?: PolicyMode;
  progress?: Progress;
}

export interface ClusterConverge {
  lab: ConvergeResult;
  /** Nodes cut off from etcd: they catch up once healed, nobody waited for them. */
  pending: string[];
}

export interface ClusterResult extends ClusterConverge {
  etcd: EtcdInfo;
  write: WriteResult;
}

/** The etcd of a cluster lab (URL), or a clear error. */
export function clusterEtcd(name: string): EtcdInfo {
  const state = readState(checkLabName(name));
  const info = readEtcdInfo(name);
  if (!state?.cluster || !info)
    throw new LabError(
      `lab '${name}' is not a cluster: start one with 'switchyard cluster up FILES --lab ${name}'`,
    );
  return info;
}

/** A client of the lab's etcd: every member, authenticated with the lab's client certificate. */
function storeOf(info: EtcdInfo): EtcdStore {
  return new EtcdStore(info.clientUrl, info.tls);
}

/**
 * Makes the lab's pods what etcd says, at the store's current revision, and waits until every
 * node's agent has that revision (or a newer one) in force.
 */
async function convergeFromStore(
  name: string,
  store: EtcdStore,
  opts: { mode: 'up' | 'apply'; backend?: BackendName; policyMode?: PolicyMode; progress?: Progress },
): Promise<ClusterConverge> {
  const snap = await store.snapshot();
  const documents = [...snap.objects.values()].map((o) => storedDocument(o.key, o.value));
  const { model, issues } = validateManifestDocuments(documents);
  if (!model)
    throw new LabError(`the desired state in etcd is invalid:\n${issues.map(formatIssue).join('\n')}`);
  const unreachable = (readState(name)?.topology?.nodes ?? [])
    .filter((n) => isCutOff(name, n.name))
    .map((n) => n.name);
  const lab = await converge({
    name,
    model,
    files: [store.url],
    mode: opts.mode,
    ...(opts.backend ? { backend: opts.backend } : {}),
    ...(opts.policyMode ? { policyMode: opts.policyMode } : {}),
    ...(snap.cluster.nodeCount ? { nodeCount: snap.cluster.nodeCount } : {}),
    ...(opts.progress ? { progress: opts.progress } : {}),
    cluster: { etcd: store.url, revision: snap.revision, unreachable },
  });
  return { lab, pending: unreachable };
}

/** `switchyard cluster up`: etcd, the manifests in it (they become the whole desired state), the lab, one agent per node. */
export async function clusterUp(opts: ClusterUpOptions): Promise<ClusterResult> {
  const name = checkLabName(opts.name);
  requireRoot('switchyard cluster up');
  const fresh = readState(name) === undefined;
  privateLabDir(name);
  const etcd = await startEtcd(name, opts.etcdMembers ? { members: opts.etcdMembers } : {});
  const store = storeOf(etcd);
  try {
    const snap = await store.snapshot();
    const nodeCount = opts.nodeCount ?? snap.cluster.nodeCount;
    if (nodeCount !== undefined && nodeCount !== snap.cluster.nodeCount)
      await store.setCluster({ nodeCount });
    const write = await applyManifests(store, opts.files, { prune: true });
    const done = await convergeFromStore(name, store, {
      mode: 'up',
      backend: opts.backend,
      ...(opts.policyMode ? { policyMode: opts.policyMode } : {}),
      ...(opts.progress ? { progress: opts.progress } : {}),
    });
    return { etcd, write, ...done };
  } catch (e) {
    // A cluster that never came up leaves nothing behind; one that was up keeps running.
    if (fresh) await destroyLab(name).catch(() => undefined);
    throw e;
  } finally {
    store.close();
  }
}

/**
 * `switchyard apply --lab`: writes to the lab's etcd, then builds what new pods need and waits
 * until every agent has the write in force.
 */
export async function clusterApply(
  name: string,
  files: readonly string[],
  opts: { prune?: boolean; progress?: Progress } = {},
): Promise<ClusterConverge & { write: WriteResult }> {
  // Before anything is written: a write the lab cannot then build would be half an apply.
  requireRoot('switchyard apply --lab');
  const store = storeOf(clusterEtcd(name));
  try {
    const write = await applyManifests(store, files, opts.prune ? { prune: true } : {});
    const done = await convergeFromStore(name, store, {
      mode: 'apply',
      ...(opts.progress ? { progress: opts.progress } : {}),
    });
    return { write, ...done };
  } finally {
    store.close();
  }
}

/** Brings the lab (and its agents) up to etcd's current revision, after writes by other means. */
export async function clusterConverge(name: string, progress?: Progress): Promise<ClusterConverge> {
  requireRoot('switchyard cluster');
  const store = storeOf(clusterEtcd(name));
  try {
    return await convergeFromStore(name, store, { mode: 'apply', ...(progress ? { progress } : {}) });
  } finally {
    store.close();
  }
}

/**
 * Kills the cluster's etcd, every member or only the Raft leader (SIGKILL: what a crash does;
 * acknowledged writes are on disk, and with three members on the two others as well).
 * Returns the members killed.
 */
export async function killClusterEtcd(name: string, opts: { leader?: boolean } = {}): Promise<EtcdMember[]> {
  requireRoot('switchyard cluster etcd kill');
  const info = clusterEtcd(name);
  if (opts.leader) return [await killEtcdMember(name, (await etcdLeader(name)).name)];
  await killEtcd(name, 'SIGKILL');
  return info.members;
}

/** Starts the members of the cluster's etcd that are not running. */
export async function restartClusterEtcd(name: string): Promise<EtcdInfo> {
  requireRoot('switchyard cluster etcd start');
  clusterEtcd(name);
  return etcdRunning(name) ? (readEtcdInfo(name) as EtcdInfo) : restartEtcd(name);
}

/** The cluster's etcd client, for callers outside the lab (bench, demo): close it when done. */
export function clusterStore(name: string): EtcdStore {
  return storeOf(clusterEtcd(name));
}

function clusterNode(name: string, node: string): void {
  const state = readState(name);
  const nodes = state?.topology?.nodes.map((n) => n.name) ?? [];
  if (!nodes.includes(node))
    throw new LabError(`lab '${name}' has no node '${node}' (nodes: ${nodes.join(', ') || 'none'})`);
}

/**
 * Cuts one node's agent off from etcd: its packets to and from etcd's port are dropped in the
 * kernel (cgroup programs on the agent's cgroup), as a partition would. The node's dataplane
 * and its pods are not touched.
 */
export async function partitionNode(name: string, node: string): Promise<void> {
  requireRoot('switchyard cluster cut');
  const etcd = clusterEtcd(name);
  if (etcd.members.length !== 1)
    throw new LabError(
      `'cluster cut' cuts a node off a one-member etcd; lab '${name}' has ${etcd.members.length}`,
    );
  clusterNode(name, node);
  const cgroup = agentCgroup(name, node);
  if (!existsSync(cgroup))
    throw new LabError(`node ${node} has no agent cgroup (${cgroup}): is its agent running?`);
  await cutOff({ lab: name, node, cgroup, port: Number(new URL(etcd.clientUrl).port) });
}

export async function healNode(name: string, node: string): Promise<boolean> {
  requireRoot('switchyard cluster heal');
  clusterNode(name, node);
  return heal({ lab: name, node });
}

export interface ClusterNodeStatus {
  node: string;
  agentPid?: number;
  /** Revision the agent has in force. */
  revision?: string;
  connected?: boolean;
  cutOff: boolean;
  lastError?: string;
}

export interface ClusterStatus {
  name: string;
  etcd: {
    url: string;
    members: { name: string; pid: number; clientUrl: string; running: boolean; leader: boolean }[];
    /** Every member runs. */
    running: boolean;
    revision?: number;
  };
  nodes: ClusterNodeStatus[];
}

/** `cluster status`: etcd, and what each node's agent says about itself. */
export async function clusterStatus(name: string): Promise<ClusterStatus> {
  requireRoot('switchyard cluster status');
  const etcd = clusterEtcd(name);
  const state = readState(name);
  const agents = new Map(labAgents(name).map((a) => [a.node, a.pid]));
  const running = etcdRunning(name);
  const store = storeOf(etcd);
  const revision = await store.snapshotRevision().catch(() => undefined);
  store.close();
  const leader = await etcdLeader(name).catch(() => undefined);
  const members = etcd.members.map((m) => ({
    name: m.name,
    pid: m.pid,
    clientUrl: m.clientUrl,
    running: isMember(m, name),
    leader: m.name === leader?.name,
  }));
  const nodes = await Promise.all(
    (state?.topology?.nodes ?? []).map(async (n): Promise<ClusterNodeStatus> => {
      const out: ClusterNodeStatus = { node: n.name, cutOff: isCutOff(name, n.name) };
      const pid = agents.get(n.name);
      if (pid === undefined) return out;
      out.agentPid = pid;
      try {
        const s = await agentRequest<AgentStatus>(apiSocket(agentStateDir(name, n.name)), '/v1/status', {
          timeoutMs: 2000,
        });
        if (s.revision !== undefined) out.revision = s.revision;
        if (typeof s.sourceStats?.connected === 'boolean') out.connected = s.sourceStats.connected;
        if (s.lastError) out.lastError = s.lastError.message;
      } catch (e) {
        out.lastError = `no answer: ${errorMessage(e)}`;
      }
      return out;
    }),
  );
  return {
    name,
    etcd: { url: etcd.clientUrl, members, running, ...(revision !== undefined ? { revision } : {}) },
    nodes,
  };
}
