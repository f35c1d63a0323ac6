/**
 * Changes to a model, one object at a time: what a source that watches the desired state (a
 * directory, etcd) hands the incremental calculation instead of a whole new model. Objects are
 * keyed as the model keys them: `namespace/name` for namespaced kinds, `name` for cluster-wide ones.
 */
import { isDeepStrictEqual } from 'node:util';
import type {
  EndpointSlice,
  GlobalPolicy,
  Model,
  Namespace,
  NetworkPolicy,
  Pod,
  Prefilter,
  Service,
} from './types.js';

/** The object each kind of change carries. */
export interface ModelObjects {
  namespace: Namespace;
  pod: Pod;
  service: Service;
  endpointSlice: EndpointSlice;
  networkPolicy: NetworkPolicy;
  globalPolicy: GlobalPolicy;
  prefilter: Prefilter;
}

export type ModelKind = keyof ModelObjects;

export const MODEL_KINDS: readonly ModelKind[] = [
  'namespace',
  'pod',
  'service',
  'endpointSlice',
  'networkPolicy',
  'globalPolicy',
  'prefilter',
];

/** The Model field holding each kind. */
const FIELD = {
  namespace: 'namespaces',
  pod: 'pods',
  service: 'services',
  endpointSlice: 'endpointSlices',
  networkPolicy: 'networkPolicies',
  globalPolicy: 'globalPolicies',
  prefilter: 'prefilters',
} as const satisfies Record<ModelKind, keyof Model>;

/** Upsert (add or replace) or removal of one object; removal names it by its key. */
export type ModelChange = {
  [K in ModelKind]:
    { op: 'upsert'; kind: K; object: ModelObjects[K] } | { op: 'remove'; kind: K; key: string };
}[ModelKind];

/** The key of a model object: `namespace/name`, or `name` for namespaces, global policies, prefilters. */
export function modelKey<K extends ModelKind>(kind: K, object: ModelObjects[K]): string {
  const named = object as { name: string; namespace?: string };
  return kind === 'namespace' || kind === 'globalPolicy' || kind === 'prefilter'
    ? named.name
    : `${named.namespace ?? ''}/${named.name}`;
}

/** The key of the object a change is about. */
export function changeKey(change: ModelChange): string {
  return change.op === 'remove'
    ? change.key
    : modelKey(change.kind, change.object as ModelObjects[typeof change.kind]);
}

/** The objects of one kind in `model`, by key. */
export function objectsByKey<K extends ModelKind>(model: Model, kind: K): Map<string, ModelObjects[K]> {
  const list = model[FIELD[kind]] as unknown as readonly ModelObjects[K][];
  return new Map(list.map((o) => [modelKey(kind, o), o]));
}

/**
 * The changes that turn `before` into `after`: an upsert for every object that is new or not
 * deeply equal to the one with its key (its source position included), a removal for every key
 * that is gone. Pure; the order is kind by kind (MODEL_KINDS), then by key.
 */
export function diffModels(before: Model, after: Model): ModelChange[] {
  const out: ModelChange[] = [];
  for (const kind of MODEL_KINDS) {
    const old = objectsByKey(before, kind);
    const next = objectsByKey(after, kind);
    for (const key of [...new Set([...old.keys(), ...next.keys()])].sort()) {
      const a = old.get(key);
      const b = next.get(key);
      if (b === undefined) out.push({ op: 'remove', kind, key } as ModelChange);
      else if (a === undefined || !isDeepStrictEqual(a, b))
        out.push({ op: 'upsert', kind, object: b } as ModelChange);
    }
  }
  return out;
}

/**
 * `model` with `changes` applied in order (a later change of the same key wins). Unchanged kinds
 * keep their arrays; a changed kind keeps its order, new objects go last. Removing an absent key
 * is no change.
 */
export function applyModelChanges(model: Model, changes: readonly ModelChange[]): Model {
  const byKind = new Map<ModelKind, ModelChange[]>();
  for (const c of changes) byKind.set(c.kind, [...(byKind.get(c.kind) ?? []), c]);
  const out: Model = { ...model };
  for (const [kind, list] of byKind) {
    const objects = objectsByKey(model, kind) as Map<string, ModelObjects[ModelKind]>;
    for (const c of list) {
      if (c.op === 'remove') objects.delete(c.key);
      else objects.set(changeKey(c), c.object);
    }
    (out as unknown as Record<string, unknown>)[FIELD[kind]] = [...objects.values()];
  }
  return out;
}
