/** Options and results of the calculation layer shared by the CLI, the lab and tests. */
import type { PolicyMode } from '../ir/decision-table.js';
import type { IR, Protocol } from '../ir/types.js';

/** What buildIR builds beyond the model and its allocations. */
export interface BuildOptions {
  /**
   * Pods ready to serve (`namespace/name`); when given, only these back Services, as Kubernetes
   * only routes to ready endpoints. Policy is unaffected. Default: every pod is ready.
   */
  readyPods?: ReadonlySet<string>;
  /**
   * Build only what this node installs: rule sets of its endpoints, the sets they reference and
   * the prefilters it carries (the result equals `irForNode(buildIR(model, allocations), node)`).
   * Endpoints, nodes and services stay whole: they are cluster-wide (sets, service backends, explain).
   */
  node?: string;
  /**
   * `table` resolves each rule set into a decision table where it fits `maxTableEntries`
   * (default MAX_TABLE_ENTRIES); `walk` leaves backends to walk the rules. Absent means walk:
   * calc stays a plain function of its inputs; the product's default (DEFAULT_POLICY_MODE)
   * is applied where users meet it (CLI, lab, agent).
   */
  policyMode?: PolicyMode;
  maxTableEntries?: number;
}

/** A new connection attempt as the evaluator sees it. */
export interface Packet {
  src: string;
  dst: string;
  protocol: Protocol;
  /** Destination port; absent for ICMP. */
  dport?: number;
}

/**
 * Why a pair does or does not connect: `allowed` (it connects), `denied` (policy drops it; a
 * denied pair is denied whether or not its port is served, because the drop comes first) or
 * `unserved` (policy allows it but nothing listens on the port: the connection is refused).
 */
export type ReachOutcome = 'allowed' | 'denied' | 'unserved';

/** `switchyard reach --json` and `switchyard lab reach --json` share this shape. */
export interface ReachMatrix {
  port: number;
  protocol: Protocol;
  /** results[src][dst], keys `namespace/pod`, self-pairs included: true when the pair connects. */
  results: Record<string, Record<string, boolean>>;
  /** outcomes[src][dst]: the same pairs, saying why one does not connect. */
  outcomes: Record<string, Record<string, ReachOutcome>>;
}

export type { IR };
