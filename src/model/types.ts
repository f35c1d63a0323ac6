/**
 * The validated desired state. Everything here is plain data, already defaulted the way the
 * Kubernetes API server would (policyTypes, protocols, the namespace name label), so calc never
 * needs to know YAML or defaults.
 */

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type GlobalProtocol = Protocol | 'ICMP';

/** Where an object came from, for error messages and `explain`. */
export interface SourceRef {
  file: string;
  line: number;
}

export type Labels = Readonly<Record<string, string>>;

export interface LabelSelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  values: string[];
}

/** An empty selector (no labels, no expressions) selects everything. */
export interface LabelSelector {
  matchLabels: Record<string, string>;
  matchExpressions: LabelSelectorRequirement[];
}

export interface Namespace {
  name: string;
  labels: Labels;
  source: SourceRef;
}

export interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol: Protocol;
}

export interface Pod {
  namespace: string;
  name: string;
  labels: Labels;
  nodeName?: string;
  ports: ContainerPort[];
  /** From status.podIP/podIPs (at most one per family, podIP first); empty when the lab allocates them. */
  ips: string[];
  source: SourceRef;
}

export interface ServicePort {
  name?: string;
  port: number;
  targetPort: number | string;
  protocol: Protocol;
  /** As the manifest states it (type NodePort or LoadBalancer); else allocated (Allocations.nodePorts). */
  nodePort?: number;
}

export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer';
export type IpFamily = 'IPv4' | 'IPv6';
export type IpFamilyPolicy = 'SingleStack' | 'PreferDualStack' | 'RequireDualStack';
export type TrafficPolicy = 'Cluster' | 'Local';

export interface Service {
  namespace: string;
  name: string;
  /** spec.clusterIP: the primary family's stated address (clusterIPs[0]). */
  clusterIP?: string;
  /**
   * Set exactly when the manifest speaks of families (ipFamilies, ipFamilyPolicy, clusterIPs or
   * an IPv6 clusterIP), defaulted as a dual-stack API server does: primary family first, one
   * entry per family. Absent means IPv4 single-stack; read it through serviceFamilies().
   */
  ipFamilies?: IpFamily[];
  /** Set with ipFamilies (SingleStack when the manifest does not say). */
  ipFamilyPolicy?: IpFamilyPolicy;
  /** spec.clusterIPs as stated (ipFamilies order); allocated per family where missing. */
  clusterIPs?: string[];
  /** undefined = no selector (endpoints come from EndpointSlices). */
  selector?: Labels;
  ports: ServicePort[];
  sessionAffinity: 'None' | 'ClientIP';
  affinityTimeoutSeconds: number;
  /** Defaulted to ClusterIP. NodePort and LoadBalancer are also reached from outside the cluster. */
  type: ServiceType;
  /** Set (defaulted to Cluster) exactly when the type is NodePort or LoadBalancer. */
  externalTrafficPolicy?: TrafficPolicy;
  /** Defaulted to Cluster. */
  internalTrafficPolicy: TrafficPolicy;
  /** spec.loadBalancerIP: the address a LoadBalancer service asks for (used when it is free). */
  loadBalancerIP?: string;
  /** status.loadBalancer.ingress[].ip as the manifest states them; else allocated. */
  loadBalancerIngress?: string[];
  source: SourceRef;
}

/** The families a service has tables in, primary first (IPv4 single-stack unless it says otherwise). */
export function serviceFamilies(s: Pick<Service, 'ipFamilies'>): readonly IpFamily[] {
  return s.ipFamilies ?? ['IPv4'];
}

export function addressFamily(address: string): IpFamily {
  return address.includes(':') ? 'IPv6' : 'IPv4';
}

/** The service's stated cluster IP of `family`, if any. */
export function statedClusterIP(
  s: Pick<Service, 'clusterIP' | 'clusterIPs'>,
  family: IpFamily,
): string | undefined {
  return [...(s.clusterIPs ?? []), ...(s.clusterIP ? [s.clusterIP] : [])].find(
    (a) => addressFamily(a) === family,
  );
}

/** Endpoints of a Service without a selector (discovery.k8s.io/v1 EndpointSlice). */
export interface EndpointSlice {
  namespace: string;
  name: string;
  /** From the kubernetes.io/service-name label. */
  serviceName: string;
  ports: { name?: string; port: number; protocol: Protocol }[];
  /** `node`: the endpoint's nodeName, where the slice states it. */
  endpoints: { addresses: string[]; ready: boolean; pod?: string; node?: string }[];
  source: SourceRef;
}

export interface IpBlock {
  cidr: string;
  except: string[];
}

/** One NetworkPolicyPeer; for GlobalPolicy also nets/notNets. Set fields are ANDed. */
export interface Peer {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
  ipBlock?: IpBlock;
  nets?: string[];
  notNets?: string[];
}

export interface PolicyPort {
  protocol: Protocol;
  /** undefined = every port of the protocol. */
  port?: number | string;
  endPort?: number;
}

export interface NetworkPolicyRule {
  /** undefined = every peer (missing or empty `from`/`to`). */
  peers?: Peer[];
  /** undefined = every port and protocol (missing or empty `ports`). */
  ports?: PolicyPort[];
}

export type PolicyType = 'Ingress' | 'Egress';

export interface NetworkPolicy {
  namespace: string;
  name: string;
  podSelector: LabelSelector;
  policyTypes: PolicyType[];
  ingress: NetworkPolicyRule[];
  egress: NetworkPolicyRule[];
  source: SourceRef;
}

export type GlobalAction = 'Allow' | 'Deny' | 'Pass' | 'Log';

export interface GlobalRule {
  action: GlobalAction;
  /** undefined = any protocol. */
  protocol?: GlobalProtocol;
  /** undefined = any port; only with TCP/UDP/SCTP. */
  ports?: PolicyPort[];
  /** undefined = every peer. */
  peers?: Peer[];
}

export interface GlobalPolicy {
  name: string;
  order: number;
  selector: LabelSelector;
  namespaceSelector?: LabelSelector;
  types: PolicyType[];
  ingress: GlobalRule[];
  egress: GlobalRule[];
  source: SourceRef;
}

export interface Prefilter {
  name: string;
  /** undefined = every node. */
  nodes?: string[];
  /** Validated CIDRs or addresses as written (inline plus `file`); calc normalises them. */
  cidrs: string[];
  source: SourceRef;
}

export interface Model {
  namespaces: Namespace[];
  pods: Pod[];
  services: Service[];
  endpointSlices: EndpointSlice[];
  networkPolicies: NetworkPolicy[];
  globalPolicies: GlobalPolicy[];
  prefilters: Prefilter[];
}

export function emptyModel(): Model {
  return {
    namespaces: [],
    pods: [],
    services: [],
    endpointSlices: [],
    networkPolicies: [],
    globalPolicies: [],
    prefilters: [],
  };
}

export function podKey(p: { namespace: string; name: string }): string {
  return `${p.namespace}/${p.name}`;
}
