/**
 * Where desired state lives in etcd. One object a key, the manifest as JSON, under a prefix every
 * agent watches:
 *
 *   /switchyard/objects/<Kind>/<namespace>/<name>   namespaced kinds
 *   /switchyard/objects/<Kind>/_/<name>             cluster-wide kinds (Namespace, GlobalPolicy, Prefilter)
 *   /switchyard/config/cluster                      {nodeCount}: what pods are spread over
 *   /switchyard/config/sequence                     bumped by every write: writers serialise on it
 */
import { DEFAULT_NAMESPACE } from '../model/index.js';

export const PREFIX = '/switchyard/';
export const OBJECTS_PREFIX = `${PREFIX}objects/`;
export const CLUSTER_KEY = `${PREFIX}config/cluster`;
export const SEQUENCE_KEY = `${PREFIX}config/sequence`;

const CLUSTER_WIDE = '_';

export const NAMESPACED_KINDS: ReadonlySet<string> = new Set([
  'Pod',
  'Service',
  'NetworkPolicy',
  'EndpointSlice',
]);

export interface ObjectRef {
  kind: string;
  /** Absent for cluster-wide kinds. */
  namespace?: string;
  name: string;
}

export function objectKey(ref: ObjectRef): string {
  return `${OBJECTS_PREFIX}${ref.kind}/${ref.namespace ?? CLUSTER_WIDE}/${ref.name}`;
}

export function parseObjectKey(key: string): ObjectRef | undefined {
  if (!key.startsWith(OBJECTS_PREFIX)) return undefined;
  const [kind, ns, name, ...rest] = key.slice(OBJECTS_PREFIX.length).split('/');
  if (!kind || !ns || !name || rest.length > 0) return undefined;
  return { kind, ...(ns === CLUSTER_WIDE ? {} : { namespace: ns }), name };
}

export function formatRef(ref: ObjectRef): string {
  return `${ref.kind} ${ref.namespace ? `${ref.namespace}/` : ''}${ref.name}`;
}

/** The object a manifest names, read from its raw value (undefined when kind or name is missing). */
export function refOf(value: unknown): ObjectRef | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } };
  if (typeof v.kind !== 'string' || typeof v.metadata?.name !== 'string') return undefined;
  if (!NAMESPACED_KINDS.has(v.kind)) return { kind: v.kind, name: v.metadata.name };
  const ns = typeof v.metadata.namespace === 'string' ? v.metadata.namespace : DEFAULT_NAMESPACE;
  return { kind: v.kind, namespace: ns, name: v.metadata.name };
}

/** What `switchyard get` accepts for each kind (kubectl's names and short names). */
const KIND_NAMES: Record<string, string> = {
  namespace: 'Namespace',
  namespaces: 'Namespace',
  ns: 'Namespace',
  pod: 'Pod',
  pods: 'Pod',
  po: 'Pod',
  service: 'Service',
  services: 'Service',
  svc: 'Service',
  networkpolicy: 'NetworkPolicy',
  networkpolicies: 'NetworkPolicy',
  netpol: 'NetworkPolicy',
  endpointslice: 'EndpointSlice',
  endpointslices: 'EndpointSlice',
  globalpolicy: 'GlobalPolicy',
  globalpolicies: 'GlobalPolicy',
  gp: 'GlobalPolicy',
  prefilter: 'Prefilter',
  prefilters: 'Prefilter',
};

export function kindFromName(name: string): string | undefined {
  return KIND_NAMES[name.toLowerCase()];
}

export const KNOWN_KIND_NAMES = Object.keys(KIND_NAMES);
