/**
 * Map contents by difference. planSetSync reads the kernel (the offline node of the tests);
 * apply diffs against the backend's shadow instead (node-shadow.ts), which is one read of the
 * kernel whenever it is absent. Additions go in before programs are swapped and removals after
 * (see apply.ts).
 */
import type { BpfMap } from '../../bpf/index.js';
import type { PortSetKey, SetLpmKey } from './layout.js';
import {
  desiredPortEntries,
  desiredSetEntries,
  difference,
  portEntryId,
  readEntries,
  readKeys,
  setEntryId,
  type Difference,
  type NodeMaps,
} from './maps.js';
import type { Allocation, NodeView } from './node.js';
import { isIpv6Cidr } from './prefilter.js';

export interface SetSync {
  sets: Difference<SetLpmKey>;
  ports: Difference<PortSetKey>;
}

export function planSetSync(maps: NodeMaps, view: NodeView, alloc: Allocation): SetSync {
  return {
    sets: difference(readKeys(maps.ipSets, setEntryId), desiredSetEntries(view, alloc)),
    ports: difference(readKeys(maps.portSets, portEntryId), desiredPortEntries(view, alloc)),
  };
}

export function addSetMembers(maps: NodeMaps, plan: SetSync): number {
  const sets = maps.ipSets.updateBatch(plan.sets.add.map((k) => [k, 1] as const));
  const ports = maps.portSets.updateBatch(plan.ports.add.map((k) => [k, 1] as const));
  return sets + ports;
}

export function removeSetMembers(maps: NodeMaps, plan: SetSync): number {
  let removed = 0;
  // Tries and hashes refuse a batch delete at the first absent key; one by one is exact.
  for (const k of plan.sets.remove) if (maps.ipSets.delete(k)) removed++;
  removed += maps.portSets.deleteBatch(plan.ports.remove);
  return removed;
}

export interface PrefilterSync {
  /** New prefixes, or prefixes whose list changed. */
  upsert: [string, number][];
  remove: string[];
}

/** The node's two prefilter tries: IPv4 prefixes in one, IPv6 prefixes in the other. */
export type PrefilterTries = Pick<NodeMaps, 'pfTrie' | 'pfTrie6'>;

function trieOf(tries: PrefilterTries, cidr: string): BpfMap<string, number> {
  return isIpv6Cidr(cidr) ? tries.pfTrie6 : tries.pfTrie;
}

/**
 * What turns the tries into `desired` (both families). `known` is what the tries hold when the
 * caller knows it (the contents it wrote last, for million-entry lists); otherwise they are read.
 */
export function planPrefilterSync(
  tries: PrefilterTries,
  desired: ReadonlyMap<string, number>,
  known?: ReadonlyMap<string, number>,
): PrefilterSync {
  const current = known ?? new Map([...readEntries(tries.pfTrie), ...readEntries(tries.pfTrie6)]);
  const upsert: [string, number][] = [];
  for (const [cidr, list] of desired) if (current.get(cidr) !== list) upsert.push([cidr, list]);
  const remove: string[] = [];
  for (const cidr of current.keys()) if (!desired.has(cidr)) remove.push(cidr);
  return { upsert, remove };
}

export function applyPrefilterSync(tries: PrefilterTries, plan: PrefilterSync): void {
  const v4 = plan.upsert.filter(([cidr]) => !isIpv6Cidr(cidr));
  const v6 = plan.upsert.filter(([cidr]) => isIpv6Cidr(cidr));
  if (v4.length > 0) tries.pfTrie.updateBatch(v4);
  if (v6.length > 0) tries.pfTrie6.updateBatch(v6);
  for (const cidr of plan.remove) trieOf(tries, cidr).delete(cidr);
}
