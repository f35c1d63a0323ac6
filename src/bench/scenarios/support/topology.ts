/**
 * A one-node topology wired the way the lab (and Calico) wires it, built from scratch in a few
 * `ip -batch` runs: a node namespace with ip_forward, pods behind host-side veths with /32
 * routes, and optionally a sender namespace on the node's fabric veth for floods. Neighbour
 * entries are permanent on both sides, so no frame ever waits for ARP (a tcx egress program only
 * sees packets after neighbour resolution; a flood would otherwise die in the ARP queue).
 */
import { BenchNetns } from './netns.js';

export const NODE_ADDRESS = '198.18.255.1';
export const NODE_MAC = '02:00:5e:12:ff:01';
export const SENDER_MAC = '02:00:5e:12:ff:02';
/** The host side of every pod veth, as in the lab: pods reach 169.254.1.1 through it. */
export const HOST_VETH_MAC = 'ee:ee:ee:ee:ee:ee';
const GATEWAY = '169.254.1.1';

export interface BenchPod {
  role: string;
  address: string;
  /** The pod's IPv6 address: routed to it from the node (/128 and a permanent neighbour) too. */
  addressV6?: string;
  /** Host-side veth name in the node namespace (≤ 15 characters). */
  hostInterface: string;
  mac: string;
}

export interface NodeTopologyOptions {
  pods: readonly BenchPod[];
  /** Adds `send` with eth0 wired to the node's fabric0. */
  sender: boolean;
}

export async function buildNodeTopology(ns: BenchNetns, opts: NodeTopologyOptions): Promise<void> {
  await ns.create(['node', ...(opts.sender ? ['send'] : []), ...opts.pods.map((p) => p.role)]);
  if (opts.sender) {
    await ns.veth(
      { role: 'node', ifname: 'fabric0', mac: NODE_MAC, address: `${NODE_ADDRESS}/24` },
      { role: 'send', ifname: 'eth0', mac: SENDER_MAC },
    );
  }
  for (const pod of opts.pods) {
    await ns.veth(
      { role: 'node', ifname: pod.hostInterface, mac: HOST_VETH_MAC },
      { role: pod.role, ifname: 'eth0', mac: pod.mac, address: `${pod.address}/32` },
    );
    await ns.ip('node', [
      `route add ${pod.address}/32 dev ${pod.hostInterface}`,
      `neigh replace ${pod.address} lladdr ${pod.mac} dev ${pod.hostInterface} nud permanent`,
    ]);
    await ns.ip(pod.role, [
      `route add ${GATEWAY} dev eth0 scope link`,
      `route add default via ${GATEWAY} dev eth0`,
      `neigh replace ${GATEWAY} lladdr ${HOST_VETH_MAC} dev eth0 nud permanent`,
    ]);
    // IPv6 floods end at the pod's policy: the node forwards them, the pod never answers.
    if (pod.addressV6) {
      await ns.ip(pod.role, [`addr add ${pod.addressV6}/128 dev eth0 nodad`]);
      await ns.ip('node', [
        `route add ${pod.addressV6}/128 dev ${pod.hostInterface}`,
        `neigh replace ${pod.addressV6} lladdr ${pod.mac} dev ${pod.hostInterface} nud permanent`,
      ]);
    }
  }
  // Flood sources are not routable back through fabric0: the reverse-path check must not be
  // what drops them.
  ns.sysctl('node', [
    ['net/ipv4/ip_forward', '1'],
    ...(opts.pods.some((p) => p.addressV6) ? ([['net/ipv6/conf/all/forwarding', '1']] as const) : []),
    ['net/ipv4/conf/all/rp_filter', '0'],
    ['net/ipv4/conf/default/rp_filter', '0'],
    ...(opts.sender ? ([['net/ipv4/conf/fabric0/rp_filter', '0']] as const) : []),
    ...opts.pods.map((p) => [`net/ipv4/conf/${p.hostInterface}/rp_filter`, '0'] as const),
  ]);
}
