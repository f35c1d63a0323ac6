/**
 * The nft rules that carry out a decision, shared by the rule walk (ruleset.ts) and the decision
 * tables (table.ts): the counter under the rule's id, the flow record, the verdict. Both
 * renderings decide and record the same way, so counters and flow records read alike.
 *
 * With flow logs the deciding rule hands the packet to a chain of its own (shared by every
 * endpoint the rule applies to): `<match> counter goto flow-deny-<tag> comment "<id>"`, where
 *
 *   flow-deny-<tag>  meta nfproto ipv4 meta l4proto @flow-ported update @flows4 { … th dport . <tag> } drop
 *                    meta nfproto ipv4 meta l4proto != @flow-ported update @flows4 { … 0 . <tag> } drop
 *                    (the same two for ipv6 and @flows6)
 *                    counter name "flows-full" drop
 *
 * An `update` that cannot add its element (the set is full) ends its rule without the verdict;
 * the last rule gives it, counted as full: no verdict depends on room in a set. Allows `return`
 * from that chain as they would from the tier (reached by goto, it returns to the base chain);
 * Log rules `jump` to theirs and come back. The match is evaluated once, as without flow logs.
 * Without flow logs there are no sets and no updates: `<match> counter <verdict> comment "<id>"`.
 */
import { flowRuleTag } from '../netfilter/aggregates.js';
import type { Verdict } from '../events.js';
import { FLOWS_FULL_COUNTER, flowSetObjects, updateStatement, updateVariants } from './flow-sets.js';
import { FLOW_TRAFFIC_CHAIN, flowChain, quoted } from './names.js';
import type { NftChain, NftSet } from './objects.js';

export function withMatch(match: string, rest: string): string {
  return match ? `${match} ${rest}` : rest;
}

/** The nft verdict of a decision inside its flow chain. */
const CHAIN_VERDICT: Record<Verdict, string> = { allow: 'return', deny: 'drop', log: 'return' };

/** Rules for decisions and Log rules; collects the flow chains they name. */
export interface Decisions {
  /**
   * One deciding match: `allow` lets the packet on to the other side's chain (`return`, or `''`
   * where the chain's end does the same), `deny` drops it.
   */
  decide(match: string, verdict: 'allow' | 'deny', ruleId: string, allowVerdict?: 'return' | ''): string[];
  /** A Log rule: counted (and recorded); the walk goes on. */
  log(match: string, ruleId: string): string[];
  /** The flow sets, counter and chains the rules so far need (nothing without flow logs). */
  objects(): { sets: NftSet[]; chains: NftChain[] };
}

class PlainDecisions implements Decisions {
  decide(
    match: string,
    verdict: 'allow' | 'deny',
    ruleId: string,
    allowVerdict: 'return' | '' = 'return',
  ): string[] {
    const v = verdict === 'deny' ? 'drop' : allowVerdict;
    return [withMatch(match, `counter ${v ? `${v} ` : ''}comment ${quoted(ruleId)}`)];
  }

  log(match: string, ruleId: string): string[] {
    return [withMatch(match, `counter comment ${quoted(ruleId)}`)];
  }

  objects(): { sets: NftSet[]; chains: NftChain[] } {
    return { sets: [], chains: [] };
  }
}

/** The rules of one flow chain: an update per family and port kind, then the full-set fallback. */
export function flowChainRules(verdict: Verdict, tag: number): string[] {
  const v = CHAIN_VERDICT[verdict];
  return [
    ...updateVariants().map(
      (u) => `${u.condition} ${updateStatement('flows', u.family, u.ported, tag)} ${v}`,
    ),
    // Log chains are jumped to: falling off the end goes back, as `return` would.
    `counter name ${quoted(FLOWS_FULL_COUNTER)}${verdict === 'log' ? '' : ` ${v}`}`,
  ];
}

/**
 * Flow chains rendered before, by verdict and rule: every apply renders the node's whole ruleset
 * again, and a node with thousands of rules would otherwise rebuild thousands of identical chains
 * (and the diff compare their rules text by text rather than by identity). Shared, never changed;
 * bounded like flowRuleTag's own memory.
 */
const renderedFlowChains = new Map<string, NftChain>();
const RENDERED_FLOW_CHAINS = 100_000;

function flowChainOf(verdict: Verdict, ruleId: string): NftChain {
  const key = `${verdict} ${ruleId}`;
  let chain = renderedFlowChains.get(key);
  if (!chain) {
    const tag = flowRuleTag(verdict, ruleId);
    if (renderedFlowChains.size >= RENDERED_FLOW_CHAINS) renderedFlowChains.clear();
    chain = {
      name: flowChain(verdict, tag),
      spec: '',
      base: false,
      rules: flowChainRules(verdict, tag),
      note: `flows: ${verdict} by ${ruleId}`,
    };
    renderedFlowChains.set(key, chain);
  }
  return chain;
}

class FlowDecisions implements Decisions {
  private readonly chains = new Map<string, NftChain>();

  constructor(private readonly setSize: number | undefined) {}

  private chain(verdict: Verdict, ruleId: string): string {
    const chain = flowChainOf(verdict, ruleId);
    if (!this.chains.has(chain.name)) this.chains.set(chain.name, chain);
    return chain.name;
  }

  decide(match: string, verdict: 'allow' | 'deny', ruleId: string): string[] {
    return [withMatch(match, `counter goto ${this.chain(verdict, ruleId)} comment ${quoted(ruleId)}`)];
  }

  log(match: string, ruleId: string): string[] {
    return [withMatch(match, `counter jump ${this.chain('log', ruleId)} comment ${quoted(ruleId)}`)];
  }

  objects(): { sets: NftSet[]; chains: NftChain[] } {
    const byName = [...this.chains.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return { sets: flowSetObjects(this.setSize), chains: [TRAFFIC_CHAIN, ...byName] };
  }
}

export interface DecisionOptions {
  /** Flow sets and updates; false: neither. */
  flowLogs: boolean;
  /** Elements per flow set (tests make it tiny to fill it). */
  flowSetSize?: number;
}

export function decisions(opts: DecisionOptions): Decisions {
  return opts.flowLogs ? new FlowDecisions(opts.flowSetSize) : new PlainDecisions();
}

/**
 * The established path's recording chain: reached by `goto` from the base chains for packets of
 * established connections in their original direction, it counts them per 4-tuple and accepts
 * them (full set or not), as the established rule after it would have.
 */
const TRAFFIC_CHAIN: NftChain = trafficChain();

function trafficChain(): NftChain {
  return {
    name: FLOW_TRAFFIC_CHAIN,
    spec: '',
    base: false,
    rules: [
      ...updateVariants().map(
        (u) => `${u.condition} ${updateStatement('traffic', u.family, u.ported)} accept`,
      ),
      `counter name ${quoted(FLOWS_FULL_COUNTER)} accept`,
    ],
    note: 'flows: established packets, original direction, per source . destination . protocol . port',
  };
}
