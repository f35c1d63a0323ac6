/**
 * The pod → node map of internalTrafficPolicy Local (podNodeKey in services-layout.ts): the
 * connect-time programs are shared by every node of the scope, and nothing in a connect() names
 * the client's node, so each node's apply writes the cgroup ids of its own pods with its node
 * index, and removes the entries with its index it no longer wants (pods that left). What a node
 * wrote is kept as its shadow, so an apply that changes no pod writes and reads nothing; without
 * one (restart, other maps) the map is read once.
 */
import { statSync } from 'node:fs';
import type { BpfMap } from '../../bpf/index.js';
import type { IR } from '../../ir/types.js';
import type { PodNodeKey, PodNodeValue } from './services-layout.js';
import { nodeIndexOf } from './services-sync.js';

/** Which pods this node runs, and where their cgroups are (NodeTarget.podCgroups). */
export interface NodePods {
  node: string;
  /** Pod id → cgroup v2 directory (every pod of the scope; this node's are picked from the IR). */
  cgroups: Readonly<Record<string, string>>;
}

/** What one node wrote into the map. */
export interface PodNodeShadow {
  mapId: number;
  index: number;
  cgroups: Set<bigint>;
}

/** The cgroup ids of the node's pods whose cgroup exists (a missing one is written by a later apply). */
function podCgroupIds(ir: IR, pods: NodePods): Set<bigint> {
  const ids = new Set<bigint>();
  for (const e of ir.endpoints) {
    const path = e.node === pods.node ? pods.cgroups[e.id] : undefined;
    if (path === undefined) continue;
    try {
      ids.add(statSync(path, { bigint: true }).ino); // a cgroup2 directory's inode is its cgroup id
    } catch {
      // not created yet
    }
  }
  return ids;
}

/**
 * Brings the node's entries of `map` to its pods; returns the new shadow and whether anything
 * was written. A node the index has no room for writes nothing (its pods balance over every
 * backend, as desiredServices reports).
 */
export function syncPodNodes(
  map: BpfMap<PodNodeKey, PodNodeValue>,
  ir: IR,
  pods: NodePods,
  kept: PodNodeShadow | undefined,
): { shadow: PodNodeShadow; wrote: boolean } {
  const mapId = map.info.id;
  const index = nodeIndexOf(ir.nodes).get(pods.node) ?? 0;
  const want = index === 0 ? new Set<bigint>() : podCgroupIds(ir, pods);
  // What the map holds for us: our shadow, or one read (entries with our index, or that we wrote).
  let ours: Map<bigint, number>;
  if (kept && kept.mapId === mapId && kept.index === index)
    ours = new Map([...kept.cgroups].map((id) => [id, index]));
  else {
    ours = new Map();
    for (const [k, v] of map.entries())
      if (v.node === index || want.has(k.cgroup) || kept?.cgroups.has(k.cgroup)) ours.set(k.cgroup, v.node);
  }
  const writes: [PodNodeKey, PodNodeValue][] = [];
  for (const id of want) if (ours.get(id) !== index) writes.push([{ cgroup: id }, { node: index }]);
  const deletes: PodNodeKey[] = [];
  for (const id of ours.keys()) if (!want.has(id)) deletes.push({ cgroup: id });
  if (writes.length > 0) map.updateBatch(writes);
  if (deletes.length > 0) map.deleteBatch(deletes);
  return { shadow: { mapId, index, cgroups: want }, wrote: writes.length + deletes.length > 0 };
}
