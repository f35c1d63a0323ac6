/** Services → per-port tables of (allocated) virtual address and backends (targetPort names resolved per pod). */
import type { Endpoint, ServiceBackend, ServicePortTable } from '../ir/types.js';
import type { EndpointSlice, Model, ServicePort } from '../model/types.js';
import { MissingAllocationError } from './allocate.js';

/**
 * Backends of a Service without a selector: the ready endpoints of its EndpointSlices whose port
 * has the service port's name and protocol. An address that belongs to a pod is named by that pod.
 */
function sliceBackends(
  slices: readonly EndpointSlice[],
  port: ServicePort,
  endpoints: readonly Endpoint[],
  isReady: (podId: string) => boolean,
): ServiceBackend[] {
  const byAddress = new Map(endpoints.flatMap((e) => e.addresses.map((a) => [a, e.id] as const)));
  return slices.flatMap((slice) => {
    const sp = slice.ports.find((p) => (p.name ?? '') === (port.name ?? '') && p.protocol === port.protocol);
    if (!sp) return [];
    return slice.endpoints
      .filter((e) => e.ready)
      .flatMap((e) =>
        e.addresses
          .filter((a) => !a.includes(':'))
          .map((address) => ({
            endpoint: byAddress.get(address) ?? e.pod ?? address,
            address,
            port: sp.port,
          }))
          .filter((b) => !byAddress.has(b.address) || isReady(b.endpoint)),
      );
  });
}

export function buildServices(
  model: Model,
  endpoints: readonly Endpoint[],
  serviceAddresses: Readonly<Record<string, string>>,
  readyPods?: ReadonlySet<string>,
): ServicePortTable[] {
  const isReady = (id: string): boolean => !readyPods || readyPods.has(id);
  const services = [...model.services].sort((a, b) =>
    `${a.namespace}/${a.name}` < `${b.namespace}/${b.name}` ? -1 : 1,
  );
  return services.flatMap((s) => {
    const key = `${s.namespace}/${s.name}`;
    const address = s.clusterIP ?? serviceAddresses[key];
    if (address === undefined) throw new MissingAllocationError(`service ${key} has no cluster IP`);
    const selected = s.selector
      ? endpoints.filter(
          (ep) =>
            ep.namespace === s.namespace &&
            isReady(ep.id) &&
            Object.entries(s.selector ?? {}).every(([k, v]) => ep.labels[k] === v),
        )
      : [];
    const slices = s.selector
      ? []
      : model.endpointSlices
          .filter((sl) => sl.namespace === s.namespace && sl.serviceName === s.name)
          // By name, so the backends' order does not depend on the order manifests were read in.
          .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return s.ports.map((p) => ({
      id: `${key}:${p.port}/${p.protocol}`,
      service: key,
      ...(p.name ? { portName: p.name } : {}),
      address,
      port: p.port,
      protocol: p.protocol,
      backends: [
        ...selected.flatMap((ep) => {
          const target =
            typeof p.targetPort === 'number'
              ? p.targetPort
              : ep.ports.find((cp) => cp.name === p.targetPort && cp.protocol === p.protocol)?.port;
          const address = ep.addresses.find((a) => !a.includes(':'));
          return target === undefined || address === undefined
            ? []
            : [{ endpoint: ep.id, address, port: target }];
        }),
        ...sliceBackends(slices, p, endpoints, isReady),
      ],
      affinity:
        s.sessionAffinity === 'ClientIP'
          ? { mode: 'ClientIP' as const, timeoutSeconds: s.affinityTimeoutSeconds }
          : { mode: 'None' as const },
    }));
  });
}
