/**
 * What `explain` answers: which rule decides a connection, side by side. The one definition that
 * the evaluator, the CLI, the agent's API and the browser console share; type-only and free of
 * Node's types, so web/ can typecheck it.
 */
import type { Direction, Protocol, RuleAction } from '../ir/types.js';

import type { DecisionReason } from '../ir/decision-table.js';

export type SideReason = DecisionReason;

/**
 * Which stage decided a denial (or 'allowed'); `service`: the destination is a service that has
 * nothing to translate the connection to (no such port, no endpoints).
 */
export type DecidedAt = 'prefilter' | 'egress' | 'ingress' | 'same-pod' | 'allowed' | 'service';

export interface RuleRef {
  id: string;
  policy: string;
  ruleIndex: number;
  action: RuleAction;
  /** file:line of the policy manifest. */
  source?: string;
}

export interface SideExplanation {
  endpoint: string;
  direction: Direction;
  allowed: boolean;
  reason: SideReason;
  globalPolicies: string[];
  networkPolicies: string[];
  rule?: RuleRef;
  passedBy?: RuleRef;
  logged: RuleRef[];
  text: string;
}

export interface ExplainPeer {
  given: string;
  address: string;
  endpoint?: string;
  node?: string;
}

/** One backend pod of a service: where the connection is translated to, and the policy verdict there. */
export interface ServiceBackendExplanation {
  endpoint: string;
  address: string;
  /** The port the connection is translated to (the service's targetPort, resolved for this pod). */
  targetPort: number;
  node?: string;
  /** From outside: the node the connection enters (one entry per entry node and backend). */
  entryNode?: string;
  /**
   * From outside: the source address the backend's policy sees, and whose it is: the client's
   * (externalTrafficPolicy Local) or the entry node's fabric address (Cluster: masqueraded).
   */
  source?: string;
  sourceKind?: 'client' | 'node';
  /**
   * From outside, Cluster, a backend on the entry node: the source differs by dataplane (netfilter
   * masquerades like kube-proxy, eBPF keeps the client like Cilium); this is the other one.
   */
  otherSource?: { source: string; sourceKind: 'client' | 'node'; allowed: boolean };
  allowed: boolean;
  decidedAt: DecidedAt;
  prefilter?: string;
  egress?: SideExplanation;
  ingress?: SideExplanation;
  summary: string;
}

/**
 * Why a service has nothing to translate a connection to: no such port (or node port, or
 * load-balancer port), no ready endpoint (refused), or none on the node a Local traffic policy
 * confines the connection to (dropped, as kube-proxy does).
 */
export type ServiceProblem = 'port-not-defined' | 'no-endpoints' | 'no-local-endpoints';

/** Traffic from outside: where it was aimed and how the service treats it. */
export interface ExternalEntryExplanation {
  kind: 'nodeport' | 'lb';
  /** As asked: `nodeport/NODE:PORT` or `lb/IP:PORT`. */
  given: string;
  /** The address and port the client connects to (a node's external address, or the load-balancer address). */
  address: string;
  port: number;
  /** The node a node port was asked on. */
  node?: string;
  externalTrafficPolicy: 'Cluster' | 'Local';
  /** Nodes the connection enters (a load-balancer address may enter at several). */
  entryNodes: string[];
  /** Entry nodes with no eligible backend. */
  unservedNodes: string[];
  /** A prefilter of an entry node drops the client before any translation. */
  prefilter?: { node: string; name: string };
}

export interface ServiceExplanation {
  /** `namespace/name` */
  name: string;
  /** The cluster IP. */
  address: string;
  port: number;
  protocol: Protocol;
  portName?: string;
  /** As the Service spec gives it: a number or a container port's name. */
  targetPort?: number | string;
  /** Every port the service defines, `80/TCP` (`80/TCP (http)` when named). */
  ports: string[];
  backends: ServiceBackendExplanation[];
  problem?: ServiceProblem;
  /** Pods the selector picks that are no backend of this port, and why. */
  skipped: { pod: string; reason: string }[];
  /** ClientIP affinity: a client's new connections keep their backend for this long since the last one. */
  affinityTimeoutSeconds?: number;
  /** internalTrafficPolicy Local: a pod's connections only reach backends on its own node. */
  internalTrafficPolicy?: 'Local';
  /** Set when the connection comes from outside through a node port or load-balancer address. */
  external?: ExternalEntryExplanation;
}

export interface Explanation {
  from: ExplainPeer;
  to: ExplainPeer;
  protocol: Protocol;
  port?: number;
  allowed: boolean;
  decidedAt: DecidedAt;
  prefilter?: string;
  prefilterReply?: boolean;
  egress?: SideExplanation;
  ingress?: SideExplanation;
  /**
   * Set when the destination is a service (`svc/NS/NAME:PORT` or its cluster IP): the backends it
   * translates to, each with its own verdict. Then `allowed` means every backend is allowed, and
   * `egress`/`ingress`/`decidedAt` are those of the first denied backend (else the first).
   */
  service?: ServiceExplanation;
  summary: string;
}
