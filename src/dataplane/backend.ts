/**
 * The contract between the IR and a kernel mechanism: the whole driver of one dataplane. A backend
 * renders one node's slice of the IR into a plan (text a human can read: `switchyard compile`),
 * applies it atomically inside that node's network namespace (on any failure the previous state
 * stays in force), and is the only code that knows how its kernel objects look: it reads them back
 * for drift, repairs them, reports their changes, decodes their flow events and conntrack, and
 * says what the kernel lacks to run it. The agent, observe, lab, cli and bench hold a Backend and
 * never ask which one it is.
 */
import type { IrChange } from '../ir/delta.js';
import type { Direction, Endpoint, IR } from '../ir/types.js';
import type { EventSource } from './events.js';

export type BackendName = 'iptables' | 'nftables' | 'ebpf';
export const BACKEND_NAMES: readonly BackendName[] = ['iptables', 'nftables', 'ebpf'];

/** Where a node's dataplane lives. */
export interface NodeTarget {
  /** Lab (or agent scope) name, used for pins and cgroup paths. */
  scope: string;
  node: string;
  /** Network namespace name under /run/netns (never the root namespace). */
  netns: string;
  /**
   * Pod id → cgroup v2 directory (DesiredState.cgroups), for what a backend keys by the calling
   * process's cgroup (eBPF: internalTrafficPolicy Local at connect time). Absent: not known.
   */
  podCgroups?: Readonly<Record<string, string>>;
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

/** A running watch of kernel change events; stop() ends it. */
export interface ChangeWatch {
  stop(): void;
  /**
   * What the events cannot show (iptables: ipset members), checked at its own pace: `read` reads
   * only that part of the kernel (cheap), `partOf` cuts the same part out of a fingerprint this
   * backend's `fingerprint` returned. Absent: the events show every change.
   */
  unwatched?: {
    everyMs: number;
    read(): Promise<string>;
    /**
     * The same part right after one of our own applies, when the backend can tell it from less
     * than a whole read (what the apply touched read again, the rest as `read` last saw it).
     * Absent: `read`.
     */
    readAfterApply?(): Promise<string>;
    partOf(fingerprint: string): string;
  };
}

export interface FlowSourceOptions {
  /** The IR the node currently runs (a backend that encodes rules in its events decodes through it). */
  ir: () => IR | undefined;
  /**
   * How often the kernel's flow aggregates, connection totals and loss counters are drained (ms);
   * default FLOW_INTERVAL_MS.
   */
  pollMs?: number;
}

/** How often flow aggregates are drained from the kernel unless the agent says otherwise (ms). */
export const FLOW_INTERVAL_MS = 1000;

/** One tracked connection, as any backend's conntrack reports it. */
export interface ConntrackEntry {
  protocol: string;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  state: string;
  /** The reply direction has been seen. */
  replied: boolean;
  /** Negative once expired (awaiting collection). */
  expiresInSeconds: number;
  /** Policy direction that admitted it, and its endpoint, where the backend tracks per hook. */
  direction?: Direction;
  endpoint?: string;
  ifindex?: number;
  ifname?: string;
  ageSeconds?: number;
  idleSeconds?: number;
  /** Where the backend counts them (netfilter only with nf_conntrack_acct on). */
  packets?: number;
  bytes?: number;
}

export interface ConntrackGc {
  scanned: number;
  expired: number;
  orphaned: number;
}

/** A node's connection tracking table as its backend keeps it. */
export interface ConntrackView {
  /** What keeps the table, for humans: `kernel conntrack`, `eBPF LRU map`. */
  readonly description: string;
  count(): Promise<number>;
  /** Entries, oldest first where the backend knows their age. */
  list(): Promise<ConntrackEntry[]>;
  /** Removes expired and orphaned entries, where the table is the backend's own to collect. */
  collectGarbage?(): Promise<ConntrackGc>;
}

/** What the running kernel offers this backend, from feature probes (never from the version number). */
export interface SupportReport {
  supported: boolean;
  /** One capability statement per missing feature: "this kernel lacks tcx (Linux 6.6+)". */
  missing: string[];
}

export interface Backend {
  readonly name: BackendName;
  /** Pure: the plan for one node. */
  render(ir: IR, node: string): RenderedPlan;
  /**
   * Makes the kernel equal to `ir` for `target.node`, writing only what differs from the backend's
   * shadow of the node: what its own applies wrote there last, kept in this instance (built from
   * one read of the kernel when there is none; `previous`, what was applied last, may stand in for
   * that read where a backend can trust it). Objects of `ir` that are the same references as in
   * the shadow's IR are skipped without looking inside. A failed apply drops the shadow.
   * `change`, when given, says how `ir` came from `previous` (its `from`): a backend may then
   * touch only what it names instead of walking the IR to find the difference.
   */
  apply(target: NodeTarget, ir: IR, previous?: IR, change?: IrChange): Promise<ApplyResult>;
  /**
   * Forgets the shadow of the node: the next apply reads the kernel instead of trusting what was
   * written. The agent calls it before a repair or a full apply (the kernel drifted, or is not
   * known) and after a failed apply; the fingerprint (read from the kernel) is what finds drift.
   */
  dropShadow(target: NodeTarget): void;
  /** Removes everything this backend installed for the node (and its shadow). */
  remove(target: NodeTarget): Promise<void>;
  counters(target: NodeTarget): Promise<RuleCounter[]>;

  /**
   * A digest of what this backend installed for the node, read from the kernel. The agent records
   * it after every apply; a different one later is drift. Right after an apply, contents the
   * backend knows it wrote (its shadow) may stand in for a full read until they are next due for
   * one (eBPF map contents, docs/ebpf.md): a change made in between is then drift rather than the
   * new reference. A state no apply of ours leaves behind (see inconsistentFingerprint) is marked
   * as such.
   */
  fingerprint(target: NodeTarget): Promise<string>;
  /** Gets a drifted dataplane ready for a full apply; returns what it removed. */
  prepareRepair(target: NodeTarget): Promise<string[]>;
  /**
   * Calls `onChange` soon after the kernel objects change, so drift is noticed in milliseconds;
   * undefined where the kernel has no such events (polling covers those).
   */
  watchChanges(target: NodeTarget, onChange: () => void): Promise<ChangeWatch | undefined>;
  /** How often the agent polls the fingerprint when there is no change watch (ms). */
  readonly driftPollMs: number;
  /** The node's flow events: verdicts naming the deciding rule, and connection totals. */
  flowSource(target: NodeTarget, opts: FlowSourceOptions): EventSource;
  conntrack(target: NodeTarget): ConntrackView;
  /** Which kernel features this backend needs and which the running kernel lacks. */
  checkSupport(): Promise<SupportReport>;
  /**
   * Pure: what the kernel would refuse in `node`'s slice of `ir` for its size (one line each,
   * naming the endpoint and the way out), predicted without loading anything; empty when it fits.
   * Asked by `compile` and before a lab writes a desired state; apply refuses the same.
   */
  limits?(ir: IR, node: string): string[];
  /**
   * Changes the node's dataplane behind the agent's back, as an operator or a stray script might,
   * so that `endpoint` loses its policy; returns the equivalent command. For drills and the demo.
   */
  tamper(target: NodeTarget, endpoint: Endpoint): Promise<string>;
  /**
   * A cheap read of one part of the node's dataplane, for whoever waits for a change to be in
   * force (the agent bench polls it every millisecond): the returned function reads the kernel
   * each call and returns a string that changes when that part does. Undefined where the backend
   * has no read cheaper than its fingerprint. Close it when done.
   */
  probe?(target: NodeTarget, part: ProbedPart): InForceProbe | undefined;
}

/** What a probe watches: an endpoint's policy hooks, or one service port's backends. */
export type ProbedPart =
  { endpoint: Endpoint } | { service: { address: string; port: number; protocol: 'TCP' | 'UDP' | 'SCTP' } };

export interface InForceProbe {
  read(): string;
  close(): void;
}

/**
 * Error from a failed apply; the previous state is still in force. `deterministic`: the same
 * input fails the same way again (the verifier rejects the program, a map or a limit is too
 * small for it, the input is invalid), so retrying before the desired state changes is useless.
 */
export class ApplyError extends Error {
  readonly deterministic: boolean;

  constructor(
    message: string,
    readonly backend: BackendName,
    readonly detail?: string,
    options?: ErrorOptions & { deterministic?: boolean },
  ) {
    super(detail ? `${message}\n${detail}` : message, options);
    this.name = 'ApplyError';
    this.deterministic = options?.deterministic ?? false;
  }
}

/** Whether `e`, or an error it wraps, is an apply failure that would repeat on the same input. */
export function isDeterministicFailure(e: unknown): boolean {
  for (let c: unknown = e, depth = 0; c instanceof Error && depth < 10; c = c.cause, depth++)
    if (c instanceof ApplyError && c.deterministic) return true;
  return false;
}

const INCONSISTENT = /^inconsistent\((.*)\):/;

/**
 * The fingerprint of a kernel state that no apply of ours leaves behind, such as one of our
 * chains that nothing jumps to. Reading it back right after an apply means someone changed the
 * kernel between the apply and the read: recorded as the baseline, that change would look like
 * the state in force and never be repaired, so the agent repairs such a state whenever it sees it.
 */
export function inconsistentFingerprint(reason: string, digest: string): string {
  return `inconsistent(${reason.replace(/[()]/g, '')}):${digest}`;
}

/** Why a fingerprint marks an inconsistent state, or undefined for a consistent one. */
export function inconsistency(fingerprint: string): string | undefined {
  return INCONSISTENT.exec(fingerprint)?.[1];
}
