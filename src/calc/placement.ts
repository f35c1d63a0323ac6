/**
 * Which node each pod runs on. Pods naming a node keep it; others keep their previous node
 * (a running lab must not move pods on update) or go to the least loaded node, ties by name.
 */
import { podKey, type Pod } from '../model/types.js';

export function nodeNames(
  pods: readonly Pod[],
  nodeCount: number,
  previous: Record<string, string> = {},
): string[] {
  const named = new Set<string>();
  for (const p of pods) {
    // A node survives an update through the pods still on it, not through pods that are gone.
    const node = p.nodeName ?? previous[podKey(p)];
    if (node) named.add(node);
  }
  const nodes = [...named].sort();
  for (let i = 1; nodes.length < nodeCount; i++) {
    const name = `node-${i}`;
    if (!named.has(name)) nodes.push(name);
  }
  return nodes.sort();
}

export function placePods(
  pods: readonly Pod[],
  nodes: readonly string[],
  previous: Record<string, string> = {},
): Map<string, string> {
  const placement = new Map<string, string>();
  const load = new Map<string, number>(nodes.map((n) => [n, 0]));
  const sorted = [...pods].sort((a, b) => (podKey(a) < podKey(b) ? -1 : 1));
  const assign = (pod: Pod, node: string): void => {
    placement.set(podKey(pod), node);
    load.set(node, (load.get(node) ?? 0) + 1);
  };
  const unplaced: Pod[] = [];
  for (const pod of sorted) {
    const node = pod.nodeName ?? previous[podKey(pod)];
    if (node && load.has(node)) assign(pod, node);
    else unplaced.push(pod);
  }
  for (const pod of unplaced) {
    let best = nodes[0] as string;
    for (const n of nodes) if ((load.get(n) ?? 0) < (load.get(best) ?? 0)) best = n;
    assign(pod, best);
  }
  return placement;
}
