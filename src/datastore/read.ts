/** `switchyard get`: stored objects of one kind, optionally one namespace or one name. */
import type { EtcdStore } from './etcd.js';
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

export async function listObjects(store: EtcdStore, filter: ListFilter): Promise<Listing> {
  const snap = await store.snapshot();
  const items: StoredItem[] = [];
  for (const o of snap.objects.values()) {
    const ref = parseObjectKey(o.key);
    if (!ref || ref.kind !== filter.kind) continue;
    if (filter.namespace !== undefined && ref.namespace !== undefined && ref.namespace !== filter.namespace)
      continue;
    if (filter.name !== undefined && ref.name !== filter.name) continue;
    items.push({ ref, object: JSON.parse(o.value) as Record<string, unknown>, modRevision: o.modRevision });
  }
  items.sort((a, b) => (formatRef(a.ref) < formatRef(b.ref) ? -1 : 1));
  return { revision: snap.revision, items };
}
