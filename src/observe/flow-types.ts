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

/** A pod at one end of a flow, resolved from its address with the desired state the agent applied. */
export interface FlowPeer {
  /** `namespace/name` */
  pod: string;
  namespace: string;
  name: string;
  labels: Record<string, string>;
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
  /** The pod whose address `src` is, on any node; absent for addresses outside the cluster. */
  source?: FlowPeer;
  /** The pod whose address `dst` is. */
  destination?: FlowPeer;
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
  process?: FlowProcess;
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
