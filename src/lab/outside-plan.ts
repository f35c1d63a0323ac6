/**
 * The outside's part of a kernel plan (see outside.ts): the fabric namespace becomes the router
 * between outside clients, node external addresses and load-balancer addresses; nodes get their
 * external address and a route back to the outside range. Pure, like plan.ts.
 */
import { formatCidr } from '../util/ip.js';
import { FABRIC_BRIDGE, HOST_VETH_MAC, NODE_FABRIC_INTERFACE, POD_INTERFACE } from './names.js';
import { OUTSIDE_RANGE } from '../calc/index.js';
import {
  EXTERNAL_GATEWAY,
  EXTERNAL_PREFIX_LENGTH,
  type LabLoadBalancer,
  type LabOutside,
} from './outside.js';
import type { LabNode, Topology } from './topology.js';

export interface OutsidePlan {
  added: LabOutside[];
  removed: LabOutside[];
  /** In the fabric namespace, after its bridge exists: the gateway, new clients, load-balancer routes. */
  fabric: string[];
  /** Links of leaving clients in the fabric (-force: a link may be gone already). */
  unplug: string[];
  /** Routes of load-balancer addresses that went (-force). */
  staleRoutes: string[];
  /** The fabric namespace's sysctls. */
  sysctls: [string, string][];
  /** Client ends to configure like a pod's: address/32, default via 169.254.1.1 on eth0. */
  sides: { netns: string; address: string }[];
}

/** A client's fabric end: born up and routed (the outside has no policy to wait for). */
function clientLines(o: LabOutside): string[] {
  return [
    `link add ${o.fabricPeer} address ${HOST_VETH_MAC} type veth peer name ${POD_INTERFACE} netns ${o.netns}`,
    `link set ${o.fabricPeer} addrgenmode none`,
    `link set ${o.fabricPeer} up`,
    `route replace ${o.address}/32 dev ${o.fabricPeer} scope link`,
  ];
}

function loadBalancerLine(lb: LabLoadBalancer): string {
  // One node: a plain route; several: ECMP, hashed on ports too (fib_multipath_hash_policy=1),
  // so new connections from one client spread over the nodes.
  const via =
    lb.via.length === 1
      ? `via ${lb.via[0] ?? ''} dev ${FABRIC_BRIDGE}`
      : lb.via.map((a) => `nexthop via ${a} dev ${FABRIC_BRIDGE}`).join(' ');
  return `route replace ${lb.address}/32 ${via}`;
}

/**
 * `resync`: what is in the kernel is uncertain (recovering an interrupted run): the gateway, every
 * client's route and every load-balancer route are written again (replacing an equal one changes nothing).
 */
export function planOutside(prev: Topology | undefined, next: Topology, resync: boolean): OutsidePlan {
  const before = new Map((prev?.outside ?? []).map((o) => [o.name, o]));
  const after = new Map((next.outside ?? []).map((o) => [o.name, o]));
  const added = (next.outside ?? []).filter((o) => !before.has(o.name));
  const removed = (prev?.outside ?? []).filter((o) => !after.has(o.name));
  const fabric: string[] = [];
  const sysctls: [string, string][] = [];
  // A new lab, or one made before the outside existed, gets the fabric's router setup.
  if (prev?.outside === undefined || resync) {
    fabric.push(`addr replace ${EXTERNAL_GATEWAY}/${EXTERNAL_PREFIX_LENGTH} dev ${FABRIC_BRIDGE}`);
    sysctls.push(['net/ipv4/ip_forward', '1'], ['net/ipv4/fib_multipath_hash_policy', '1']);
  }
  for (const o of added) {
    fabric.push(...clientLines(o));
    sysctls.push(
      [`net/ipv4/conf/${o.fabricPeer}/proxy_arp`, '1'],
      [`net/ipv4/neigh/${o.fabricPeer}/proxy_delay`, '0'],
    );
  }
  if (resync)
    for (const o of next.outside ?? [])
      if (before.has(o.name)) fabric.push(`route replace ${o.address}/32 dev ${o.fabricPeer} scope link`);
  const lbBefore = new Map((prev?.loadBalancers ?? []).map((lb) => [lb.address, lb.via.join(',')]));
  const lbAfter = new Set((next.loadBalancers ?? []).map((lb) => lb.address));
  for (const lb of next.loadBalancers ?? [])
    if (resync || lbBefore.get(lb.address) !== lb.via.join(',')) fabric.push(loadBalancerLine(lb));
  const staleRoutes = [...lbBefore.keys()].filter((a) => !lbAfter.has(a)).map((a) => `route del ${a}/32`);
  return {
    added,
    removed,
    fabric,
    unplug: removed.map((o) => `link del ${o.fabricPeer}`),
    staleRoutes,
    sysctls,
    sides: added.map((o) => ({ netns: o.netns, address: o.address })),
  };
}

/**
 * A node's external address on its fabric link and its route back to the outside, after the link
 * is up (a gateway route needs the connected route). Written for a new node, a changed address,
 * or `rewrite` (a readdressed node's flush took them, or recovery).
 */
export function nodeExternalLines(old: LabNode | undefined, n: LabNode, rewrite: boolean): string[] {
  if (!n.externalAddress) return [];
  if (old && !rewrite && old.externalAddress === n.externalAddress) return [];
  const lines: string[] = [];
  // A readdressed node's flush already took the old one.
  if (!rewrite && old?.externalAddress && old.externalAddress !== n.externalAddress)
    lines.push(`addr del ${old.externalAddress}/${EXTERNAL_PREFIX_LENGTH} dev ${NODE_FABRIC_INTERFACE}`);
  lines.push(
    `addr replace ${n.externalAddress}/${EXTERNAL_PREFIX_LENGTH} dev ${NODE_FABRIC_INTERFACE}`,
    `route replace ${formatCidr(OUTSIDE_RANGE)} via ${EXTERNAL_GATEWAY} dev ${NODE_FABRIC_INTERFACE}`,
  );
  return lines;
}
