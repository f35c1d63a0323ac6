/**
 * `switchyard apply --etcd`: manifests into the datastore, all or nothing.
 *
 * The files are validated together with what is stored (a Pod may live in a Namespace applied
 * last week), addresses and nodes are allocated the way the lab does (calc's allocate(), kept
 * for objects that had them; no IR is built), and every object is written in one transaction
 * that only commits if no other writer got in between; otherwise the whole thing is read,
 * validated and allocated again.
 *
 * What is stored is complete: a Pod carries its node and addresses (status.podIP and, as every
 * lab pod is dual-stack, status.podIPs with its IPv6 address), a Service its cluster IP (and
 * clusterIPs, one per family, when it has families), a Prefilter its CIDRs. Agents only read
 * those allocations, so every node sees the same addresses.
 */
import { isDeepStrictEqual } from 'node:util';
import { allocate, DEFAULT_NODE_COUNT, type Allocations } from '../calc/index.js';
import {
  DEFAULT_NAMESPACE,
  expandManifestPaths,
  ManifestError,
  readManifestDocuments,
  validateManifestDocuments,
  type ManifestDocument,
  type ManifestIssue,
  type Model,
} from '../model/index.js';
import { addressFamily, serviceFamilies } from '../model/types.js';
import { storedDocument } from './documents.js';
import { DatastoreError, type EtcdStore, type Snapshot } from './etcd.js';
import { formatRef, objectKey, parseObjectKey, refOf, type ObjectRef } from './keys.js';
import { errorMessage } from '../util/errors.js';

const MAX_ATTEMPTS = 20;

/**
 * After losing the race to another writer: wait a random, growing while, so writers that all
 * read the same revision do not all read and collide again in lockstep (without it, with N
 * writers at once the last one needs N attempts).
 */
function backoff(attempt: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.random() * Math.min(500, 5 * 2 ** attempt)));
}

export interface ApplyOptions {
  /** Remove stored objects the files do not name: the files become the whole desired state. */
  prune?: boolean;
}

export interface WriteResult {
  /** The store's revision with the write in it (agents report it once in force). */
  revision: number;
  created: string[];
  configured: string[];
  unchanged: string[];
  deleted: string[];
  attempts: number;
}

interface Incoming {
  key: string;
  ref: ObjectRef;
  doc: ManifestDocument;
}

function readFiles(paths: readonly string[]): Incoming[] {
  let files: string[];
  try {
    files = expandManifestPaths(paths);
  } catch (e) {
    throw new DatastoreError(errorMessage(e), { cause: e });
  }
  if (files.length === 0) throw new DatastoreError(`no manifests in ${paths.join(', ')}`);
  const issues: ManifestIssue[] = [];
  const incoming: Incoming[] = [];
  for (const file of files) {
    const read = readManifestDocuments(file);
    issues.push(...read.issues);
    for (const doc of read.documents) {
      if (doc.value === null) continue;
      const ref = refOf(doc.value);
      // Without a kind and name the validator says what is missing; the key only has to be unique.
      const key = ref ? objectKey(ref) : `?${file}#${incoming.length}`;
      incoming.push({ key, ref: ref ?? { kind: '?', name: '?' }, doc });
    }
  }
  if (issues.length > 0) throw new ManifestError(issues);
  return incoming;
}

/** The stored value of an incoming manifest: the manifest, plus what was allocated for it. */
function materialize(item: Incoming, model: Model, alloc: Allocations): string {
  const value = structuredClone(item.doc.value) as Record<string, Record<string, unknown> | undefined>;
  const id = `${item.ref.namespace}/${item.ref.name}`;
  if (item.ref.kind === 'Pod') {
    const spec = (value.spec ??= {});
    const node = alloc.podNodes[id];
    if (spec.nodeName === undefined && node) spec.nodeName = node;
    const status = (value.status ??= {});
    const address = alloc.podAddresses[id];
    const v6 = alloc.podAddressesV6?.[id];
    if (status.podIPs === undefined) {
      if (status.podIP === undefined && address) status.podIP = address;
      // A stated IPv4 podIP gets its IPv6 address beside it too: the lab gives every pod one.
      const primary = status.podIP;
      if (v6 && typeof primary === 'string' && addressFamily(primary) === 'IPv4')
        status.podIPs = [{ ip: primary }, { ip: v6 }];
    }
  } else if (item.ref.kind === 'Service') {
    const spec = (value.spec ??= {});
    const ips = serviceAddresses(model, id, alloc);
    if (spec.clusterIP === undefined && spec.clusterIPs === undefined && ips[0]) spec.clusterIP = ips[0];
    // A service with families keeps one cluster IP per family, as the API server writes them.
    const families = model.services.find((s) => `${s.namespace}/${s.name}` === id)?.ipFamilies;
    if (families && spec.clusterIPs === undefined && ips.length > 0 && spec.clusterIP === ips[0])
      spec.clusterIPs = ips;
    for (const port of (spec.ports ?? []) as StoredServicePort[]) {
      const nodePort = alloc.nodePorts[`${id}:${port.port}/${port.protocol ?? 'TCP'}`];
      if (port.nodePort === undefined && nodePort !== undefined) port.nodePort = nodePort;
    }
    const ingress = alloc.loadBalancerAddresses[id];
    const status = (value.status ?? {}) as StoredServiceStatus;
    if (ingress && !status.loadBalancer?.ingress?.length)
      value.status = { ...status, loadBalancer: { ingress: ingress.map((ip) => ({ ip })) } };
  } else if (item.ref.kind === 'Prefilter') {
    // A file next to the manifest is not next to the agents: store the CIDRs themselves.
    const spec = (value.spec ??= {});
    const prefilter = model.prefilters.find((p) => p.name === item.ref.name);
    if (prefilter && spec.file !== undefined) {
      delete spec.file;
      spec.cidrs = prefilter.cidrs;
    }
  }
  return JSON.stringify(value);
}

/** A service's allocated cluster IPs in its families' order (primary first); none when headless. */
function serviceAddresses(model: Model, id: string, alloc: Allocations): string[] {
  const service = model.services.find((s) => `${s.namespace}/${s.name}` === id);
  if (!service) return [];
  return serviceFamilies(service).flatMap((f) => {
    const a = f === 'IPv4' ? alloc.serviceAddresses[id] : alloc.serviceAddressesV6?.[id];
    return a ? [a] : [];
  });
}

interface StoredServicePort {
  port?: number;
  protocol?: string;
  nodePort?: number;
}

interface StoredServiceStatus {
  podIP?: string;
  podIPs?: { ip?: string }[];
  loadBalancer?: { ingress?: { ip?: string }[] };
}

/** What stored objects were given, so re-applying a manifest without them keeps them. */
function storedAllocations(snapshot: Snapshot): Partial<Allocations> {
  const podAddresses: Record<string, string> = {};
  const podNodes: Record<string, string> = {};
  const podAddressesV6: Record<string, string> = {};
  const serviceAddresses: Record<string, string> = {};
  const serviceAddressesV6: Record<string, string> = {};
  const nodePorts: Record<string, number> = {};
  const loadBalancerAddresses: Record<string, string[]> = {};
  for (const o of snapshot.objects.values()) {
    const v = (storedDocument(o.key, o.value).value ?? {}) as {
      kind?: string;
      metadata?: { name?: string; namespace?: string };
      spec?: { nodeName?: string; clusterIP?: string; clusterIPs?: string[]; ports?: StoredServicePort[] };
      status?: StoredServiceStatus;
    };
    const id = `${v.metadata?.namespace ?? DEFAULT_NAMESPACE}/${v.metadata?.name}`;
    if (v.kind === 'Pod') {
      const ips = [v.status?.podIP, ...(v.status?.podIPs ?? []).map((p) => p.ip)];
      const v4 = ips.find((a) => a !== undefined && addressFamily(a) === 'IPv4');
      const v6 = ips.find((a) => a !== undefined && addressFamily(a) === 'IPv6');
      if (v4 ?? v.status?.podIP) podAddresses[id] = (v4 ?? v.status?.podIP) as string;
      if (v6) podAddressesV6[id] = v6;
      if (v.spec?.nodeName) podNodes[id] = v.spec.nodeName;
    } else if (v.kind === 'Service') {
      const ips = [v.spec?.clusterIP, ...(v.spec?.clusterIPs ?? [])].filter(
        (a): a is string => a !== undefined && a !== 'None' && a !== '',
      );
      const v4 = ips.find((a) => addressFamily(a) === 'IPv4');
      const v6 = ips.find((a) => addressFamily(a) === 'IPv6');
      if (v4) serviceAddresses[id] = v4;
      if (v6) serviceAddressesV6[id] = v6;
      for (const p of v.spec?.ports ?? [])
        if (p.nodePort !== undefined) nodePorts[`${id}:${p.port}/${p.protocol ?? 'TCP'}`] = p.nodePort;
      const ingress = (v.status?.loadBalancer?.ingress ?? []).flatMap((i) => (i.ip ? [i.ip] : []));
      if (ingress.length > 0) loadBalancerAddresses[id] = ingress;
    }
  }
  return {
    podAddresses,
    podAddressesV6,
    podNodes,
    serviceAddresses,
    serviceAddressesV6,
    nodePorts,
    loadBalancerAddresses,
  };
}

function sameJson(a: string, b: string): boolean {
  return a === b || isDeepStrictEqual(JSON.parse(a), JSON.parse(b));
}

interface Plan {
  puts: Map<string, string>;
  deletes: string[];
  created: string[];
  configured: string[];
  unchanged: string[];
  deleted: string[];
}

/** Validates `desired` (stored documents merged with the change) and works out the writes. */
function plan(
  snapshot: Snapshot,
  documents: ManifestDocument[],
  incoming: readonly Incoming[],
  deletes: readonly string[],
): Plan {
  const { model, issues } = validateManifestDocuments(documents);
  if (!model) throw new ManifestError(issues);
  let alloc: Allocations;
  try {
    // Pods are dual-stack, as in the lab that builds them from what is stored.
    alloc = allocate(model, storedAllocations(snapshot), {
      nodeCount: snapshot.cluster.nodeCount ?? DEFAULT_NODE_COUNT,
      dualStackPods: true,
    });
  } catch (e) {
    throw new DatastoreError(errorMessage(e), { cause: e });
  }
  const out: Plan = {
    puts: new Map(),
    deletes: [...deletes],
    created: [],
    configured: [],
    unchanged: [],
    deleted: [],
  };
  for (const item of incoming) {
    const value = materialize(item, model, alloc);
    const stored = snapshot.objects.get(item.key);
    const name = formatRef(item.ref);
    if (stored && sameJson(stored.value, value)) out.unchanged.push(name);
    else {
      out.puts.set(item.key, value);
      (stored ? out.configured : out.created).push(name);
    }
  }
  checkStoredState(snapshot, out);
  return out;
}

/**
 * The state the agents will read after the commit, validated as they read it (stored JSON, with
 * the allocations and a Prefilter file's normalised CIDRs in it): a write that would leave the
 * store unreadable is refused here, before anything is committed.
 */
function checkStoredState(snapshot: Snapshot, p: Plan): void {
  if (p.puts.size === 0 && p.deletes.length === 0) return;
  const gone = new Set(p.deletes);
  const after = new Map<string, string>();
  for (const o of snapshot.objects.values()) if (!gone.has(o.key)) after.set(o.key, o.value);
  for (const [key, value] of p.puts) after.set(key, value);
  const { model, issues } = validateManifestDocuments(
    [...after].map(([key, value]) => storedDocument(key, value)),
  );
  if (!model) throw new ManifestError(issues);
}

async function writeLoop(
  store: EtcdStore,
  change: (snapshot: Snapshot) => { documents: ManifestDocument[]; incoming: Incoming[]; deletes: string[] },
): Promise<WriteResult> {
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const snapshot = await store.snapshot();
    const { documents, incoming, deletes } = change(snapshot);
    const p = plan(snapshot, documents, incoming, deletes);
    for (const key of p.deletes) p.deleted.push(formatRef(parseObjectKey(key) ?? { kind: '?', name: key }));
    const result = (revision: number): WriteResult => ({
      revision,
      created: p.created,
      configured: p.configured,
      unchanged: p.unchanged,
      deleted: p.deleted,
      attempts: attempt,
    });
    if (p.puts.size === 0 && p.deletes.length === 0) return result(snapshot.revision);
    const revision = await store.commit(snapshot.sequence, p.puts, p.deletes);
    if (revision !== undefined) return result(revision);
    if (attempt < MAX_ATTEMPTS) await backoff(attempt);
  }
  throw new DatastoreError(
    `etcd at ${store.url}: other writers changed the desired state ${MAX_ATTEMPTS} times while this one was ` +
      `being validated; nothing was written, try again`,
  );
}

/** Creates or replaces the objects in `paths` (with `prune`, removes every other object too). */
export async function applyManifests(
  store: EtcdStore,
  paths: readonly string[],
  opts: ApplyOptions = {},
): Promise<WriteResult> {
  const incoming = readFiles(paths);
  const incomingKeys = new Set(incoming.map((i) => i.key));
  return writeLoop(store, (snapshot) => {
    const kept = [...snapshot.objects.values()].filter((o) => !incomingKeys.has(o.key));
    const deletes = opts.prune ? kept.map((o) => o.key) : [];
    const stay = opts.prune ? [] : kept;
    return {
      documents: [...stay.map((o) => storedDocument(o.key, o.value)), ...incoming.map((i) => i.doc)],
      incoming,
      deletes,
    };
  });
}

/** Removes objects; what is left must still be valid (a Namespace in use cannot go). */
export async function deleteObjects(store: EtcdStore, refs: readonly ObjectRef[]): Promise<WriteResult> {
  const keys = new Set(refs.map(objectKey));
  return writeLoop(store, (snapshot) => {
    const missing = refs.filter((r) => !snapshot.objects.has(objectKey(r)));
    if (missing.length > 0)
      throw new DatastoreError(`not found: ${missing.map(formatRef).join(', ')} (nothing was deleted)`);
    const stay = [...snapshot.objects.values()].filter((o) => !keys.has(o.key));
    return { documents: stay.map((o) => storedDocument(o.key, o.value)), incoming: [], deletes: [...keys] };
  });
}
