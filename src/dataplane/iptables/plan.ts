/**
 * The iptables backend's plan for one node: the ipsets and, per family and table, the chains with
 * their rules. Apply diffs two plans chain by chain and set by set, so this is data, not text.
 */
import type { Direction } from '../../ir/types.js';
import type { Family } from './names.js';

export type TableName = 'filter' | 'raw' | 'nat';

export interface SetSpec {
  /** Kernel name (`sy-…`, `…-v6` for the IPv6 twin). */
  name: string;
  /** IR set it comes from. */
  irId: string;
  type: 'hash:net' | 'hash:ip,port' | 'hash:ip,port,ip';
  family: Family;
  /** Entries exactly as `ipset add` takes them. */
  members: string[];
  description: string;
  /**
   * Named after its content (decision-table sets): a set the kernel lacks is built under its own
   * name, as nothing refers to it yet; it is never refilled in place by an update.
   */
  versioned?: boolean;
  /**
   * A flow set (names.ts): filled and counted by the kernel, so it has no members here. Created
   * (in place) when the kernel lacks it and otherwise left alone — never refilled, swapped or
   * flushed by an apply, so its elements keep their counters for as long as a rule names it.
   */
  flow?: FlowSetParams;
}

export interface FlowSetParams {
  timeoutS: number;
  maxelem: number;
}

/** A chain's rules, as a plan holds them and as the kernel state read back holds them. */
export interface ChainRules {
  /** Rule arguments after `-A <chain> `, in order. */
  readonly rules: readonly string[];
}

/**
 * One chain of a plan. Most hold their rules; the services' chains render them each time they are
 * read and keep none (service-port.ts, pieces-chain.ts): at 10k services their ~100k rules are 12
 * MiB of text that an agent would otherwise hold between applies for the few a change writes.
 */
export interface ChainSpec extends ChainRules {
  readonly name: string;
  /**
   * Whether `other` (the chain of the same name in another plan) holds the same rules, told from
   * what both were rendered from where that says so; absent: their rules are compared.
   */
  sameRulesAs?(other: ChainSpec): boolean;
  /** True on chains known to name no flow set (the services'): their rules are not searched for one. */
  readonly namesNoFlowSet?: boolean;
}

/** A rule in a built-in chain that enters ours; inserted once, first in the chain. */
export interface JumpSpec {
  builtin: 'FORWARD' | 'INPUT' | 'PREROUTING' | 'OUTPUT' | 'POSTROUTING';
  /** Rule arguments, as for ChainSpec rules. */
  rule: string;
}

export interface TablePlan {
  family: Family;
  table: TableName;
  /** Dependency order does not matter to iptables-restore (declarations come first). */
  chains: ChainSpec[];
  jumps: JumpSpec[];
}

/** A rule set that carries a decision table but is walked on this node, and why. */
export interface TableFallback {
  endpoint: string;
  direction: Direction;
  reason: string;
}

export interface NodePlan {
  node: string;
  sets: SetSpec[];
  /** Only tables with at least one chain. */
  tables: TablePlan[];
  /** Decision tables this plan walks instead (too deep for nf_tables as rendered). */
  fallbacks: TableFallback[];
}

export function tableKey(family: Family, table: TableName): string {
  return `${family === 4 ? 'iptables' : 'ip6tables'}/${table}`;
}

/** Whether two rule lists are equal, rule by rule. */
export function sameRuleLists(a: readonly string[], b: readonly string[]): boolean {
  return a === b || (a.length === b.length && a.every((r, i) => r === b[i]));
}

/** Whether chain `b` holds the rules `a` holds (reading each chain's rules once). */
export function sameChainRules(a: ChainSpec, b: ChainSpec): boolean {
  if (a === b) return true;
  return a.sameRulesAs ? a.sameRulesAs(b) : sameRuleLists(a.rules, b.rules);
}
