/** Pods → IR endpoints: placement, addresses, namespace labels and a stable host interface name. */
import { createHash } from 'node:crypto';
import type { Endpoint } from '../ir/types.js';
import { podKey, type Model } from '../model/types.js';
import { allocateAddresses, INFRA_RANGE, POD_RANGE } from './addresses.js';

/** `sy` + 11 hex digits of the endpoint id's hash: unique, stable, and within IFNAMSIZ (15). */
export function hostInterfaceName(endpointId: string): string {
  return 'sy' + createHash('sha256').update(endpointId).digest('hex').slice(0, 11);
}

export function buildEndpoints(
  model: Model,
  placement: ReadonlyMap<string, string>,
  previousAddresses: Record<string, string> = {},
): Endpoint[] {
  const nsLabels = new Map(model.namespaces.map((n) => [n.name, n.labels]));
  const pods = [...model.pods].sort((a, b) => (podKey(a) < podKey(b) ? -1 : 1));
  const used = new Set<string>(pods.flatMap((p) => p.ips));
  const addresses = new Map<string, string[]>();
  const needing: string[] = [];
  for (const pod of pods) {
    const key = podKey(pod);
    const prev = previousAddresses[key];
    if (pod.ips.length > 0) addresses.set(key, pod.ips);
    else if (prev && !used.has(prev)) {
      addresses.set(key, [prev]);
      used.add(prev);
    } else needing.push(key);
  }
  const fresh = allocateAddresses(POD_RANGE, needing.length, used, INFRA_RANGE);
  needing.forEach((key, i) => addresses.set(key, [fresh[i] as string]));

  return pods.map((pod) => {
    const id = podKey(pod);
    return {
      id,
      namespace: pod.namespace,
      name: pod.name,
      node: placement.get(id) as string,
      addresses: [...(addresses.get(id) as string[])].sort(
        (a, b) => Number(a.includes(':')) - Number(b.includes(':')),
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
