/**
 * Node ports and load-balancer addresses in the connect-time load balancer: a pod that connects
 * to a node's external address and node port, or to a load-balancer address, is translated at
 * connect like a cluster IP, to any ready backend (kube-proxy treats traffic from inside the
 * cluster to these addresses the same way). Without it a pod reaching its own node's port would
 * meet the node's stack (no listener: refused), and a backend could not reach itself through its
 * own node port (hairpin). Load-balancer addresses become VIPs (a port they do not serve is
 * refused); node addresses do not (their other ports belong to the node).
 */
import type { IR, ServicePortTable } from '../../ir/types.js';
import { IPPROTO } from './layout.js';
import { isIpv4 } from './node.js';
import { reachedFromOutside } from './nodeport-sync.js';
import type { DesiredServicePort, DesiredServices } from './services-sync.js';

/**
 * `desired` (desiredServicesOf `tables`, default every table of the IR) with the ports at node
 * addresses and load-balancer addresses of those tables.
 */
export function withOutsideAddresses(
  desired: DesiredServices,
  ir: IR,
  tables: Iterable<ServicePortTable> = ir.services,
): DesiredServices {
  const byId = new Map(desired.ports.map((p) => [p.id, p]));
  const external = ir.nodes
    .map((n) => n.externalAddress)
    .filter((a): a is string => a !== undefined && isIpv4(a))
    .sort();
  const ports: DesiredServicePort[] = [];
  const vips = new Set(desired.vips);
  for (const t of tables) {
    const base = byId.get(t.id);
    // Node ports and load-balancer addresses are IPv4 only: an IPv6 cluster IP has none here.
    if (!base || !reachedFromOutside(t) || !isIpv4(t.address)) continue;
    const proto = IPPROTO[t.protocol];
    // internalTrafficPolicy does not apply to these addresses (kube-proxy): every backend.
    const { flags: _internal, ...every } = base;
    const at = (vip: string, port: number, where: string, marksVip: boolean): DesiredServicePort => ({
      ...every,
      id: `${t.id}@${where}`,
      key: { vip, port, proto, node: 0 },
      marksVip,
    });
    if (t.nodePort !== undefined) for (const e of external) ports.push(at(e, t.nodePort, e, false));
    for (const lb of (t.loadBalancerIPs ?? []).filter(isIpv4)) {
      vips.add(lb);
      ports.push(at(lb, t.port, lb, true));
    }
  }
  return { ...desired, ports: [...desired.ports, ...ports], vips: [...vips].sort() };
}
