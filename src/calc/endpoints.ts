/** Pods → IR endpoints: their allocated node and address, namespace labels and a stable host interface name. */
import { hash } from 'node:crypto';
import type { Endpoint } from '../ir/types.js';
import { podKey, type ContainerPort, type Labels, type Model, type Pod } from '../model/types.js';
import { flat } from '../util/intern.js';
import { ipv4First, MissingAllocationError, type Allocations } from './allocate.js';

/**
 * What an endpoint takes from its pod and namespace: the very object when the model shares it
 * frozen (util/intern.ts shares a manifest's label maps and port lists, frozen), else a copy. Each
 * endpoint had its own copy of all three: at 10k endpoints, 30,000 objects and their arrays.
 */
const EMPTY_LABELS: Labels = Object.freeze({});

function labelsOf(labels: Labels | undefined): Labels {
  if (labels === undefined) return EMPTY_LABELS;
  return Object.isFrozen(labels) ? labels : { ...labels };
}

/** A frozen port list's endpoint ports, made once for every endpoint that shares the list. */
const endpointPortsOf = new WeakMap<readonly ContainerPort[], Endpoint['ports']>();

function portsOf(ports: readonly ContainerPort[]): Endpoint['ports'] {
  const known = endpointPortsOf.get(ports);
  if (known) return known;
  const converted = ports.map((p) => ({
    ...(p.name ? { name: p.name } : {}),
    port: p.containerPort,
    protocol: p.protocol,
  }));
  if (!Object.isFrozen(ports)) return converted;
  // Frozen at run time like the list it is made from; the IR's type does not say so.
  const shared = Object.freeze(converted.map((p) => Object.freeze(p))) as Endpoint['ports'];
  endpointPortsOf.set(ports, shared);
  return shared;
}

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
      labels: labelsOf(pod.labels),
      namespaceLabels: labelsOf(namespaceLabels),
      ports: portsOf(pod.ports),
      hostInterface: hostInterfaceName(id),
    };
  };
}
