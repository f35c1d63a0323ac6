/**
 * Services → per-port tables of (allocated) virtual address and backends (targetPort names
 * resolved per pod), with what traffic from outside needs: node port, load-balancer addresses,
 * traffic policies and the node of each backend.
 */
import type { Endpoint, ServiceBackend, ServicePortTable } from '../ir/types.js';
import {
  addressFamily,
  serviceFamilies,
  statedClusterIP,
  type EndpointSlice,
  type IpFamily,
  type Model,
  type Service,
  type ServicePort,
} from '../model/types.js';
import { MissingAllocationError, servicePortId, serviceTableId, type Allocations } from './allocate.js';
import { exact, flat } from '../util/intern.js';

/** What buildServices reads of the allocations. */
export type ServiceAllocations = Pick<Allocations, 'serviceAddresses'> &
  Partial<Pick<Allocations, 'nodePorts' | 'loadBalancerAddresses' | 'serviceAddressesV6'>>;

/**
 * Backends of a Service without a selector: the ready endpoints of its EndpointSlices whose port
 * has the service port's name and protocol. An address that belongs to a pod is named by that pod
 * (and placed on its node); another is on the node its slice names, if any.
 */
function sliceBackends(
  slices: readonly EndpointSlice[],
  port: ServicePort,
  family: IpFamily,
  byAddress: ReadonlyMap<string, Endpoint>,
  isReady: (podId: string) => boolean,
): ServiceBackend[] {
  return slices.flatMap((slice) => {
    const sp = slice.ports.find((p) => (p.name ?? '') === (port.name ?? '') && p.protocol === port.protocol);
    if (!sp) return [];
    return slice.endpoints
      .filter((e) => e.ready)
      .flatMap((e) =>
        e.addresses
          .filter((a) => addressFamily(a) === family)
          .flatMap((address): ServiceBackend[] => {
            const pod = byAddress.get(address);
            if (pod && !isReady(pod.id)) return [];
            const node = pod?.node ?? e.node;
            return [
              {
                endpoint: pod?.id ?? e.pod ?? address,
                address,
                port: sp.port,
                ...(node !== undefined ? { node } : {}),
              },
            ];
          }),
      );
  });
}

/** The traffic-from-outside fields of one port's table (none for a ClusterIP service). */
function externalFields(
  s: Service,
  p: ServicePort,
  family: IpFamily,
  allocations: ServiceAllocations,
): Pick<
  ServicePortTable,
  'nodePort' | 'loadBalancerIPs' | 'externalTrafficPolicy' | 'internalTrafficPolicy'
> {
  // Absent means Cluster in the IR: only a Local policy is spelled out.
  const internal = s.internalTrafficPolicy === 'Local' ? { internalTrafficPolicy: 'Local' as const } : {};
  if (s.type === 'ClusterIP') return internal;
  const id = servicePortId(s, p);
  const nodePort = p.nodePort ?? allocations.nodePorts?.[id];
  if (nodePort === undefined) throw new MissingAllocationError(`service port ${id} has no node port`);
  const out: ReturnType<typeof externalFields> = {
    nodePort,
    externalTrafficPolicy: s.externalTrafficPolicy ?? 'Cluster',
    ...internal,
  };
  if (s.type === 'LoadBalancer') {
    const ips = s.loadBalancerIngress ?? allocations.loadBalancerAddresses?.[`${s.namespace}/${s.name}`];
    if (!ips?.length)
      throw new MissingAllocationError(`service ${s.namespace}/${s.name} has no load-balancer address`);
    // The pool is IPv4: an IPv6 table carries only IPv6 ingress addresses the manifest states.
    const own = ips.filter((a) => addressFamily(a) === family);
    if (own.length > 0) out.loadBalancerIPs = own;
  }
  return out;
}

/**
 * The endpoints and slices of a model indexed once, so building every service costs the sum of
 * their sizes rather than services × endpoints (10k services over 10k pods took minutes).
 */
export class ServiceLookup {
  readonly byAddress = new Map<string, Endpoint>();
  private readonly byNamespace = new Map<string, Endpoint[]>();
  private readonly slicesByService = new Map<string, EndpointSlice[]>();

  constructor(model: Pick<Model, 'endpointSlices'>, endpoints: readonly Endpoint[]) {
    for (const e of endpoints) {
      for (const a of e.addresses) this.byAddress.set(a, e);
      const inNamespace = this.byNamespace.get(e.namespace);
      if (inNamespace) inNamespace.push(e);
      else this.byNamespace.set(e.namespace, [e]);
    }
    for (const sl of model.endpointSlices) {
      const key = `${sl.namespace}/${sl.serviceName}`;
      const list = this.slicesByService.get(key);
      if (list) list.push(sl);
      else this.slicesByService.set(key, [sl]);
    }
    // By name, so the backends' order does not depend on the order manifests were read in.
    for (const list of this.slicesByService.values())
      list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  inNamespace(namespace: string): readonly Endpoint[] {
    return this.byNamespace.get(namespace) ?? [];
  }

  slicesOf(serviceKey: string): readonly EndpointSlice[] {
    return this.slicesByService.get(serviceKey) ?? [];
  }
}

/** One object for every table without affinity (at 10k services, 10,000 objects fewer); frozen, as it is shared. */
const NO_AFFINITY: ServicePortTable['affinity'] = Object.freeze({ mode: 'None' as const });

/**
 * The port tables of one service: per family it has (IPv4 first), one table per port, whose
 * address and backends are all of that family (see ServicePortTable.family).
 */
export function serviceTables(
  s: Service,
  model: Model,
  endpoints: readonly Endpoint[],
  allocations: ServiceAllocations,
  isReady: (podId: string) => boolean,
  lookup: ServiceLookup = new ServiceLookup(model, endpoints),
): ServicePortTable[] {
  const families = [...serviceFamilies(s)].sort();
  return families.flatMap((f) => familyTables(s, f, allocations, isReady, lookup));
}

function familyTables(
  s: Service,
  family: IpFamily,
  allocations: ServiceAllocations,
  isReady: (podId: string) => boolean,
  lookup: ServiceLookup,
): ServicePortTable[] {
  // Kept in each table (service): flat, not the pieces of a concatenation (util/intern.ts).
  const key = flat(`${s.namespace}/${s.name}`);
  const address =
    statedClusterIP(s, family) ??
    (family === 'IPv4' ? allocations.serviceAddresses : allocations.serviceAddressesV6)?.[key];
  if (address === undefined)
    throw new MissingAllocationError(`service ${key} has no ${family === 'IPv4' ? '' : 'IPv6 '}cluster IP`);
  const selected = s.selector
    ? lookup
        .inNamespace(s.namespace)
        .filter(
          (ep) => isReady(ep.id) && Object.entries(s.selector ?? {}).every(([k, v]) => ep.labels[k] === v),
        )
    : [];
  const slices = s.selector ? [] : lookup.slicesOf(key);
  return s.ports.map((p) => ({
    id: flat(serviceTableId(s, p, family)),
    ...(family === 'IPv6' ? { family: 6 as const } : {}),
    service: key,
    ...(p.name ? { portName: p.name } : {}),
    address,
    port: p.port,
    protocol: p.protocol,
    // Kept as long as the table: an array of its length (util/intern.ts exact), not of the capacity
    // the spread grew it to.
    backends: exact([
      ...selected.flatMap((ep) => {
        const target =
          typeof p.targetPort === 'number'
            ? p.targetPort
            : ep.ports.find((cp) => cp.name === p.targetPort && cp.protocol === p.protocol)?.port;
        const address = ep.addresses.find((a) => addressFamily(a) === family);
        return target === undefined || address === undefined
          ? []
          : [{ endpoint: ep.id, address, port: target, node: ep.node }];
      }),
      ...sliceBackends(slices, p, family, lookup.byAddress, isReady),
    ]),
    affinity:
      s.sessionAffinity === 'ClientIP'
        ? { mode: 'ClientIP' as const, timeoutSeconds: s.affinityTimeoutSeconds }
        : NO_AFFINITY,
    ...externalFields(s, p, family, allocations),
  }));
}

export function buildServices(
  model: Model,
  endpoints: readonly Endpoint[],
  allocations: ServiceAllocations,
  readyPods?: ReadonlySet<string>,
): ServicePortTable[] {
  const isReady = (id: string): boolean => !readyPods || readyPods.has(id);
  const services = [...model.services].sort((a, b) =>
    `${a.namespace}/${a.name}` < `${b.namespace}/${b.name}` ? -1 : 1,
  );
  const lookup = new ServiceLookup(model, endpoints);
  return services.flatMap((s) => serviceTables(s, model, endpoints, allocations, isReady, lookup));
}
