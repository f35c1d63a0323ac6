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

/**
 * A policy verdict, or `dropped`: the kernel dropped the packets for a reason of its own (no
 * route, rp_filter, no socket …), named in `dropReason`.
 */
export type FlowVerdict = Verdict | 'dropped';

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
  verdict: FlowVerdict;
  /** The deciding rule; for `dropped`, `kernel/<REASON>`. */
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
  /** `dropped`: the kernel's reason (`enum skb_drop_reason` without SKB_DROP_REASON_), e.g. IP_RPFILTER. */
  dropReason?: string;
  /** `dropped`: the kernel function that freed the packets, `name+0xoffset`. */
  dropFunction?: string;
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
  /** Packets the flow events taken in carried, by verdict (what `switchyard_flows_processed_total` counts). */
  packets: Record<Verdict, number>;
  /** The IPv6 share of `packets` (the rest is IPv4): `switchyard_flows_processed_total{family}`. */
  packetsIPv6?: Record<Verdict, number>;
  /** Packets the kernel dropped for its own reasons (verdict `dropped`), by reason, since start. */
  kernelDrops?: Record<string, number>;
}
