/**
 * What one node does with a service port, for both netfilter backends: which backends traffic to
 * the cluster IP may use (internalTrafficPolicy), which traffic from outside may use
 * (externalTrafficPolicy), and where traffic from outside enters (the node port on this node's
 * external address, the load-balancer addresses). The NAT rules and the reject/drop rules of a
 * backend are both derived from it, so they always agree.
 */
import type { IR, ServiceBackend, ServicePortTable } from '../../ir/types.js';

export function sortedBackends(t: ServicePortTable): ServiceBackend[] {
  // Sorted so the chains do not depend on IR order; duplicates cannot arise (one per pod).
  return [...t.backends].sort((a, b) => (a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0));
}

/** What one node does with a service port: which backends each kind of traffic may use. */
export interface PortView {
  table: ServicePortTable;
  /** Every backend (sorted). */
  all: ServiceBackend[];
  /** The backends on this node (sorted). */
  local: ServiceBackend[];
  /** The node port, when the node has an external address to serve it on. */
  nodePort: number | undefined;
  loadBalancerIPs: string[];
  /** Traffic to the cluster IP: every backend, or only this node's (internalTrafficPolicy Local). */
  internal: ServiceBackend[];
  /** Traffic from outside (node port, load-balancer addresses): likewise, by externalTrafficPolicy. */
  external: ServiceBackend[];
  /** Whether any traffic enters from outside at all. */
  exposed: boolean;
}

/** The node's view of a service port: shared by the NAT and filter rules, so they always agree. */
export function portView(t: ServicePortTable, node: string, externalAddress: string | undefined): PortView {
  const all = sortedBackends(t);
  const local = all.filter((b) => b.node === node);
  // Nodes' external addresses are IPv4: node ports are reached through the IPv4 table only.
  const nodePort = externalAddress !== undefined && t.family !== 6 ? t.nodePort : undefined;
  const v6 = t.family === 6;
  const loadBalancerIPs = [
    ...new Set((t.loadBalancerIPs ?? []).filter((a) => a.includes(':') === v6)),
  ].sort();
  return {
    table: t,
    all,
    local,
    nodePort,
    loadBalancerIPs,
    internal: t.internalTrafficPolicy === 'Local' ? local : all,
    external: t.externalTrafficPolicy === 'Local' ? local : all,
    exposed: nodePort !== undefined || loadBalancerIPs.length > 0,
  };
}

/** The node's external address (where node ports are served), if the IR gives it one. */
export function externalAddressOf(nodeIr: IR, node: string): string | undefined {
  const address = nodeIr.nodes.find((n) => n.name === node)?.externalAddress;
  return address !== undefined && !address.includes(':') ? address : undefined;
}

/** Whether some traffic picks among this node's backends only (a Local policy that has some). */
export function picksLocal(v: PortView): boolean {
  const t = v.table;
  return (
    v.local.length > 0 &&
    (t.internalTrafficPolicy === 'Local' || (v.exposed && t.externalTrafficPolicy === 'Local'))
  );
}
