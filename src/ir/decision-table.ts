/**
 * The decision table as the IR carries it: one endpoint's ordered rules for one direction,
 * resolved ahead of time (by calc) into (peer class × protocol × destination-port range) →
 * verdict, so a backend answers with one prefix lookup and one port lookup instead of walking the
 * rules. `lookup` (table-lookup.ts) is the table's meaning; calc proves it equal to the rule walk.
 * Types and arithmetic only, free of Node's modules: the browser console reads these types too.
 */
import type { Direction } from './types.js';

/** Why a side decided as it did (the explain vocabulary). */
export type DecisionReason =
  | 'global-rule' // an Allow or Deny rule of a GlobalPolicy decided
  | 'kubernetes-rule' // a NetworkPolicy rule allowed
  | 'kubernetes-default-deny' // selected by NetworkPolicies, none allowed
  | 'no-policy'; // nothing selects the endpoint for this direction (or all passed)

/** Cilium's default policy map size: a table beyond it is left to the rule walk. */
export const MAX_TABLE_ENTRIES = 16384;

export type PortProtocol = 'TCP' | 'UDP' | 'SCTP';
export const PORT_PROTOCOLS: readonly PortProtocol[] = ['TCP', 'UDP', 'SCTP'];
export const MAX_PORT = 65535;

/** What the rule walk concludes for one packet, with the ids a backend counts and logs under. */
export interface TableEntry {
  verdict: 'allow' | 'deny';
  /** The deciding rule's id, or `defaultRuleId(endpoint, direction)` when the default decides. */
  rule: string;
  reason: DecisionReason;
  /** Ids of the Log rules that fire on the way, in order. */
  logged: string[];
  /** Id of the Pass rule that handed the packet to the Kubernetes tier. */
  passedBy?: string;
}

/** An entry for the destination ports `first`–`last` (inclusive). */
export interface PortEntry extends TableEntry {
  first: number;
  last: number;
}

/** Everything one class of remote addresses gets. */
export interface PeerClass {
  id: number;
  /** Per port protocol: disjoint, sorted, adjacent-distinct ranges covering 0–65535. */
  ports: Record<PortProtocol, PortEntry[]>;
  /** ICMP carries no port: one entry. */
  icmp: TableEntry;
  /**
   * Any IP protocol but TCP, UDP, SCTP and ICMP: what rules naming no protocol, port or port set
   * decide (the walk's meaning; the reference evaluator only speaks of the four).
   */
  other: TableEntry;
}

/** A remote prefix and its class. */
export interface PeerPrefix {
  cidr: string;
  classId: number;
}

export interface DecisionTable {
  endpoint: string;
  direction: Direction;
  /**
   * Disjoint exact CIDRs, IPv4 then IPv6, each sorted by address: loads as-is into an LPM trie or
   * an interval set. An address under no prefix is class 0 ("rest").
   */
  prefixes: PeerPrefix[];
  /** `classes[i].id === i`; class 0 is the rest. */
  classes: PeerClass[];
}

export interface TableSize {
  prefixes: number;
  entries: number;
}

/** A table that would have exceeded the bound: the endpoint keeps the rule walk. */
export interface TableOverflow extends TableSize {
  maxEntries: number;
}

/** `table`: rule sets carry a decision table where it fits; `walk`: backends walk the rules. */
export type PolicyMode = 'table' | 'walk';
export const POLICY_MODES: readonly PolicyMode[] = ['table', 'walk'];

/** Prefixes as a backend loads them; entries as one per class, protocol and port range. */
export function tableSize(table: DecisionTable): TableSize {
  const entries = table.classes.reduce(
    (n, c) => n + 2 + PORT_PROTOCOLS.reduce((m, p) => m + c.ports[p].length, 0),
    0,
  );
  return { prefixes: table.prefixes.length, entries };
}

/**
 * What `--policy-mode` means when not given. The walk, for now: tables make the per-packet cost
 * flat in the rule count, but each table carries its own peer prefixes, so a node of 100 pods in a
 * 10k-pod cluster holds 480k of them (an agent of 1.7 GB, a 10 s sync; docs/benchmarks.md). Tables
 * become the default once peers are shared node-wide (one address → identity map for all tables).
 */
export const DEFAULT_POLICY_MODE: PolicyMode = 'walk';

/** How an IR's rule sets are decided: what compile, node status and the agent's metrics report. */
export interface TableModeSummary {
  mode: PolicyMode;
  /** Rule sets decided by a table. */
  tables: number;
  /** Rule sets walked (all of them in walk mode; the overflowing ones in table mode). */
  walked: number;
  /** Table entries over every table (a measure of the tables' size). */
  entries: number;
  /** Rule sets whose table exceeded the bound, and by how much. */
  overflows: ({ endpoint: string; direction: Direction } & TableOverflow)[];
}

export function tableModeSummary(ruleSets: readonly RuleSetTables[], mode: PolicyMode): TableModeSummary {
  let tables = 0;
  let entries = 0;
  const overflows: TableModeSummary['overflows'] = [];
  for (const rs of ruleSets) {
    if (rs.table) {
      tables++;
      entries += tableSize(rs.table).entries;
    }
    if (rs.tableOverflow)
      overflows.push({ endpoint: rs.endpoint, direction: rs.direction, ...rs.tableOverflow });
  }
  return { mode, tables, walked: ruleSets.length - tables, entries, overflows };
}

/** The part of a rule set the summary reads. */
export interface RuleSetTables {
  endpoint: string;
  direction: Direction;
  table?: DecisionTable;
  tableOverflow?: TableOverflow;
}

/** One line for humans: `table mode: 12 rule sets as tables (340 entries), 1 walked (over the bound)`. */
export function formatTableModeSummary(s: TableModeSummary): string {
  if (s.mode === 'walk') return `walk mode: ${s.walked} rule sets walked`;
  const over = s.overflows.map(
    (o) => `${o.endpoint} ${o.direction} needs ${o.entries} entries > ${o.maxEntries}`,
  );
  return (
    `table mode: ${s.tables} rule sets as tables (${s.entries} entries), ${s.walked} walked` +
    (over.length > 0 ? ` (over the bound: ${over.join('; ')})` : '')
  );
}
