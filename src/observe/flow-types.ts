/**
 * Flow records as the agent keeps and serves them: the one definition that the flow table, the
 * agent's API and the browser console share. Type-only and free of Node's types, so web/ can
 * typecheck it.
 */
import type { Verdict } from '../dataplane/events.js';
import type { Direction } from '../ir/types.js';

export interface FlowProcess {
  pid: number;
  comm: string;
  cgroupId: string;
  /** The pod whose cgroup it is. */
  pod?: string;
}

export interface Flow {
  key: string;
  node: string;
  firstSeen: string;
  lastSeen: string;
  protocol: string;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  direction: Direction;
  endpoint?: string;
  verdict: Verdict;
  rule: string;
  /** `NetworkPolicy ns/name` or `GlobalPolicy name`; absent for defaults and fail-closed drops. */
  policy?: string;
  packets: number;
  bytes: number;
  /**
   * New connections the record stands for: an aggregate counts every connection its rule decided
   * between the two addresses on that port (then `sport` is 0); a per-connection record, 1.
   */
  connections: number;
  /** The process that opened the flow (the source end); kept for clients of `process`. */
  process?: FlowProcess;
  /** The process at the source end (same as `process`). */
  sourceProcess?: FlowProcess;
  /** The process at the destination end: the server that accepted, the UDP receiver. */
  destinationProcess?: FlowProcess;
}

export interface FlowStats {
  /** Kernel events taken in. */
  events: number;
  /** Events refused by the rate limit. */
  rateLimited: number;
  /** Events the kernel side could not deliver, by where they were lost. */
  lost: Record<string, number>;
  flows: number;
  evicted: number;
}
