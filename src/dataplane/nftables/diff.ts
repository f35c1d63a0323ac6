/**
 * previous NftRuleset → next as one incremental transaction: only changed sets, maps and chains
 * are written (sets and maps by element delta, chains by flush and refill), vanished ones deleted.
 * Returns undefined when a change cannot be expressed incrementally (an object's declaration
 * changed); the caller then writes the full table, which is just as atomic.
 */
import { TABLE_REF } from './names.js';
import { chainRules, declareChain, declareSet, elementLines } from './render.js';
import type { NftChain, NftRuleset, NftSet } from './objects.js';
import { releasedWhenQuiet } from '../../util/quiet-caches.js';

export interface IncrementalPlan {
  script: string;
  /** `set:NAME`, `map:NAME`, `chain:NAME` of every object written or deleted. */
  changed: string[];
}

/**
 * Objects by name, kept per list: the shadow's lists are looked up again by the next apply's
 * diff, and a node with 10k services has ~12k chains to index. Lists are never changed once built.
 * Dropped when the agent goes quiet: the indexes of a 10k-service node's chains held 0.9 MiB while
 * it idled, and a change after a quiet spell makes them again (~4 ms each).
 */
let indexed = new WeakMap<readonly { name: string }[], ReadonlyMap<string, unknown>>();
releasedWhenQuiet(() => {
  indexed = new WeakMap();
});

export function byName<T extends { name: string }>(items: readonly T[]): ReadonlyMap<string, T> {
  const known = indexed.get(items) as ReadonlyMap<string, T> | undefined;
  if (known) return known;
  const index = new Map(items.map((i) => [i.name, i]));
  indexed.set(items, index);
  return index;
}

function mapKey(element: string): string {
  return element.slice(0, element.indexOf(' : '));
}

export function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a === b || (a.length === b.length && a.every((x, i) => x === b[i]));
}

/** Which elements go and come between two versions of a set; `flush` empties it first. */
export interface ElementChange {
  flush: boolean;
  /** Element texts to delete (for maps: the keys). */
  remove: string[];
  add: string[];
}

/**
 * Element delta, undefined when the members are the same; for maps an element whose verdict
 * changed is deleted by key and added again.
 */
export function elementChange(prev: NftSet, next: NftSet): ElementChange | undefined {
  // Unchanged sets, the common case at scale: the same members (often the very same array).
  if (sameList(prev.elements, next.elements)) return undefined;
  const before = new Set(prev.elements);
  const after = new Set(next.elements);
  const removed = prev.elements.filter((e) => !after.has(e));
  const added = next.elements.filter((e) => !before.has(e));
  if (removed.length === 0 && added.length === 0) return undefined;
  // Refilling is cheaper than a delta that touches most of the set anyway.
  if (removed.length + added.length >= next.elements.length && next.elements.length > 0)
    return { flush: true, remove: [], add: next.elements };
  return { flush: false, remove: next.kind === 'map' ? removed.map(mapKey) : removed, add: added };
}

function setDelta(prev: NftSet, next: NftSet): string[] {
  const change = elementChange(prev, next);
  if (!change) return [];
  return [
    ...(change.flush ? [`flush ${next.kind} ${TABLE_REF} ${next.name}`] : []),
    ...elementLines('delete', next, change.remove),
    ...elementLines('add', next, change.add),
  ];
}

/** Lines that make `prev` (absent: a new one) equal to `next`; empty when they already are. */
function setUpdate(prev: NftSet | undefined, next: NftSet): string[] {
  return prev ? setDelta(prev, next) : [...declareSet(next), ...elementLines('add', next, next.elements)];
}

export function diffRulesets(prev: NftRuleset, next: NftRuleset): IncrementalPlan | undefined {
  const changed: string[] = [];
  const lines: string[] = [
    `# switchyard nftables update for node ${next.node}: one atomic transaction (nft -f)`,
  ];
  const prevSets = byName([...prev.sets, ...prev.maps]);
  const nextSets = byName([...next.sets, ...next.maps]);
  const prevChains = byName(prev.chains);
  const nextChains = byName(next.chains);

  for (const [name, p] of prevSets) {
    const n = nextSets.get(name);
    if (n && (n.spec !== p.spec || n.kind !== p.kind)) return undefined;
  }
  for (const [name, p] of prevChains) {
    const n = nextChains.get(name);
    if (n && (n.spec !== p.spec || n.base !== p.base)) return undefined;
  }

  // 1. New sets and set member changes: rules below may reference them.
  for (const set of next.sets) {
    const update = setUpdate(prevSets.get(set.name), set);
    if (update.length === 0) continue;
    lines.push(...update);
    changed.push(`set:${set.name}`);
  }
  // 2. New chains, declared before anything names them (rules, verdict map elements).
  for (const chain of next.chains) if (!prevChains.has(chain.name)) lines.push(declareChain(chain));
  // 3. Verdict maps (dispatch, decision tables): every chain they name is declared now, and the
  //    rules below may name a new map.
  for (const map of next.maps) {
    const update = setUpdate(prevSets.get(map.name), map);
    if (update.length === 0) continue;
    lines.push(...update);
    changed.push(`map:${map.name}`);
  }
  // 4. Rules of new and changed chains.
  for (const chain of next.chains) {
    const p = prevChains.get(chain.name);
    if (p && sameList(p.rules, chain.rules)) continue;
    if (p) lines.push(`flush chain ${TABLE_REF} ${chain.name}`);
    lines.push(...chainRules(chain));
    changed.push(`chain:${chain.name}`);
  }
  // 5. Deletions, last, in the order references allow: vanished chains are emptied (their rules
  //    name maps and chains), then vanished maps go (their elements name chains), then the chains,
  //    then the sets.
  const goneChains: NftChain[] = prev.chains.filter((c) => !nextChains.has(c.name));
  for (const c of goneChains) lines.push(`flush chain ${TABLE_REF} ${c.name}`);
  for (const s of prev.maps) {
    if (nextSets.has(s.name)) continue;
    lines.push(`delete ${s.kind} ${TABLE_REF} ${s.name}`);
    changed.push(`${s.kind}:${s.name}`);
  }
  for (const c of goneChains) {
    lines.push(`delete chain ${TABLE_REF} ${c.name}`);
    changed.push(`chain:${c.name}`);
  }
  for (const s of prev.sets) {
    if (nextSets.has(s.name)) continue;
    lines.push(`delete ${s.kind} ${TABLE_REF} ${s.name}`);
    changed.push(`${s.kind}:${s.name}`);
  }
  return { script: lines.join('\n') + '\n', changed };
}
