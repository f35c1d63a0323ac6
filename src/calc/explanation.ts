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
  allowed: boolean;
  decidedAt: DecidedAt;
  prefilter?: string;
  egress?: SideExplanation;
  ingress?: SideExplanation;
  summary: string;
}

/** Why a service has nothing to translate a connection to. */
export type ServiceProblem = 'port-not-defined' | 'no-endpoints';

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
