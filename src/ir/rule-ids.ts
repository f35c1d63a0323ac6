/**
 * Ids of the rules the IR implies without naming them. Counters, flows and explain name these;
 * every backend writes them and every reader parses them, so they live with the IR.
 */
import type { Direction } from './types.js';

const PREFILTER_PREFIX = 'prefilter/';

/** The Kubernetes tier's default of one endpoint and direction (deny when a policy selects it). */
export function defaultRuleId(endpoint: string, direction: Direction): string {
  return `${endpoint}/${direction}/default`;
}

/** A prefilter's drop counter. */
export function prefilterRuleId(name: string): string {
  return `${PREFILTER_PREFIX}${name}`;
}

/** The prefilter a rule id names, or undefined when it names something else. */
export function prefilterOfRule(rule: string): string | undefined {
  return rule.startsWith(PREFILTER_PREFIX) ? rule.slice(PREFILTER_PREFIX.length) : undefined;
}

/** A dataplane's own fail-closed drop (e.g. a packet it cannot parse), per endpoint and direction. */
export function failClosedRuleId(endpoint: string, direction: Direction, reason: string): string {
  return `${endpoint}/${direction}/fail-closed/${reason}`;
}

/** The direction a rule id names (`…/ingress/…` or `…/egress/…`), when it names one. */
export function directionOfRule(rule: string): Direction | undefined {
  return /\/(ingress|egress)\//.exec(rule)?.[1] as Direction | undefined;
}
