/**
 * previous NftRuleset → next when only set and map members changed (a remote pod relabelled, a
 * pod added to a peer set, an interface's dispatch entry): the element changes alone, in kernel
 * form, for one nfnetlink transaction (nfnetlink.ts commitElements). `nft -f` cannot write them
 * cheaply: 1.0.6 loads every interval set's elements into its cache before even a one-element
 * change (about 2 s for a table of 10k endpoints). Undefined whenever anything else differs — a
 * chain's rules, an object declared or deleted, a set shape not in elements.ts, a change too large
 * for one batch: then the caller writes the nft diff (diff.ts), which is just as atomic.
 */
import { byName, elementChange, sameList } from './diff.js';
import { kernelElements, shapeOf, type KernelElement } from './elements.js';
import type { NftChain, NftRuleset, NftSet } from './objects.js';

/** Elements one transaction carries at most (a few hundred kB of netlink); larger changes go to nft. */
export const MAX_DELTA_ELEMENTS = 2048;

export interface SetElementChange {
  kind: 'set' | 'map';
  name: string;
  /** Every element is deleted first (a change touching most of the set refills it). */
  flush: boolean;
  remove: KernelElement[];
  add: KernelElement[];
}

function sameObjects<T extends { name: string }>(
  prev: readonly T[],
  next: readonly T[],
  same: (a: T, b: T) => boolean,
): boolean {
  if (prev.length !== next.length) return false;
  const prevByName = byName(prev);
  return next.every((n) => {
    const p = prevByName.get(n.name);
    return p !== undefined && (p === n || same(p, n));
  });
}

const sameChain = (a: NftChain, b: NftChain): boolean =>
  a.spec === b.spec && a.base === b.base && sameList(a.rules, b.rules);
const sameDeclaration = (a: NftSet, b: NftSet): boolean => a.kind === b.kind && a.spec === b.spec;

/** The element changes from `prev` to `next`, when they are all there is to write (see above). */
export function memberDelta(prev: NftRuleset, next: NftRuleset): SetElementChange[] | undefined {
  if (!sameObjects(prev.chains, next.chains, sameChain)) return undefined;
  const prevSets = [...prev.sets, ...prev.maps];
  const nextSets = [...next.sets, ...next.maps];
  if (!sameObjects(prevSets, nextSets, sameDeclaration)) return undefined;
  return elementDeltas(prevSets, nextSets);
}

/**
 * The element changes of the sets and maps in both `prev` and `next` (a set only in `next` is
 * filled by its writer, one only in `prev` deleted), in kernel form; undefined when one of them
 * has no shape in elements.ts, was declared anew, or the change is too large for one batch.
 */
export function elementDeltas(
  prevSets: readonly NftSet[],
  nextSets: readonly NftSet[],
): SetElementChange[] | undefined {
  const prevSet = byName(prevSets);
  const out: SetElementChange[] = [];
  let count = 0;
  for (const set of nextSets) {
    const before = prevSet.get(set.name);
    if (!before) continue;
    if (!sameDeclaration(before, set)) return undefined;
    const change = elementChange(before, set);
    if (!change) continue;
    const shape = shapeOf(set.kind, set.spec);
    if (!shape || (set.kind !== 'set' && set.kind !== 'map')) return undefined;
    count += change.remove.length + change.add.length;
    if (count > MAX_DELTA_ELEMENTS) return undefined;
    out.push({
      kind: set.kind,
      name: set.name,
      flush: change.flush,
      remove: change.remove.flatMap((e) => kernelElements(shape, e)),
      add: change.add.flatMap((e) => kernelElements(shape, e)),
    });
  }
  return out;
}
