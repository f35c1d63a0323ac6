/**
 * Model → Allocations: the cluster's nodes, which node each pod runs on, pod addresses, service
 * virtual addresses, node ports and load-balancer addresses. The one place anything is allocated; buildIR only reads the result.
 *
 * Pure and deterministic (input order never matters). What `previous` allocated stays put as long
 * as the model allows it (a running cluster must not move pods or renumber them on an update):
 * whoever keeps state (lab state, the datastore, an agent's state directory) passes its last
 * allocations back in.
 */
import { ManifestError, type ManifestIssue } from '../model/errors.js';
import {
  addressFamily,
  podKey,
  serviceFamilies,
  statedClusterIP,
  type IpFamily,
  type Model,
  type Pod,
  type Service,
  type ServicePort,
} from '../model/types.js';
import {
  allocateAddresses,
  inAddressRange,
  INFRA_RANGE,
  LOAD_BALANCER_POOL,
  NODE_PORT_RANGE,
  POD_RANGE,
  POD_RANGE_V6,
  SERVICE_RANGE,
  SERVICE_RANGE_V6,
} from './addresses.js';
import { nodeNames, placePods } from './placement.js';
import { formatCidr, type Cidr } from '../util/ip.js';

export const DEFAULT_NODE_COUNT = 2;

export interface Allocations {
  /** Every node, sorted: those pods run on, then `node-1`, `node-2`, … up to the node count. */
  nodes: string[];
  /** Pod (`namespace/name`) → node. Every pod. */
  podNodes: Record<string, string>;
  /** Pod → its primary address (IPv4 first): the one it was given (status.podIP) or allocated. Every pod. */
  podAddresses: Record<string, string>;
  /**
   * Pod → its IPv6 address, allocated from fd00:5957::/64 for pods without a stated one, when
   * allocate() runs with `dualStackPods` (the lab). Absent in allocations from before IPv6.
   */
  podAddressesV6?: Record<string, string>;
  /**
   * Service (`namespace/name`) → IPv4 virtual address: its stated one or allocated. Every service
   * with the IPv4 family (all of them unless ipFamilies says otherwise).
   */
  serviceAddresses: Record<string, string>;
  /** Service → IPv6 virtual address (stated or from fd00:5957:0:1::/112): every service with the IPv6 family. */
  serviceAddressesV6?: Record<string, string>;
  /**
   * Service port (`namespace/name:port/protocol`, the port table's id) → node port: its
   * spec.ports[].nodePort or allocated. Every port of every NodePort and LoadBalancer service.
   */
  nodePorts: Record<string, number>;
  /**
   * LoadBalancer service (`namespace/name`) → its addresses: status.loadBalancer.ingress as
   * stated, else one from the pool (spec.loadBalancerIP when it asks for a free one).
   */
  loadBalancerAddresses: Record<string, string[]>;
}

export interface AllocateOptions {
  /**
   * Number of nodes when pods do not name them all (default 2, as `lab up`). Nodes named by
   * `spec.nodeName` always exist; generated ones are `node-1`, `node-2`, ….
   */
  nodeCount?: number;
  /** Give every pod an IPv6 address beside its IPv4 one (the lab does). */
  dualStackPods?: boolean;
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
    ...(opts.dualStackPods
      ? { podAddressesV6: allocatePodAddressesV6(model.pods, previous.podAddressesV6) }
      : {}),
    serviceAddresses: allocateServiceAddresses(model.services, 'IPv4', previous.serviceAddresses),
    ...(model.services.some((s) => serviceFamilies(s).includes('IPv6'))
      ? { serviceAddressesV6: allocateServiceAddresses(model.services, 'IPv6', previous.serviceAddressesV6) }
      : {}),
    nodePorts: allocateNodePorts(model.services, previous.nodePorts),
    loadBalancerAddresses: allocateLoadBalancerAddresses(model.services, previous.loadBalancerAddresses),
  };
}

/**
 * The id of a service port's IPv4 table (`namespace/name:port/protocol`), also the key of its
 * node port (shared by both families). The IPv6 table's id is this plus `/IPv6`.
 */
export function servicePortId(s: Pick<Service, 'namespace' | 'name'>, p: ServicePort): string {
  return `${s.namespace}/${s.name}:${p.port}/${p.protocol}`;
}

/** The id of a service port's table of `family` (see servicePortId). */
export function serviceTableId(
  s: Pick<Service, 'namespace' | 'name'>,
  p: ServicePort,
  family: IpFamily,
): string {
  return family === 'IPv4' ? servicePortId(s, p) : `${servicePortId(s, p)}/IPv6`;
}

function serviceKey(s: Pick<Service, 'namespace' | 'name'>): string {
  return `${s.namespace}/${s.name}`;
}

function byKey<T extends { namespace: string; name: string }>(items: readonly T[]): T[] {
  return [...items].sort((a, b) => (serviceKey(a) < serviceKey(b) ? -1 : 1));
}

/**
 * Stated node ports as they are; else the port's previous one unless taken meanwhile; else the
 * lowest free one in port-id order. Ports of one service with the same number (53/TCP and 53/UDP)
 * share a node port, as the API server allocates them.
 */
function allocateNodePorts(
  services: readonly Service[],
  previous: Readonly<Record<string, number>> = {},
): Record<string, number> {
  const external = byKey(services.filter((s) => s.type !== 'ClusterIP'));
  const used = new Set(external.flatMap((s) => s.ports.flatMap((p) => p.nodePort ?? [])));
  const out = new Map<string, number>();
  const shared = new Map<string, number>();
  const needing: { key: string; group: string }[] = [];
  const take = (key: string, group: string, port: number): void => {
    out.set(key, port);
    used.add(port);
    if (!shared.has(group)) shared.set(group, port);
  };
  for (const s of external) {
    for (const p of s.ports)
      if (p.nodePort !== undefined) take(servicePortId(s, p), groupOf(s, p), p.nodePort);
    for (const p of s.ports) {
      const key = servicePortId(s, p);
      const group = groupOf(s, p);
      const prev = previous[key];
      if (out.has(key)) continue;
      const sibling = shared.get(group);
      if (sibling !== undefined) take(key, group, sibling);
      else if (prev !== undefined && isNodePort(prev) && !used.has(prev)) take(key, group, prev);
      else needing.push({ key, group });
    }
  }
  let next: number = NODE_PORT_RANGE.first;
  for (const { key, group } of needing) {
    const sibling = shared.get(group);
    if (sibling !== undefined) {
      take(key, group, sibling);
      continue;
    }
    while (used.has(next)) next++;
    if (next > NODE_PORT_RANGE.last)
      throw new Error(
        `node ports ${NODE_PORT_RANGE.first}-${NODE_PORT_RANGE.last} are exhausted (service port ${key} needs one)`,
      );
    take(key, group, next);
  }
  return sortedRecord(out);
}

function groupOf(s: Service, p: ServicePort): string {
  return `${serviceKey(s)}:${p.port}`;
}

function isNodePort(n: number): boolean {
  return Number.isInteger(n) && n >= NODE_PORT_RANGE.first && n <= NODE_PORT_RANGE.last;
}

/**
 * Load-balancer addresses: stated ingress addresses as they are, then requested ones
 * (spec.loadBalancerIP), then each service's previous address unless taken meanwhile, then the
 * lowest free addresses of the pool in service order. Throws ManifestError when a stated or
 * requested address is outside the pool or taken.
 */
function allocateLoadBalancerAddresses(
  services: readonly Service[],
  previous: Readonly<Record<string, readonly string[]>> = {},
): Record<string, string[]> {
  const lbs = byKey(services.filter((s) => s.type === 'LoadBalancer'));
  const issues: ManifestIssue[] = [];
  const issue = (s: Service, field: string, message: string): void => {
    issues.push({ ...s.source, kind: 'Service', object: serviceKey(s), field, message });
  };
  const pool = formatCidr(LOAD_BALANCER_POOL);
  const owners = new Map<string, string>();
  const out = new Map<string, string[]>();
  for (const s of lbs) {
    (s.loadBalancerIngress ?? []).forEach((ip, i) => {
      owners.set(ip, serviceKey(s));
      if (!inAddressRange(LOAD_BALANCER_POOL, ip))
        issue(s, `status.loadBalancer.ingress[${i}].ip`, `${ip} is outside the load-balancer pool ${pool}`);
    });
    if (s.loadBalancerIngress?.length) out.set(serviceKey(s), [...s.loadBalancerIngress]);
  }
  const pending = lbs.filter((s) => !out.has(serviceKey(s)));
  for (const s of pending) {
    const ip = s.loadBalancerIP;
    if (ip === undefined) continue;
    const owner = owners.get(ip);
    if (!inAddressRange(LOAD_BALANCER_POOL, ip))
      issue(s, 'spec.loadBalancerIP', `${ip} is outside the load-balancer pool ${pool}`);
    else if (owner) issue(s, 'spec.loadBalancerIP', `${ip} is already used by service ${owner}`);
    else {
      owners.set(ip, serviceKey(s));
      out.set(serviceKey(s), [ip]);
    }
  }
  if (issues.length > 0)
    throw new ManifestError(
      issues.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : a.line - b.line)),
    );
  const needing: string[] = [];
  for (const s of pending.filter((p) => !out.has(serviceKey(p)))) {
    const prev = previous[serviceKey(s)]?.[0];
    if (prev !== undefined && inAddressRange(LOAD_BALANCER_POOL, prev) && !owners.has(prev)) {
      owners.set(prev, serviceKey(s));
      out.set(serviceKey(s), [prev]);
    } else needing.push(serviceKey(s));
  }
  allocateAddresses(LOAD_BALANCER_POOL, needing.length, new Set(owners.keys())).forEach((a, i) =>
    out.set(needing[i] as string, [a]),
  );
  return sortedRecord(out);
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

function sortedRecord<T>(entries: Iterable<[string, T]>): Record<string, T> {
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

/** The IPv6 address of every pod: its stated one, else its previous one, else a free one. */
function allocatePodAddressesV6(
  pods: readonly Pod[],
  previous: Readonly<Record<string, string>> = {},
): Record<string, string> {
  const wanted = pods.map((p) => ({
    key: podKey(p),
    stated: p.ips.find((a) => addressFamily(a) === 'IPv6'),
  }));
  const used = new Set(pods.flatMap((p) => p.ips));
  return assignAddresses(wanted, used, previous, POD_RANGE_V6);
}

/** The `family` virtual address of every service that has that family. */
function allocateServiceAddresses(
  services: readonly Service[],
  family: IpFamily,
  previous: Readonly<Record<string, string>> = {},
): Record<string, string> {
  const having = services.filter((s) => serviceFamilies(s).includes(family));
  const wanted = having.map((s) => ({ key: `${s.namespace}/${s.name}`, stated: statedClusterIP(s, family) }));
  const used = new Set(having.flatMap((s) => statedClusterIP(s, family) ?? []));
  return assignAddresses(wanted, used, previous, family === 'IPv4' ? SERVICE_RANGE : SERVICE_RANGE_V6);
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
