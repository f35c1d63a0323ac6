/**
 * Raw (schema-checked) manifests → model objects, applying the API server's defaults exactly:
 * missing/empty `from`/`to` = every peer, missing/empty `ports` = every port, protocol TCP,
 * policyTypes = Ingress (+ Egress when the egress list is non-empty).
 */
import { addressFamily } from './types.js';
import type {
  EndpointSlice,
  IpFamily,
  GlobalPolicy,
  GlobalRule,
  LabelSelector,
  Namespace,
  NetworkPolicy,
  NetworkPolicyRule,
  Peer,
  Pod,
  PolicyPort,
  PolicyType,
  Service,
  SourceRef,
} from './types.js';
import { SERVICE_NAME_LABEL } from './schemas.js';
import type {
  RawEndpointSlice,
  RawGlobalPolicy,
  RawNamespace,
  RawNetworkPolicy,
  RawPeer,
  RawPod,
  RawPolicyPort,
  RawSelector,
  RawService,
} from './schemas.js';

export const DEFAULT_NAMESPACE = 'default';
export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';
export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10800;

export function toSelector(raw: RawSelector | undefined): LabelSelector {
  return {
    matchLabels: { ...(raw?.matchLabels ?? {}) },
    matchExpressions: (raw?.matchExpressions ?? []).map((e) => ({
      key: e.key,
      operator: e.operator,
      values: [...(e.values ?? [])],
    })),
  };
}

function toPeer(raw: RawPeer): Peer {
  const peer: Peer = {};
  if (raw.podSelector) peer.podSelector = toSelector(raw.podSelector);
  if (raw.namespaceSelector) peer.namespaceSelector = toSelector(raw.namespaceSelector);
  if (raw.ipBlock) peer.ipBlock = { cidr: raw.ipBlock.cidr, except: [...(raw.ipBlock.except ?? [])] };
  if (raw.nets) peer.nets = [...raw.nets];
  if (raw.notNets) peer.notNets = [...raw.notNets];
  return peer;
}

function toPorts(
  raw: RawPolicyPort[] | undefined,
  defaultProtocol: PolicyPort['protocol'] = 'TCP',
): PolicyPort[] | undefined {
  if (!raw || raw.length === 0) return undefined;
  return raw.map((p) => {
    const port: PolicyPort = { protocol: p.protocol ?? defaultProtocol };
    if (p.port !== undefined) port.port = p.port;
    if (p.endPort !== undefined) port.endPort = p.endPort;
    return port;
  });
}

function toPeers(raw: RawPeer[] | undefined): Peer[] | undefined {
  return raw && raw.length > 0 ? raw.map(toPeer) : undefined;
}

function toNetworkPolicyRule(raw: {
  from?: RawPeer[];
  to?: RawPeer[];
  ports?: RawPolicyPort[];
}): NetworkPolicyRule {
  const rule: NetworkPolicyRule = {};
  const peers = toPeers(raw.from ?? raw.to);
  const ports = toPorts(raw.ports);
  if (peers) rule.peers = peers;
  if (ports) rule.ports = ports;
  return rule;
}

export function toNamespace(raw: RawNamespace, source: SourceRef): Namespace {
  // The API server always sets this label; policies commonly select namespaces by it.
  const labels = { ...(raw.metadata.labels ?? {}), [NAMESPACE_NAME_LABEL]: raw.metadata.name };
  return { name: raw.metadata.name, labels, source };
}

export function implicitDefaultNamespace(): Namespace {
  return {
    name: DEFAULT_NAMESPACE,
    labels: { [NAMESPACE_NAME_LABEL]: DEFAULT_NAMESPACE },
    source: { file: '<built-in>', line: 0 },
  };
}

export function toPod(raw: RawPod, source: SourceRef): Pod {
  const ips = raw.status?.podIPs?.map((p) => p.ip) ?? (raw.status?.podIP ? [raw.status.podIP] : []);
  if (raw.status?.podIP && !ips.includes(raw.status.podIP)) ips.unshift(raw.status.podIP);
  const pod: Pod = {
    namespace: raw.metadata.namespace ?? DEFAULT_NAMESPACE,
    name: raw.metadata.name,
    labels: { ...(raw.metadata.labels ?? {}) },
    ports: (raw.spec?.containers ?? []).flatMap((c) =>
      (c.ports ?? []).map((p) => ({
        ...(p.name !== undefined ? { name: p.name } : {}),
        containerPort: p.containerPort,
        protocol: p.protocol ?? 'TCP',
      })),
    ),
    ips,
    source,
  };
  if (raw.spec?.nodeName) pod.nodeName = raw.spec.nodeName;
  return pod;
}

export function toService(raw: RawService, source: SourceRef): Service {
  const type = raw.spec.type ?? 'ClusterIP';
  const svc: Service = {
    namespace: raw.metadata.namespace ?? DEFAULT_NAMESPACE,
    name: raw.metadata.name,
    ports: raw.spec.ports.map((p) => ({
      ...(p.name !== undefined ? { name: p.name } : {}),
      port: p.port,
      targetPort: p.targetPort ?? p.port,
      protocol: p.protocol ?? 'TCP',
      ...(p.nodePort !== undefined ? { nodePort: p.nodePort } : {}),
    })),
    sessionAffinity: raw.spec.sessionAffinity ?? 'None',
    affinityTimeoutSeconds:
      raw.spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT_SECONDS,
    type,
    internalTrafficPolicy: raw.spec.internalTrafficPolicy ?? 'Cluster',
    source,
  };
  // As the API server defaults it: only externally reachable services carry the policy.
  if (type !== 'ClusterIP') svc.externalTrafficPolicy = raw.spec.externalTrafficPolicy ?? 'Cluster';
  if (raw.spec.loadBalancerIP) svc.loadBalancerIP = raw.spec.loadBalancerIP;
  const ingress = (raw.status?.loadBalancer?.ingress ?? []).flatMap((i) => (i.ip ? [i.ip] : []));
  if (ingress.length > 0) svc.loadBalancerIngress = ingress;
  if (raw.spec.clusterIP && raw.spec.clusterIP !== 'None') svc.clusterIP = raw.spec.clusterIP;
  Object.assign(svc, serviceFamilyFields(raw.spec));
  if (raw.spec.selector) svc.selector = { ...raw.spec.selector };
  return svc;
}

/**
 * ipFamilies, ipFamilyPolicy and clusterIPs, defaulted as a dual-stack API server (IPv4 primary)
 * does: families from the stated addresses, else from ipFamilies, else IPv4; a dual-stack policy
 * adds the other family. Nothing when the manifest says nothing of families (IPv4 single-stack).
 */
function serviceFamilyFields(
  spec: RawService['spec'],
): Pick<Service, 'ipFamilies' | 'ipFamilyPolicy' | 'clusterIPs'> {
  const stated = (spec.clusterIPs ?? (spec.clusterIP ? [spec.clusterIP] : [])).filter((a) => a !== 'None');
  const speaks =
    spec.ipFamilies !== undefined ||
    spec.ipFamilyPolicy !== undefined ||
    spec.clusterIPs !== undefined ||
    stated.some((a) => addressFamily(a) === 'IPv6');
  if (!speaks) return {};
  const policy = spec.ipFamilyPolicy ?? 'SingleStack';
  const families: IpFamily[] =
    stated.length > 0 ? stated.map(addressFamily) : [...(spec.ipFamilies ?? ['IPv4'])];
  for (const f of spec.ipFamilies ?? []) if (!families.includes(f)) families.push(f);
  if (policy !== 'SingleStack' && families.length === 1)
    families.push(families[0] === 'IPv4' ? 'IPv6' : 'IPv4');
  return {
    ipFamilies: policy === 'SingleStack' ? families.slice(0, 1) : families,
    ipFamilyPolicy: policy,
    ...(stated.length > 0 ? { clusterIPs: stated } : {}),
  };
}

export function toNetworkPolicy(raw: RawNetworkPolicy, source: SourceRef): NetworkPolicy {
  const ingress = (raw.spec.ingress ?? []).map(toNetworkPolicyRule);
  const egress = (raw.spec.egress ?? []).map(toNetworkPolicyRule);
  // As SetDefaults_NetworkPolicy: an empty list is defaulted like a missing one.
  const policyTypes: PolicyType[] = raw.spec.policyTypes?.length
    ? [...new Set(raw.spec.policyTypes)]
    : egress.length > 0
      ? ['Ingress', 'Egress']
      : ['Ingress'];
  return {
    namespace: raw.metadata.namespace ?? DEFAULT_NAMESPACE,
    name: raw.metadata.name,
    podSelector: toSelector(raw.spec.podSelector),
    policyTypes,
    ingress,
    egress,
    source,
  };
}

function toGlobalRule(raw: NonNullable<RawGlobalPolicy['spec']['ingress']>[number]): GlobalRule {
  const rule: GlobalRule = { action: raw.action };
  if (raw.protocol) rule.protocol = raw.protocol;
  const ports = toPorts(raw.ports, raw.protocol === 'UDP' || raw.protocol === 'SCTP' ? raw.protocol : 'TCP');
  if (ports) rule.ports = ports;
  const peers = toPeers(raw.from ?? raw.to);
  if (peers) rule.peers = peers;
  return rule;
}

export function toGlobalPolicy(raw: RawGlobalPolicy, source: SourceRef): GlobalPolicy {
  const ingress = (raw.spec.ingress ?? []).map(toGlobalRule);
  const egress = (raw.spec.egress ?? []).map(toGlobalRule);
  // Defaulted like NetworkPolicy.policyTypes: an empty list means "not given".
  const types: PolicyType[] = raw.spec.types?.length
    ? [...new Set(raw.spec.types)]
    : [
        ...(ingress.length > 0 || egress.length === 0 ? (['Ingress'] as const) : []),
        ...(egress.length > 0 ? (['Egress'] as const) : []),
      ];
  const policy: GlobalPolicy = {
    name: raw.metadata.name,
    order: raw.spec.order,
    selector: toSelector(raw.spec.selector),
    types,
    ingress,
    egress,
    source,
  };
  if (raw.spec.namespaceSelector) policy.namespaceSelector = toSelector(raw.spec.namespaceSelector);
  return policy;
}

export function toEndpointSlice(raw: RawEndpointSlice, source: SourceRef): EndpointSlice {
  const namespace = raw.metadata.namespace ?? DEFAULT_NAMESPACE;
  return {
    namespace,
    name: raw.metadata.name,
    serviceName: raw.metadata.labels?.[SERVICE_NAME_LABEL] ?? '',
    ports: (raw.ports ?? []).map((p) => ({
      ...(p.name ? { name: p.name } : {}),
      port: p.port,
      protocol: p.protocol ?? 'TCP',
    })),
    endpoints: raw.endpoints.map((e) => ({
      addresses: [...e.addresses],
      // The API treats a missing `ready` as ready.
      ready: e.conditions?.ready !== false,
      ...(e.targetRef?.kind === 'Pod' && e.targetRef.name
        ? { pod: `${e.targetRef.namespace ?? namespace}/${e.targetRef.name}` }
        : {}),
      ...(e.nodeName ? { node: e.nodeName } : {}),
    })),
    source,
  };
}
