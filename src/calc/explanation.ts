/**
 * What `explain` answers: which rule decides a connection, side by side. The one definition that
 * the evaluator, the CLI, the agent's API and the browser console share; type-only and free of
 * Node's types, so web/ can typecheck it.
 */
import type { Direction, Protocol, RuleAction } from '../ir/types.js';

import type { DecisionReason } from '../ir/decision-table.js';

export type SideReason = DecisionReason;

/** Which stage decided a denial (or 'allowed'). */
export type DecidedAt = 'prefilter' | 'egress' | 'ingress' | 'same-pod' | 'allowed';

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
  summary: string;
}
