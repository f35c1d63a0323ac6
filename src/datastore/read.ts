/** `switchyard get`: stored objects of one kind, optionally one namespace or one name. */
import { excerpt } from '../model/index.js';
import { storedValueProblem } from './documents.js';
import { DatastoreError, type EtcdStore } from './etcd.js';
import { formatRef, parseObjectKey, type ObjectRef } from './keys.js';

export interface StoredItem {
  ref: ObjectRef;
  /** The object as stored (the manifest plus what was allocated for it). */
  object: Record<string, unknown>;
  modRevision: number;
}

export interface Listing {
  revision: number;
  items: StoredItem[];
}

export interface ListFilter {
  kind: string;
  /** Only this namespace (namespaced kinds); all when absent. */
  namespace?: string;
  name?: string;
}

/** A stored value as the object its key names; anything else is an error naming the key. */
function storedObject(key: string, value: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (e) {
    throw new DatastoreError(`etcd key ${key}: not JSON (${(e as Error).message}): ${excerpt(value)}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new DatastoreError(`etcd key ${key}: not an object: ${excerpt(value)}`);
  const problem = storedValueProblem(key, parsed);
  if (problem) throw new DatastoreError(`etcd key ${key}: ${problem}`);
  return parsed as Record<string, unknown>;
}

export async function listObjects(store: EtcdStore, filter: ListFilter): Promise<Listing> {
  const snap = await store.snapshot();
  const items: StoredItem[] = [];
  for (const o of snap.objects.values()) {
    const ref = parseObjectKey(o.key);
    if (!ref || ref.kind !== filter.kind) continue;
    if (filter.namespace !== undefined && ref.namespace !== undefined && ref.namespace !== filter.namespace)
      continue;
    if (filter.name !== undefined && ref.name !== filter.name) continue;
    items.push({ ref, object: storedObject(o.key, o.value), modRevision: o.modRevision });
  }
  items.sort((a, b) => (formatRef(a.ref) < formatRef(b.ref) ? -1 : 1));
  return { revision: snap.revision, items };
}
