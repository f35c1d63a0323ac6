/**
 * Model → Allocations: the cluster's nodes, which node each pod runs on, pod addresses and
 * service virtual addresses. The one place anything is allocated; buildIR only reads the result.
 *
 * Pure and deterministic (input order never matters). What `previous` allocated stays put as long
 * as the model allows it (a running cluster must not move pods or renumber them on an update):
 * whoever keeps state (lab state, the datastore, an agent's state directory) passes its last
 * allocations back in.
 */
import { podKey, type Model, type Pod, type Service } from '../model/types.js';
import { allocateAddresses, INFRA_RANGE, POD_RANGE, SERVICE_RANGE } from './addresses.js';
import { nodeNames, placePods } from './placement.js';
import type { Cidr } from '../util/ip.js';

export const DEFAULT_NODE_COUNT = 2;

export interface Allocations {
  /** Every node, sorted: those pods run on, then `node-1`, `node-2`, … up to the node count. */
  nodes: string[];
  /** Pod (`namespace/name`) → node. Every pod. */
  podNodes: Record<string, string>;
  /** Pod → its primary address (IPv4 first): the one it was given (status.podIP) or allocated. Every pod. */
  podAddresses: Record<string, string>;
  /** Service (`namespace/name`) → virtual address: its spec.clusterIP or allocated. Every service. */
  serviceAddresses: Record<string, string>;
}

export interface AllocateOptions {
  /**
   * Number of nodes when pods do not name them all (default 2, as `lab up`). Nodes named by
   * `spec.nodeName` always exist; generated ones are `node-1`, `node-2`, ….
   */
  nodeCount?: number;
}

/**
 * Allocates what `model` does not state itself, keeping `previous` where it still fits.
 * `previous.nodes` is not read: a node survives an update through the pods still on it.
 */
export function allocate(
  model: Model,
  previous: Partial<Allocations> = {},
  opts: AllocateOptions = {},
): Allocations {
  const nodes = nodeNames(model.pods, opts.nodeCount ?? DEFAULT_NODE_COUNT, previous.podNodes);
  const placement = placePods(model.pods, nodes, previous.podNodes);
  return {
    nodes,
    podNodes: sortedRecord(placement),
    podAddresses: allocatePodAddresses(model.pods, previous.podAddresses),
    serviceAddresses: allocateServiceAddresses(model.services, previous.serviceAddresses),
  };
}

/** A pod or service buildIR has no allocation for: allocate() was not run on this model. */
export class MissingAllocationError extends Error {
  constructor(what: string) {
    super(`${what} (allocate the model before building its IR)`);
    this.name = 'MissingAllocationError';
  }
}

/** IPv4 before IPv6, otherwise as given: the order an endpoint lists its addresses in. */
export function ipv4First(addresses: readonly string[]): string[] {
  return [...addresses].sort((a, b) => Number(a.includes(':')) - Number(b.includes(':')));
}

function sortedRecord(entries: Iterable<[string, string]>): Record<string, string> {
  return Object.fromEntries([...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function allocatePodAddresses(
  pods: readonly Pod[],
  previous: Readonly<Record<string, string>> = {},
): Record<string, string> {
  const wanted = pods.map((p) => ({ key: podKey(p), stated: ipv4First(p.ips)[0] }));
  // Every stated address is taken, secondary ones (a pod's IPv6, say) included.
  const used = new Set(pods.flatMap((p) => p.ips));
  return assignAddresses(wanted, used, previous, POD_RANGE, INFRA_RANGE);
}

function allocateServiceAddresses(
  services: readonly Service[],
  previous: Readonly<Record<string, string>> = {},
): Record<string, string> {
  const wanted = services.map((s) => ({ key: `${s.namespace}/${s.name}`, stated: s.clusterIP }));
  const used = new Set(services.flatMap((s) => (s.clusterIP ? [s.clusterIP] : [])));
  return assignAddresses(wanted, used, previous, SERVICE_RANGE);
}

/**
 * Key → address: a stated address as it is (stated ones are never handed out), else the key's
 * previous address unless taken meanwhile, else the lowest free address of `range` in key order.
 */
function assignAddresses(
  wanted: readonly { key: string; stated: string | undefined }[],
  used: Set<string>,
  previous: Readonly<Record<string, string>>,
  range: Cidr,
  reserved?: Cidr,
): Record<string, string> {
  const out = new Map<string, string>();
  const needing: string[] = [];
  for (const { key, stated } of [...wanted].sort((a, b) => (a.key < b.key ? -1 : 1))) {
    const prev = previous[key];
    if (stated !== undefined) out.set(key, stated);
    else if (prev && !used.has(prev)) {
      out.set(key, prev);
      used.add(prev);
    } else needing.push(key);
  }
  allocateAddresses(range, needing.length, used, reserved).forEach((a, i) =>
    out.set(needing[i] as string, a),
  );
  return sortedRecord(out);
}
