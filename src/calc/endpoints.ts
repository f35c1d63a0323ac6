/** Pods → IR endpoints: their allocated node and address, namespace labels and a stable host interface name. */
import { createHash } from 'node:crypto';
import type { Endpoint } from '../ir/types.js';
import { podKey, type Model } from '../model/types.js';
import { flat } from '../util/intern.js';
import { ipv4First, MissingAllocationError, type Allocations } from './allocate.js';

/** `sy` + 11 hex digits of the endpoint id's hash: unique, stable, and within IFNAMSIZ (15). */
export function hostInterfaceName(endpointId: string): string {
  // Kept per endpoint: one string, not the pieces of a concatenation (util/intern.ts).
  return flat('sy' + createHash('sha256').update(endpointId).digest('hex').slice(0, 11));
}

/** A pod's addresses, IPv4 first, with its allocated IPv6 one when it states none of that family. */
function withV6(addresses: readonly string[], v6: string | undefined): string[] {
  const all = v6 !== undefined && !addresses.some((a) => a.includes(':')) ? [...addresses, v6] : addresses;
  return ipv4First(all);
}

export function buildEndpoints(model: Model, allocations: Allocations): Endpoint[] {
  const nsLabels = new Map(model.namespaces.map((n) => [n.name, n.labels]));
  const nodes = new Set(allocations.nodes);
  const pods = [...model.pods].sort((a, b) => (podKey(a) < podKey(b) ? -1 : 1));
  return pods.map((pod) => {
    // Kept in the IR: flat, not the pieces of a concatenation (util/intern.ts).
    const id = flat(podKey(pod));
    const node = pod.nodeName ?? allocations.podNodes[id];
    if (node === undefined || !nodes.has(node))
      throw new MissingAllocationError(`pod ${id} is not placed on a node of the allocations`);
    const allocated = allocations.podAddresses[id];
    if (pod.ips.length === 0 && allocated === undefined)
      throw new MissingAllocationError(`pod ${id} has no address`);
    return {
      id,
      namespace: pod.namespace,
      name: pod.name,
      node,
      addresses: withV6(
        pod.ips.length > 0 ? pod.ips : [allocated as string],
        allocations.podAddressesV6?.[id],
      ),
      labels: { ...pod.labels },
      namespaceLabels: { ...(nsLabels.get(pod.namespace) ?? {}) },
      ports: pod.ports.map((p) => ({
        ...(p.name ? { name: p.name } : {}),
        port: p.containerPort,
        protocol: p.protocol,
      })),
      hostInterface: hostInterfaceName(id),
    };
  });
}
