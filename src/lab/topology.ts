/**
 * IR → the lab's shape: which namespaces exist, how they are named and addressed. Pure, so the
 * plan (and its names) can be checked without root.
 */
import {
  INFRA_RANGE,
  INFRA_RANGE_V6,
  isPodAddress,
  POD_RANGE,
  POD_RANGE_V6,
  servedPorts,
} from '../calc/index.js';
import type { Endpoint, IR } from '../ir/types.js';
import { formatAddress, formatCidr, parseAddress } from '../util/ip.js';
import { LabError } from './errors.js';
import {
  buildOutside,
  DEFAULT_OUTSIDE,
  loadBalancerRoutes,
  nodeExternalAddress,
  type LabLoadBalancer,
  type LabOutside,
} from './outside.js';
import {
  AGENTS_CGROUP,
  fabricNetns,
  fabricPeerName,
  netnsPrefix,
  nodeSlug,
  podSlug,
  SlugAllocator,
} from './names.js';

export interface LabPort {
  port: number;
  protocol: 'TCP' | 'UDP';
}

export interface LabNode {
  name: string;
  slug: string;
  netns: string;
  /** Address on the fabric (from IR Node.address). */
  address: string;
  /** The node's link as seen in the fabric namespace. */
  fabricPeer: string;
  /** Where the outside reaches the node: a second address on its fabric link (IR Node.externalAddress). */
  externalAddress?: string;
  /**
   * IPv6 fabric address (fd00:5957:0:ff::n beside 198.18.255.n), set when the lab's pods have
   * IPv6 addresses; the node's fabric link then also has the link-local fe80::ff:n that neighbour
   * discovery for forwarded packets is sent from.
   */
  addressV6?: string;
}

export interface LabPod {
  /** `namespace/name` */
  id: string;
  namespace: string;
  name: string;
  node: string;
  /** Namespace name without `sy-<lab>-`; also the pod's cgroup directory. */
  slug: string;
  netns: string;
  address: string;
  /** The pod's IPv6 address (fd00:5957::/64), when it has one. */
  addressV6?: string;
  hostInterface: string;
  /** What the probe server listens on. */
  ports: LabPort[];
}

export interface Topology {
  lab: string;
  fabricNetns: string;
  nodes: LabNode[];
  pods: LabPod[];
  /** Client namespaces outside the cluster (absent in labs from before the outside existed). */
  outside?: LabOutside[];
  /** Load-balancer addresses the fabric routes to nodes. */
  loadBalancers?: LabLoadBalancer[];
}

/** Probe servers answer on every port the pod serves (see servedPorts), except SCTP, which they cannot. */
export function probePorts(e: Endpoint): LabPort[] {
  const seen = new Map<string, LabPort>();
  for (const p of servedPorts(e)) {
    if (p.protocol === 'SCTP') continue;
    seen.set(`${p.port}/${p.protocol}`, { port: p.port, protocol: p.protocol });
  }
  return [...seen.values()].sort((a, b) => a.port - b.port || (a.protocol < b.protocol ? -1 : 1));
}

/** The pod's IPv6 address, if it has one: only from the lab's IPv6 pod range. */
function podAddressV6(e: Endpoint): string | undefined {
  const v6 = e.addresses.find((a) => a.includes(':'));
  if (v6 !== undefined && !isPodAddress(v6))
    throw new LabError(
      `pod ${e.id}: address ${v6} (status.podIPs) is outside the lab's IPv6 pod range ${formatCidr(POD_RANGE_V6)}; ` +
        'remove it or pick an address in range',
    );
  return v6;
}

/** fd00:5957:0:ff::n for the node at 198.18.255.n: the same host number in the IPv6 infrastructure range. */
export function nodeAddressV6(address: string): string {
  const a = parseAddress(address);
  if (a?.family !== 4) throw new LabError(`node address ${address} is not IPv4`);
  return formatAddress({ family: 6, value: INFRA_RANGE_V6.base + (a.value - INFRA_RANGE.base) });
}

function podAddress(e: Endpoint): string {
  const v4 = e.addresses.find((a) => !a.includes(':'));
  if (!v4) throw new LabError(`pod ${e.id} has no IPv4 address (the lab gives every pod one)`);
  if (!isPodAddress(v4)) {
    throw new LabError(
      `pod ${e.id}: address ${v4} (status.podIP) is outside the lab's pod range ${formatCidr(POD_RANGE)} ` +
        `(${formatCidr(INFRA_RANGE)} is reserved for nodes); remove status.podIP or pick an address in range`,
    );
  }
  return v4;
}

export function buildTopology(
  lab: string,
  ir: IR,
  previous?: Topology,
  outside: readonly string[] = [DEFAULT_OUTSIDE],
): Topology {
  const prefix = netnsPrefix(lab);
  const prevNodes = new Map((previous?.nodes ?? []).map((n) => [n.name, n]));
  const prevPods = new Map((previous?.pods ?? []).map((p) => [p.id, p]));
  const slugs = new SlugAllocator(['fabric', AGENTS_CGROUP]);
  // Names in use keep their slug; only then do newcomers pick theirs.
  for (const n of ir.nodes) {
    const prev = prevNodes.get(n.name);
    if (prev) slugs.keep(prev.slug);
  }
  for (const e of ir.endpoints) {
    const prev = prevPods.get(e.id);
    if (prev) slugs.keep(prev.slug);
  }
  for (const o of previous?.outside ?? []) if (outside.includes(o.name)) slugs.keep(o.slug);
  const dualStack = ir.endpoints.some((e) => e.addresses.some((a) => a.includes(':')));
  const nodes: LabNode[] = ir.nodes.map((n) => {
    const slug = prevNodes.get(n.name)?.slug ?? slugs.assign(`node:${n.name}`, nodeSlug(n.name));
    const externalAddress = nodeExternalAddress(n);
    return {
      name: n.name,
      slug,
      netns: prefix + slug,
      address: n.address,
      fabricPeer: fabricPeerName(n.name),
      ...(externalAddress ? { externalAddress } : {}),
      ...(dualStack ? { addressV6: nodeAddressV6(n.address) } : {}),
    };
  });
  const nodeNames = new Set(nodes.map((n) => n.name));
  const owners = new Map<string, string>();
  const pods: LabPod[] = ir.endpoints.map((e) => {
    if (!nodeNames.has(e.node)) throw new LabError(`pod ${e.id} is placed on unknown node '${e.node}'`);
    const address = podAddress(e);
    const addressV6 = podAddressV6(e);
    for (const a of [address, ...(addressV6 ? [addressV6] : [])]) {
      const clash = owners.get(a);
      if (clash) throw new LabError(`pods ${clash} and ${e.id} both have address ${a}`);
      owners.set(a, e.id);
    }
    const slug = prevPods.get(e.id)?.slug ?? slugs.assign(`pod:${e.id}`, podSlug(e.namespace, e.name));
    return {
      id: e.id,
      namespace: e.namespace,
      name: e.name,
      node: e.node,
      slug,
      netns: prefix + slug,
      address,
      ...(addressV6 ? { addressV6 } : {}),
      hostInterface: e.hostInterface,
      ports: probePorts(e),
    };
  });
  const external = new Map(nodes.flatMap((n) => (n.externalAddress ? [[n.name, n.externalAddress]] : [])));
  return {
    lab,
    fabricNetns: fabricNetns(lab),
    nodes,
    pods,
    // After pods and nodes, so they keep the slugs they would have had without an outside.
    outside: buildOutside(prefix, outside, previous?.outside ?? [], slugs),
    loadBalancers: loadBalancerRoutes(ir, external),
  };
}

/** Every namespace name of a topology, fabric first. */
export function topologyNetns(t: Topology): string[] {
  return [
    t.fabricNetns,
    ...t.nodes.map((n) => n.netns),
    ...t.pods.map((p) => p.netns),
    ...(t.outside ?? []).map((o) => o.netns),
  ];
}
