/** Services → per-port tables of virtual address and backends (targetPort names resolved per pod). */
import type { Endpoint, ServicePortTable } from '../ir/types.js';
import type { Model } from '../model/types.js';
import { allocateAddresses, SERVICE_RANGE } from './addresses.js';

export function buildServices(
  model: Model,
  endpoints: readonly Endpoint[],
  previous: Record<string, string> = {},
): ServicePortTable[] {
  const services = [...model.services].sort((a, b) =>
    `${a.namespace}/${a.name}` < `${b.namespace}/${b.name}` ? -1 : 1,
  );
  const used = new Set(services.flatMap((s) => (s.clusterIP ? [s.clusterIP] : [])));
  const vip = new Map<string, string>();
  const needing: string[] = [];
  for (const s of services) {
    const key = `${s.namespace}/${s.name}`;
    const prev = previous[key];
    if (s.clusterIP) vip.set(key, s.clusterIP);
    else if (prev && !used.has(prev)) {
      vip.set(key, prev);
      used.add(prev);
    } else needing.push(key);
  }
  allocateAddresses(SERVICE_RANGE, needing.length, used).forEach((a, i) => vip.set(needing[i] as string, a));

  return services.flatMap((s) => {
    const key = `${s.namespace}/${s.name}`;
    const selected = s.selector
      ? endpoints.filter(
          (ep) =>
            ep.namespace === s.namespace &&
            Object.entries(s.selector ?? {}).every(([k, v]) => ep.labels[k] === v),
        )
      : [];
    return s.ports.map((p) => ({
      id: `${key}:${p.port}/${p.protocol}`,
      service: key,
      ...(p.name ? { portName: p.name } : {}),
      address: vip.get(key) as string,
      port: p.port,
      protocol: p.protocol,
      backends: selected.flatMap((ep) => {
        const target =
          typeof p.targetPort === 'number'
            ? p.targetPort
            : ep.ports.find((cp) => cp.name === p.targetPort && cp.protocol === p.protocol)?.port;
        const address = ep.addresses.find((a) => !a.includes(':'));
        return target === undefined || address === undefined
          ? []
          : [{ endpoint: ep.id, address, port: target }];
      }),
      affinity:
        s.sessionAffinity === 'ClientIP'
          ? { mode: 'ClientIP' as const, timeoutSeconds: s.affinityTimeoutSeconds }
          : { mode: 'None' as const },
    }));
  });
}
