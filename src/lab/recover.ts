/**
 * What an interrupted run (a killed `lab apply`) really left in the kernel, so the next run can
 * converge from there instead of rebuilding the lab. Only the pods' and nodes' plumbing is read
 * back; policy stays with the agents (or the backend), which kept enforcing throughout.
 */
import { join } from 'node:path';
import {
  deleteNetns,
  ipBatch,
  listNetns,
  removeCgroupTree,
  requireTool,
  runCommand,
} from '../netns/index.js';
import type { NamespaceBatch } from './plan.js';
import type { LabState } from './state.js';
import { topologyNetns, type LabPod, type Topology } from './topology.js';

export interface Recovery {
  /** The part of the recorded topology that is whole in the kernel: the next plan diffs against it. */
  current: Topology;
  /** Namespaces the interrupted run made (or half-removed) that `current` does not own. */
  staleNetns: string[];
  /** Pods living in those namespaces: their cgroups (and anything running there) go too. */
  stalePods: LabPod[];
  /** Their host-side links and fabric ends, deleted with -force before anything is built. */
  staleLinks: NamespaceBatch[];
}

/** Link names in a namespace (`ip -o link`: "3: name@peer: <…>"). */
async function linkNames(netns: string): Promise<Set<string>> {
  const r = await runCommand(requireTool('ip'), ['-n', netns, '-o', 'link', 'show']);
  if (r.code !== 0) throw new Error(`ip -n ${netns} link show failed: ${r.stderr.trim()}`);
  return new Set(
    r.stdout
      .split('\n')
      .map((l) => l.split(': ')[1]?.split('@')[0] ?? '')
      .filter(Boolean),
  );
}

function samePlace(a: LabPod, b: LabPod): boolean {
  return (
    a.node === b.node && a.hostInterface === b.hostInterface && a.address === b.address && a.netns === b.netns
  );
}

/**
 * Undefined when the lab cannot be recovered in place (no topology recorded, the fabric or a node
 * of it is gone, an interrupted run was re-addressing nodes or switching backends): then it is
 * rebuilt, still born closed.
 */
export async function recoverTopology(prev: LabState): Promise<Recovery | undefined> {
  const t = prev.topology;
  if (!t || prev.switchingFrom !== undefined) return undefined;
  const present = new Set(listNetns());
  if (!present.has(t.fabricNetns) || t.nodes.some((n) => !present.has(n.netns))) return undefined;
  const target = prev.target;
  const readdressed = target?.nodes.some((n) => {
    const old = t.nodes.find((o) => o.name === n.name);
    return old !== undefined && old.address !== n.address;
  });
  if (readdressed) return undefined;
  const nodeNetns = new Map(t.nodes.map((n) => [n.name, n.netns]));
  const links = new Map(
    await Promise.all(t.nodes.map(async (n) => [n.name, await linkNames(n.netns)] as const)),
  );
  const whole = (p: LabPod): boolean =>
    present.has(p.netns) && links.get(p.node)?.has(p.hostInterface) === true;
  const fabricLinks = await linkNames(t.fabricNetns);
  // An outside client is whole with its namespace and its fabric end; otherwise it is made anew.
  const outside = t.outside?.filter((o) => present.has(o.netns) && fabricLinks.has(o.fabricPeer));
  const current: Topology = { ...t, pods: t.pods.filter(whole), ...(outside ? { outside } : {}) };
  const owned = new Set(topologyNetns(current));
  const named = [...topologyNetns(t), ...(target ? topologyNetns(target) : [])];
  const staleNetns = [...new Set(named)].filter((n) => present.has(n) && !owned.has(n));
  // Host ends the interrupted run made for pods `current` does not have where it has them.
  const byNode = new Map<string, string[]>();
  for (const p of [...t.pods, ...(target?.pods ?? [])]) {
    if (current.pods.some((c) => c.id === p.id && samePlace(c, p))) continue;
    if (!links.get(p.node)?.has(p.hostInterface)) continue;
    if (current.pods.some((c) => c.node === p.node && c.hostInterface === p.hostInterface)) continue;
    byNode.set(p.node, [...(byNode.get(p.node) ?? []), `link del ${p.hostInterface}`]);
  }
  const staleLinks: NamespaceBatch[] = [...byNode].map(([node, lines]) => ({
    netns: nodeNetns.get(node) as string,
    lines: [...new Set(lines)],
  }));
  const arriving = (target?.nodes ?? [])
    .filter((n) => !nodeNetns.has(n.name))
    .map((n) => `link del ${n.fabricPeer}`);
  const kept = new Set((current.outside ?? []).map((o) => o.fabricPeer));
  const halfMade = [...(t.outside ?? []), ...(target?.outside ?? [])]
    .filter((o) => !kept.has(o.fabricPeer) && fabricLinks.has(o.fabricPeer))
    .map((o) => `link del ${o.fabricPeer}`);
  const fabricStale = [...new Set([...arriving, ...halfMade])];
  if (fabricStale.length > 0) staleLinks.push({ netns: t.fabricNetns, lines: fabricStale });
  const stale = new Set(staleNetns);
  const stalePods = [...t.pods, ...(target?.pods ?? [])].filter((p) => stale.has(p.netns));
  return {
    current,
    staleNetns,
    stalePods: [...new Map(stalePods.map((p) => [p.slug, p])).values()],
    staleLinks,
  };
}

/** Removes what the interrupted run left outside `current`: cgroups, links, then namespaces. */
export async function clearStale(r: Recovery, cgroupRoot: string): Promise<void> {
  const stuck = (
    await Promise.all(r.stalePods.map((p) => removeCgroupTree(join(cgroupRoot, p.slug))))
  ).flat();
  if (stuck.length > 0) throw new Error(`cannot remove cgroups: ${stuck.join(', ')}`);
  await Promise.all(r.staleLinks.map((b) => ipBatch(b.lines, { netns: b.netns, force: true })));
  const left = await deleteNetns(r.staleNetns);
  if (left.length > 0) throw new Error(`cannot delete network namespaces: ${left.join(', ')}`);
}
