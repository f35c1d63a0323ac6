/**
 * The backend-neutral intermediate representation: the only thing every backend sees.
 * Plain JSON-serialisable data with stable identifiers (derived from definitions, not contents),
 * so an update can be diffed into "this set's members changed" rather than "everything changed".
 *
 * Structural sharing: an IR that calc's IncrementalCalculation returns shares with the previous
 * one every Endpoint, IpSet, IpPortSet, RuleSet (with its table), ServicePortTable and Prefilter
 * that did not change (the same object), and every array with no change at all. A backend may
 * skip an object that is `===` the one it installed last, and do work in O(changed); objects
 * are never mutated once handed out (treat the IR as read-only).
 */
import type { DecisionTable, PolicyMode, TableOverflow } from './decision-table.js';

export type Protocol = 'TCP' | 'UDP' | 'SCTP' | 'ICMP';
export type Direction = 'ingress' | 'egress';
export type RuleAction = 'allow' | 'deny' | 'pass' | 'log';

export interface PolicyRef {
  kind: 'NetworkPolicy' | 'GlobalPolicy';
  /** Set for NetworkPolicy. */
  namespace?: string;
  name: string;
}

export interface NamedPort {
  name?: string;
  port: number;
  protocol: 'TCP' | 'UDP' | 'SCTP';
}

/** A workload interface: one pod's veth. */
export interface Endpoint {
  /** `namespace/name` */
  id: string;
  namespace: string;
  name: string;
  node: string;
  /** At most one per family, IPv4 first where the pod has one (lab pods have both). */
  addresses: string[];
  labels: Record<string, string>;
  namespaceLabels: Record<string, string>;
  ports: NamedPort[];
  /** Host-side interface name in the node namespace (≤ 15 chars, stable per endpoint id). */
  hostInterface: string;
}

/**
 * A named set of addresses as disjoint prefixes (ipBlock excepts already subtracted), so it loads
 * unchanged into ipset hash:net, an nft interval set or an LPM trie and means the same in each.
 */
export interface IpSet {
  /** Stable id from the set's definition, e.g. `sy-3f2a…`; ≤ 31 chars (ipset's limit). */
  id: string;
  /** What defines the members, for humans: `pods app=db in namespaces ns=x`. */
  description: string;
  /** Sorted, disjoint, normalised CIDRs (IPv4 and IPv6 may both appear). */
  cidrs: string[];
}

/** (address, port) pairs of one protocol: egress to a named port resolves per destination pod. */
export interface IpPortSet {
  id: string;
  description: string;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  members: { address: string; port: number }[];
}

export interface PortRange {
  first: number;
  last: number;
}

/**
 * One rule. Every present field must match (AND); absent fields match anything.
 * `peerSet`: the remote address (source for ingress, destination for egress) is in the set; a
 * peer's selectors, ipBlock/except, nets and notNets are all resolved into that one exact set.
 * `peerPortSet`: (remote address, destination port) is a member; always with `protocol`.
 * `ports` only appears with a port-carrying `protocol`.
 */
export interface Rule {
  /** Stable: `<policy id>/<direction>/<rule index>[.<part>]`. */
  id: string;
  policy: PolicyRef;
  /** Index of the rule in the policy's ingress/egress list. */
  ruleIndex: number;
  action: RuleAction;
  protocol?: Protocol;
  ports?: PortRange[];
  peerSet?: string;
  peerPortSet?: string;
}

/**
 * Everything that decides one endpoint's traffic in one direction.
 * Evaluation: walk `globalRules` in order — `log` records and goes on, `pass` jumps to the
 * Kubernetes tier, `allow`/`deny` decide. Then the Kubernetes tier: any matching rule in
 * `kubernetesRules` allows; otherwise `kubernetesDefault` (deny when some NetworkPolicy selects
 * the endpoint for this direction, allow when none does).
 */
export interface RuleSet {
  endpoint: string;
  direction: Direction;
  globalRules: Rule[];
  kubernetesRules: Rule[];
  kubernetesDefault: 'allow' | 'deny';
  /** Policies that select the endpoint for this direction, for explain and counters. */
  globalPolicies: PolicyRef[];
  kubernetesPolicies: PolicyRef[];
  /** The rules as one lookup (table mode, when it fits the bound). */
  table?: DecisionTable;
  /** Table mode was asked for but the table exceeds the bound: the rules are walked. */
  tableOverflow?: TableOverflow;
}

export interface ServiceBackend {
  endpoint: string;
  address: string;
  port: number;
  /** The node the backend pod runs on (absent for addresses outside the lab's pods). */
  node?: string;
}

/**
 * One port of one service in one address family. A dual-stack Service gives two tables per port:
 * - IPv4: id `namespace/name:port/protocol`, no `family` field (as before IPv6 existed);
 * - IPv6: id `namespace/name:port/protocol/IPv6`, `family: 6`.
 * Everything address-shaped in a table is of its family: `address`, every `backends[].address`
 * and `loadBalancerIPs`. Both tables of a port share its `nodePort` (as Kubernetes allocates one
 * per port); the nodes' external addresses are IPv4, so only the IPv4 table is reached at them.
 * A backend that does not handle IPv6 tables skips them and says so (never installs them as IPv4).
 */
export interface ServicePortTable {
  /** `namespace/name:port/protocol`, plus `/IPv6` for the IPv6 table. */
  id: string;
  /** 6 for an IPv6 table; absent for IPv4. */
  family?: 6;
  service: string;
  portName?: string;
  address: string;
  port: number;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  backends: ServiceBackend[];
  affinity: { mode: 'None' } | { mode: 'ClientIP'; timeoutSeconds: number };
  /** Type NodePort or LoadBalancer: also reached at every node's `externalAddress` on this port. */
  nodePort?: number;
  /** Type LoadBalancer: the addresses of `status.loadBalancer.ingress`, reached at `port`. */
  loadBalancerIPs?: string[];
  /**
   * Traffic from outside (node port, load-balancer address). `Local`: only backends on the node
   * the traffic entered, client address kept; a node without one refuses. Absent means Cluster.
   */
  externalTrafficPolicy?: 'Cluster' | 'Local';
  /** Traffic from pods to the cluster IP. `Local`: only backends on the client's node. Absent means Cluster. */
  internalTrafficPolicy?: 'Cluster' | 'Local';
}

export interface Prefilter {
  name: string;
  /** Nodes it is installed on. */
  nodes: string[];
  /** Id of the IpSet with the deny-listed source CIDRs. */
  set: string;
}

export interface Node {
  name: string;
  /** The node's own address on the fabric that joins node namespaces. */
  address: string;
  /** Where traffic from outside the cluster reaches the node (node ports); absent when not exposed. */
  externalAddress?: string;
}

export interface IR {
  version: 1;
  /** How rule sets are decided; absent means `walk` (every rule set without a table). */
  policyMode?: PolicyMode;
  nodes: Node[];
  endpoints: Endpoint[];
  ipSets: IpSet[];
  ipPortSets: IpPortSet[];
  /** One per endpoint and direction, sorted by endpoint then direction. */
  ruleSets: RuleSet[];
  services: ServicePortTable[];
  prefilters: Prefilter[];
}

export function policyId(p: PolicyRef): string {
  return p.kind === 'NetworkPolicy' ? `np:${p.namespace ?? ''}/${p.name}` : `gp:${p.name}`;
}

export function policyLabel(p: PolicyRef): string {
  return p.kind === 'NetworkPolicy'
    ? `NetworkPolicy ${p.namespace ?? ''}/${p.name}`
    : `GlobalPolicy ${p.name}`;
}
