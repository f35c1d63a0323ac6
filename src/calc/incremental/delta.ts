/**
 * What changed between two IRs, by id, and the new IR with every unchanged object taken from the
 * old one (the same reference), so a backend can skip unchanged objects with `===`.
 */
import { isDeepStrictEqual } from 'node:util';
import { isEmptyDelta, type IdChanges, type IrDelta } from '../../ir/delta.js';
import type { IR, RuleSet } from '../../ir/types.js';

export { isEmptyDelta, type IdChanges, type IrDelta };

/** How a delta names one rule set: `<endpoint>/<direction>`. */
export function ruleSetKey(rs: Pick<RuleSet, 'endpoint' | 'direction'>): string {
  return `${rs.endpoint}/${rs.direction}`;
}

export function emptyDelta(): IrDelta {
  const none = (): IdChanges => ({ added: [], changed: [], removed: [] });
  return {
    endpoints: none(),
    ipSets: none(),
    ipPortSets: none(),
    ruleSets: none(),
    services: none(),
    prefilters: none(),
    nodes: false,
  };
}

/**
 * `next` in the order given, each object replaced by `prev`'s of the same id when they are deeply
 * equal; the previous array itself when nothing differs. `candidates`, when given, are the only
 * ids that may differ (the others are taken from `prev` without comparing).
 */
export function shareCollection<T>(
  prev: readonly T[],
  next: readonly T[],
  idOf: (o: T) => string,
  changes: IdChanges,
  candidates?: ReadonlySet<string>,
): T[] {
  const before = new Map(prev.map((o) => [idOf(o), o]));
  const nextIds = new Set<string>();
  let same = prev.length === next.length;
  const out = next.map((o, i) => {
    const id = idOf(o);
    nextIds.add(id);
    const old = before.get(id);
    if (old === undefined) {
      changes.added.push(id);
      same = false;
      return o;
    }
    if (old !== o && (candidates === undefined || candidates.has(id)) && !isDeepStrictEqual(old, o)) {
      changes.changed.push(id);
      same = false;
      return o;
    }
    if (prev[i] !== old) same = false;
    return old;
  });
  for (const id of before.keys()) if (!nextIds.has(id)) changes.removed.push(id);
  changes.added.sort();
  changes.changed.sort();
  changes.removed.sort();
  return same ? (prev as T[]) : out;
}

/** `next` sharing every object `prev` has unchanged, and what changed. */
export function shareUnchanged(prev: IR, next: IR): { ir: IR; delta: IrDelta } {
  const delta = emptyDelta();
  const nodesSame = isDeepStrictEqual(prev.nodes, next.nodes) && prev.policyMode === next.policyMode;
  delta.nodes = !nodesSame;
  const ir: IR = {
    ...next,
    nodes: nodesSame ? prev.nodes : next.nodes,
    endpoints: shareCollection(prev.endpoints, next.endpoints, (e) => e.id, delta.endpoints),
    ipSets: shareCollection(prev.ipSets, next.ipSets, (s) => s.id, delta.ipSets),
    ipPortSets: shareCollection(prev.ipPortSets, next.ipPortSets, (s) => s.id, delta.ipPortSets),
    ruleSets: shareCollection(prev.ruleSets, next.ruleSets, ruleSetKey, delta.ruleSets),
    services: shareCollection(prev.services, next.services, (s) => s.id, delta.services),
    prefilters: shareCollection(prev.prefilters, next.prefilters, (p) => p.name, delta.prefilters),
  };
  return { ir, delta };
}
