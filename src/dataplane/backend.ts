/**
 * The contract between the IR and a kernel mechanism. A backend renders one node's slice of the IR
 * into a plan (text a human can read: `switchyard compile`), and applies a plan atomically inside
 * that node's network namespace: on any failure the previous state stays in force.
 */
import type { IR } from '../ir/types.js';

export type BackendName = 'iptables' | 'nftables' | 'ebpf';
export const BACKEND_NAMES: readonly BackendName[] = ['iptables', 'nftables', 'ebpf'];

/** Where a node's dataplane lives. */
export interface NodeTarget {
  /** Lab (or agent scope) name, used for pins and cgroup paths. */
  scope: string;
  node: string;
  /** Network namespace name under /run/netns (never the root namespace). */
  netns: string;
}

export interface RenderedPlan {
  backend: BackendName;
  node: string;
  /** What `switchyard compile` prints: exactly what apply installs. */
  text: string;
}

export interface RuleCounter {
  /** IR rule id, or a synthetic id such as `prefilter/<name>` or `<endpoint>/<direction>/default`. */
  rule: string;
  endpoint?: string;
  direction?: 'ingress' | 'egress';
  packets: number;
  bytes: number;
}

export interface ApplyResult {
  /** Objects written, for "touching only the difference" checks and logs. */
  changed: string[];
  durationMs: number;
}

export interface Backend {
  readonly name: BackendName;
  /** Pure: the plan for one node. */
  render(ir: IR, node: string): RenderedPlan;
  /** Makes the kernel equal to `ir` for `target.node`; `previous` (what was applied last) enables minimal diffs. */
  apply(target: NodeTarget, ir: IR, previous?: IR): Promise<ApplyResult>;
  /** Removes everything this backend installed for the node. */
  remove(target: NodeTarget): Promise<void>;
  counters(target: NodeTarget): Promise<RuleCounter[]>;
}

/** Error from a failed apply; the previous state is still in force. */
export class ApplyError extends Error {
  constructor(
    message: string,
    readonly backend: BackendName,
    readonly detail?: string,
  ) {
    super(detail ? `${message}\n${detail}` : message);
    this.name = 'ApplyError';
  }
}
