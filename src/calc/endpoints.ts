/** Pods → IR endpoints: their allocated node and address, namespace labels and a stable host interface name. */
import { hash } from 'node:crypto';
import type { Endpoint } from '../ir/types.js';
import { podKey, type Labels, type Model, type Pod } from '../model/types.js';
import { flat } from '../util/intern.js';
import { ipv4First, MissingAllocationError, type Allocations } from './allocate.js';

/** `sy` + 11 hex digits of the endpoint id's hash: unique, stable, and within IFNAMSIZ (15). */
export function hostInterfaceName(endpointId: string): string {
  // Kept per endpoint: one string, not the pieces of a concatenation (util/intern.ts). One-shot
  // hash: no Hash object per endpoint (50k of them on a large cluster's first build).
  return flat('sy' + hash('sha256', endpointId, 'hex').slice(0, 11));
}

/** A pod's addresses, IPv4 first, with its allocated IPv6 one when it states none of that family. */
function withV6(addresses: readonly string[], v6: string | undefined): string[] {
  const all = v6 !== undefined && !addresses.some((a) => a.includes(':')) ? [...addresses, v6] : addresses;
  return ipv4First(all);
}

export function buildEndpoints(model: Model, allocations: Allocations): Endpoint[] {
  const nsLabels = new Map(model.namespaces.map((n) => [n.name, n.labels]));
  const builder = endpointBuilder(allocations);
  const pods = [...model.pods].sort((a, b) => (podKey(a) < podKey(b) ? -1 : 1));
  return pods.map((pod) => builder(pod, nsLabels.get(pod.namespace)));
}

/**
 * One pod's endpoint at a time, as buildEndpoints makes it (the incremental calculation builds
 * pods one by one: what every pod shares, the allocations' node set, is made once here).
 */
export function endpointBuilder(
  allocations: Allocations,
): (pod: Pod, namespaceLabels: Labels | undefined) => Endpoint {
  const nodes = new Set(allocations.nodes);
  return (pod, namespaceLabels) => {
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
      namespaceLabels: { ...(namespaceLabels ?? {}) },
      ports: pod.ports.map((p) => ({
        ...(p.name ? { name: p.name } : {}),
        port: p.containerPort,
        protocol: p.protocol,
      })),
      hostInterface: hostInterfaceName(id),
    };
  };
}
