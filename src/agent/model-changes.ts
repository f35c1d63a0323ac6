/**
 * What changed between two reads of a source, as ModelChanges for the incremental calculation:
 * only the parts (files, stored keys) whose converted objects are not the very ones read before
 * are compared, object by object, so one changed file of a hundred costs its own objects.
 */
import { isDeepStrictEqual } from 'node:util';
import {
  DEFAULT_NAMESPACE,
  modelKey,
  replacementNeedsCrossChecks,
  type ConvertedDocuments,
  type Model,
  type ModelChange,
  type ModelKind,
  type ModelObjects,
  type Namespace,
  type Pod,
} from '../model/index.js';

/** The manifest kind (as written) → the model kind of a change. */
const KINDS: Readonly<Record<string, ModelKind>> = {
  Namespace: 'namespace',
  Pod: 'pod',
  Service: 'service',
  EndpointSlice: 'endpointSlice',
  NetworkPolicy: 'networkPolicy',
  GlobalPolicy: 'globalPolicy',
  Prefilter: 'prefilter',
};

interface Keyed {
  /** As written: `Pod`, `NetworkPolicy`, … */
  manifestKind: string;
  kind: ModelKind;
  key: string;
  object: ModelObjects[ModelKind];
}

function objectsOf(parts: Iterable<ConvertedDocuments | undefined>): Map<string, Keyed> {
  const out = new Map<string, Keyed>();
  for (const part of parts)
    for (const o of part?.objects ?? []) {
      const kind = KINDS[o.kind];
      if (kind === undefined) throw new Error(`no model kind for manifest kind ${o.kind}`);
      const object = o.value as ModelObjects[ModelKind];
      const key = modelKey(kind, object);
      out.set(`${kind}\0${key}`, { manifestKind: o.kind, kind, key, object });
    }
  return out;
}

export interface PartChanges {
  /** Removals first, so an object that moved from one part to another is removed, then added. */
  changes: ModelChange[];
  /**
   * Objects were added or removed, or replaced by ones that differ in what the checks across
   * objects read: the new model must be assembled (and so validated) as a whole. When false, the
   * previous model was valid and so is the one after these changes.
   */
  structural: boolean;
  /** Pods or services added, removed, pods with a new node or address, services changed: allocate again. */
  movesAllocations: boolean;
}

/**
 * The changes from the objects of `before` to those of `after` (part name → converted objects):
 * only parts that are not the very same object as before are compared, and only those in
 * `candidates` when the caller knows which may have changed (a watch's events).
 */
export function changesBetween(
  before: ReadonlyMap<string, ConvertedDocuments>,
  after: ReadonlyMap<string, ConvertedDocuments>,
  candidates?: ReadonlySet<string>,
): PartChanges {
  const touched = new Set<string>();
  if (candidates) {
    for (const name of candidates) if (after.get(name) !== before.get(name)) touched.add(name);
  } else {
    for (const [name, part] of before) if (after.get(name) !== part) touched.add(name);
    for (const name of after.keys()) if (!before.has(name)) touched.add(name);
  }
  const old = objectsOf([...touched].map((n) => before.get(n)));
  const now = objectsOf([...touched].map((n) => after.get(n)));
  const out: PartChanges = { changes: [], structural: false, movesAllocations: false };
  const upserts: ModelChange[] = [];
  const addressed = (kind: ModelKind): boolean => kind === 'pod' || kind === 'service';
  for (const [id, o] of old)
    if (!now.has(id)) {
      out.changes.push({ op: 'remove', kind: o.kind, key: o.key });
      out.structural = true;
      out.movesAllocations ||= addressed(o.kind);
    }
  for (const [id, o] of now) {
    const was = old.get(id);
    if (was !== undefined && isDeepStrictEqual(was.object, o.object)) continue;
    upserts.push({ op: 'upsert', kind: o.kind, object: o.object } as ModelChange);
    if (was === undefined) {
      out.structural = true;
      out.movesAllocations ||= addressed(o.kind);
      continue;
    }
    out.structural ||= replacementNeedsCrossChecks(o.manifestKind, was.object, o.object);
    out.movesAllocations ||= addressMoved(o.kind, was.object, o.object);
  }
  out.changes.push(...upserts);
  return out;
}

/**
 * What allocation reads changed: a pod's node or addresses; for a service, any change (its
 * cluster IP, type, ports and node ports, load-balancer addresses are all allocated from).
 */
function addressMoved(kind: ModelKind, before: object, after: object): boolean {
  if (kind === 'service') return true;
  if (kind !== 'pod') return false;
  const [a, b] = [before as Pod, after as Pod];
  return a.nodeName !== b.nodeName || !isDeepStrictEqual(a.ips, b.ips);
}

/**
 * The default namespace is implicit when no part defines it, so its object can change without a
 * part holding it (defined, then no longer, or the other way round): the upsert that says so.
 */
export function implicitNamespaceChange(before: Model, after: Model): ModelChange[] {
  const defaultOf = (m: Model): Namespace | undefined =>
    m.namespaces.find((n) => n.name === DEFAULT_NAMESPACE);
  const [was, is] = [defaultOf(before), defaultOf(after)];
  return is && !isDeepStrictEqual(was, is) ? [{ op: 'upsert', kind: 'namespace', object: is }] : [];
}
