/**
 * The difference between two topologies as `ip` batch lines per namespace, plus the pod ends to
 * configure over netlink. Pure: the exact commands a change runs are unit-tested, and pods that
 * did not change never appear in them.
 */
import {
  FABRIC_BRIDGE,
  FABRIC_PREFIX_LENGTH,
  HOST_VETH_MAC,
  NODE_FABRIC_INTERFACE,
  POD_INTERFACE,
} from './names.js';
import { nodeExternalLines, planOutside } from './outside-plan.js';
import type { LabOutside } from './outside.js';
import type { LabNode, LabPod, Topology } from './topology.js';

export interface NamespaceBatch {
  netns: string;
  lines: string[];
}

/** The pod end of a veth to configure (see configureEndpointInterface). */
export interface PodSide {
  netns: string;
  address: string;
  /** The pod's IPv6 address, with its default route via the host end's fe80::1. */
  addressV6?: string;
}

/** The host end of every pod veth owns this link-local address: the pods' IPv6 next hop. */
export const POD_GATEWAY_V6 = 'fe80::1';

/** A host route's destination: a /32 or a /128. */
function hostPrefix(address: string): string {
  return `${address}/${address.includes(':') ? 128 : 32}`;
}

export interface NamespaceSysctls {
  netns: string;
  entries: [string, string][];
}

export interface KernelPlan {
  /** Pods whose namespaces go: removed, or recreated because their node or address changed. */
  removedPods: LabPod[];
  addedPods: LabPod[];
  removedNodes: LabNode[];
  addedNodes: LabNode[];
  createFabric: boolean;
  /**
   * Links of leaving pods and nodes, deleted explicitly: a namespace dies asynchronously, and its
   * veth peers with it, so a recreated pod could otherwise find its old host interface still there.
   * Run with -force: a link may already be gone.
   */
  unplug: NamespaceBatch[];
  deleteNetns: string[];
  createNetns: string[];
  fabric: NamespaceBatch | undefined;
  /** Routes to remote pods that no longer exist or moved (-force: the route may be gone already). */
  staleRoutes: NamespaceBatch[];
  nodes: NamespaceBatch[];
  sysctls: NamespaceSysctls[];
  /**
   * Pod ends to configure: address/32, a link route to 169.254.1.1 and the default via it (Calico's
   * trick: a link-scoped next hop the host side answers for by proxy ARP), plus a permanent
   * neighbour entry so the first packet never waits for ARP.
   */
  pods: PodSide[];
  /** Outside clients that come and go (their namespaces are in createNetns / deleteNetns). */
  addedOutside: LabOutside[];
  removedOutside: LabOutside[];
  /** Outside client ends to configure, the same way as pods' ends. */
  outsideSides: PodSide[];
  /** Whether the probe server's view (pods, namespaces, ports) changed. */
  probesChanged: boolean;
}

function needsRecreate(prev: LabPod, next: LabPod, removedNodes: ReadonlySet<string>): boolean {
  return (
    prev.node !== next.node ||
    prev.address !== next.address ||
    prev.addressV6 !== next.addressV6 ||
    prev.hostInterface !== next.hostInterface ||
    prev.netns !== next.netns ||
    removedNodes.has(prev.node)
  );
}

/** address → next hop (the owning node's fabric address) for pods not on `node`. */
function remoteRoutes(t: Topology, node: string): Map<string, string> {
  const via = new Map(t.nodes.map((n) => [n.name, n]));
  const out = new Map<string, string>();
  for (const p of t.pods) {
    if (p.node === node) continue;
    const owner = via.get(p.node) as LabNode;
    out.set(p.address, owner.address);
    if (p.addressV6 && owner.addressV6) out.set(p.addressV6, owner.addressV6);
  }
  return out;
}

/**
 * A new pod's host end is born closed: created down and without its route, so nothing reaches the
 * pod (and the pod reaches nothing) until plugLines runs, once its policy is in force.
 */
function createPodLines(p: LabPod): string[] {
  return [
    `link add ${p.hostInterface} address ${HOST_VETH_MAC} type veth peer name ${POD_INTERFACE} netns ${p.netns}`,
    // No IPv6 link-local chatter on lab links: flow logs and counters see only probe traffic.
    `link set ${p.hostInterface} addrgenmode none`,
  ];
}

/** Opens a pod: its host end up, then its /32 (the kernel refuses a route through a link that is down). */
function plugLines(p: LabPod): string[] {
  return [
    `link set ${p.hostInterface} up`,
    `route replace ${p.address}/32 dev ${p.hostInterface} scope link`,
    // IPv6: the host end owns the pods' next hop fe80::1 (so its neighbour solicitations for the
    // pod have a source), no duplicate detection: it is the only fe80::1 on this link.
    ...(p.addressV6
      ? [
          `addr replace ${POD_GATEWAY_V6}/64 dev ${p.hostInterface} nodad`,
          `route replace ${p.addressV6}/128 dev ${p.hostInterface}`,
        ]
      : []),
  ];
}

/**
 * The batches that plug `pods` (ids) of `t`, per node. Idempotent: plugging an open pod changes
 * nothing, so a run that died between plugging and recording it is finished by the next.
 */
export function plugBatches(t: Topology, pods: readonly string[]): NamespaceBatch[] {
  const wanted = new Set(pods);
  const out: NamespaceBatch[] = [];
  for (const n of t.nodes) {
    const lines = t.pods.filter((p) => p.node === n.name && wanted.has(p.id)).flatMap(plugLines);
    if (lines.length > 0) out.push({ netns: n.netns, lines });
  }
  return out;
}

interface NodeDiff {
  prevNodes: Map<string, LabNode>;
  removedNodes: LabNode[];
  addedNodes: LabNode[];
  removedNodeNames: Set<string>;
}

function diffNodes(prev: Topology | undefined, next: Topology): NodeDiff {
  const prevNodes = new Map((prev?.nodes ?? []).map((n) => [n.name, n]));
  const nextNodes = new Map(next.nodes.map((n) => [n.name, n]));
  const removedNodes = (prev?.nodes ?? []).filter((n) => !nextNodes.has(n.name));
  const addedNodes = next.nodes.filter((n) => !prevNodes.has(n.name));
  return { prevNodes, removedNodes, addedNodes, removedNodeNames: new Set(removedNodes.map((n) => n.name)) };
}

/** Pods that go and pods that come; a pod that must be recreated is in both. */
function diffPods(
  prev: Topology | undefined,
  next: Topology,
  removedNodes: ReadonlySet<string>,
): { removedPods: LabPod[]; addedPods: LabPod[] } {
  const prevPods = new Map((prev?.pods ?? []).map((p) => [p.id, p]));
  const nextPods = new Map(next.pods.map((p) => [p.id, p]));
  const removedPods: LabPod[] = [];
  const addedPods: LabPod[] = [];
  for (const p of prev?.pods ?? []) {
    const n = nextPods.get(p.id);
    if (!n || needsRecreate(p, n, removedNodes)) removedPods.push(p);
  }
  for (const p of next.pods) {
    const o = prevPods.get(p.id);
    if (!o || needsRecreate(o, p, removedNodes)) addedPods.push(p);
  }
  return { removedPods, addedPods };
}

/** Links of leaving nodes (in the fabric) and leaving pods (on nodes that stay). */
function unplugBatches(
  prev: Topology | undefined,
  next: Topology,
  nodes: NodeDiff,
  removedPods: readonly LabPod[],
): NamespaceBatch[] {
  const unplug: NamespaceBatch[] = [];
  const fabricUnplug = nodes.removedNodes.map((n) => `link del ${n.fabricPeer}`);
  if (prev !== undefined && fabricUnplug.length > 0)
    unplug.push({ netns: next.fabricNetns, lines: fabricUnplug });
  for (const n of prev?.nodes ?? []) {
    if (nodes.removedNodeNames.has(n.name)) continue;
    const lines = removedPods.filter((p) => p.node === n.name).map((p) => `link del ${p.hostInterface}`);
    if (lines.length > 0) unplug.push({ netns: n.netns, lines });
  }
  return unplug;
}

/** The bridge (on a new lab) and the fabric ends of arriving nodes. */
function fabricLines(createFabric: boolean, addedNodes: readonly LabNode[]): string[] {
  const lines: string[] = [];
  if (createFabric) {
    lines.push(
      'link set lo up',
      `link add ${FABRIC_BRIDGE} type bridge`,
      `link set ${FABRIC_BRIDGE} addrgenmode none`,
      `link set ${FABRIC_BRIDGE} up`,
    );
  }
  for (const n of addedNodes) {
    lines.push(
      `link add ${n.fabricPeer} type veth peer name ${NODE_FABRIC_INTERFACE} netns ${n.netns}`,
      `link set ${n.fabricPeer} addrgenmode none`,
      `link set ${n.fabricPeer} master ${FABRIC_BRIDGE}`,
      `link set ${n.fabricPeer} up`,
    );
  }
  return lines;
}

/**
 * A node's IPv6 fabric addresses: its global one (a /64 on the fabric) and a link-local one,
 * without which the kernel sends no neighbour solicitation for a packet it forwards (it takes
 * their source from the link's link-local address). No duplicate detection: allocation makes
 * them unique, and it would hold traffic back for a second.
 */
function nodeV6Lines(n: LabNode): string[] {
  if (!n.addressV6) return [];
  const host = n.addressV6.slice(n.addressV6.lastIndexOf(':') + 1);
  return [
    `addr replace ${n.addressV6}/64 dev ${NODE_FABRIC_INTERFACE} nodad`,
    `addr replace fe80::ff:${host}/64 dev ${NODE_FABRIC_INTERFACE} nodad`,
  ];
}

/** A node's own setup: a new node is brought up, a readdressed one gets its new fabric address. */
function nodeAddressLines(old: LabNode | undefined, n: LabNode): string[] {
  if (!old) {
    return [
      'link set lo up',
      `link set ${NODE_FABRIC_INTERFACE} addrgenmode none`,
      `addr add ${n.address}/${FABRIC_PREFIX_LENGTH} dev ${NODE_FABRIC_INTERFACE}`,
      ...nodeV6Lines(n),
      `link set ${NODE_FABRIC_INTERFACE} up`,
    ];
  }
  if (old.address === n.address) return old.addressV6 === n.addressV6 ? [] : nodeV6Lines(n);
  return [
    `addr flush dev ${NODE_FABRIC_INTERFACE}`,
    `addr add ${n.address}/${FABRIC_PREFIX_LENGTH} dev ${NODE_FABRIC_INTERFACE}`,
    ...nodeV6Lines(n),
  ];
}

interface NodeChanges {
  staleRoutes: NamespaceBatch[];
  nodes: NamespaceBatch[];
  sysctls: NamespaceSysctls[];
}

/** Per node of `next`: its setup, its arriving pods' host ends, and routes to remote pods. */
function nodeChanges(
  prev: Topology | undefined,
  next: Topology,
  prevNodes: ReadonlyMap<string, LabNode>,
  addedPods: readonly LabPod[],
  opts: PlanOptions,
): NodeChanges {
  const out: NodeChanges = { staleRoutes: [], nodes: [], sysctls: [] };
  for (const n of next.nodes) {
    const old = prevNodes.get(n.name);
    const readdressed = old !== undefined && (old.address !== n.address || old.addressV6 !== n.addressV6);
    const lines = nodeAddressLines(old, n);
    lines.push(...nodeExternalLines(old, n, readdressed || opts.resync !== undefined));
    const entries: [string, string][] = old ? [] : [['net/ipv4/ip_forward', '1']];
    if (n.addressV6 && !old?.addressV6) entries.push(['net/ipv6/conf/all/forwarding', '1']);
    for (const p of addedPods.filter((p) => p.node === n.name)) {
      lines.push(...createPodLines(p));
      entries.push(
        [`net/ipv4/conf/${p.hostInterface}/proxy_arp`, '1'],
        // The default 0.8 s random delay of proxied ARP answers would stall first packets.
        [`net/ipv4/neigh/${p.hostInterface}/proxy_delay`, '0'],
      );
    }
    const want = remoteRoutes(next, n.name);
    // A readdressed node lost its connected fabric route and every route through it.
    // Recovering (opts.resync): what an interrupted run did to the routes is unknown, so every
    // remote route is written again (replacing an equal route changes nothing).
    const had =
      old && !readdressed && prev && !opts.resync ? remoteRoutes(prev, n.name) : new Map<string, string>();
    for (const [address, via] of want) {
      if (had.get(address) !== via)
        lines.push(`route replace ${hostPrefix(address)} via ${via} dev ${NODE_FABRIC_INTERFACE}`);
    }
    const stale = [...had]
      .filter(([address]) => !want.has(address))
      .map(([address, via]) => `route del ${hostPrefix(address)} via ${via} dev ${NODE_FABRIC_INTERFACE}`);
    if (old && opts.resync) {
      const inNext = new Set(next.pods.map((p) => p.address));
      for (const address of new Set(opts.resync.addresses))
        if (!inNext.has(address)) stale.push(`route del ${hostPrefix(address)} dev ${NODE_FABRIC_INTERFACE}`);
    }
    if (stale.length > 0) out.staleRoutes.push({ netns: n.netns, lines: stale });
    if (lines.length > 0) out.nodes.push({ netns: n.netns, lines });
    if (entries.length > 0) out.sysctls.push({ netns: n.netns, entries });
  }
  return out;
}

export interface PlanOptions {
  /**
   * `prev` is what an interrupted run left (see recover.ts): routes are written again, and those to
   * any of `addresses` (every pod that run knew) that `next` lacks are removed.
   */
  resync?: { addresses: readonly string[] };
}

export function planChanges(prev: Topology | undefined, next: Topology, opts: PlanOptions = {}): KernelPlan {
  const nodeDiff = diffNodes(prev, next);
  const { removedNodes, addedNodes } = nodeDiff;
  const { removedPods, addedPods } = diffPods(prev, next, nodeDiff.removedNodeNames);
  const createFabric = prev === undefined;
  const outside = planOutside(prev, next, opts.resync !== undefined);
  const fabric = [...fabricLines(createFabric, addedNodes), ...outside.fabric];
  const changes = nodeChanges(prev, next, nodeDiff.prevNodes, addedPods, opts);
  const inFabric = (lines: string[]): NamespaceBatch[] =>
    lines.length > 0 ? [{ netns: next.fabricNetns, lines }] : [];
  const probeView = (t: Topology | undefined): string =>
    JSON.stringify((t?.pods ?? []).map((p) => [p.id, p.netns, p.ports]).sort());
  return {
    removedPods,
    addedPods,
    removedNodes,
    addedNodes,
    createFabric,
    unplug: [...unplugBatches(prev, next, nodeDiff, removedPods), ...inFabric(outside.unplug)],
    deleteNetns: [
      ...removedPods.map((p) => p.netns),
      ...removedNodes.map((n) => n.netns),
      ...outside.removed.map((o) => o.netns),
    ],
    createNetns: [
      ...(createFabric ? [next.fabricNetns] : []),
      ...addedNodes.map((n) => n.netns),
      ...addedPods.map((p) => p.netns),
      ...outside.added.map((o) => o.netns),
    ],
    fabric: fabric.length > 0 ? { netns: next.fabricNetns, lines: fabric } : undefined,
    staleRoutes: [...changes.staleRoutes, ...inFabric(outside.staleRoutes)],
    nodes: changes.nodes,
    sysctls:
      outside.sysctls.length > 0
        ? [{ netns: next.fabricNetns, entries: outside.sysctls }, ...changes.sysctls]
        : changes.sysctls,
    pods: addedPods.map((p) => ({
      netns: p.netns,
      address: p.address,
      ...(p.addressV6 ? { addressV6: p.addressV6 } : {}),
    })),
    addedOutside: outside.added,
    removedOutside: outside.removed,
    outsideSides: outside.sides,
    probesChanged: probeView(prev) !== probeView(next) || addedPods.length > 0,
  };
}

export function planIsEmpty(p: KernelPlan): boolean {
  return (
    p.removedPods.length === 0 &&
    p.addedPods.length === 0 &&
    p.removedNodes.length === 0 &&
    p.addedNodes.length === 0 &&
    p.nodes.length === 0 &&
    p.staleRoutes.length === 0 &&
    p.fabric === undefined &&
    p.addedOutside.length === 0 &&
    p.removedOutside.length === 0 &&
    !p.createFabric
  );
}
