/**
 * What the kernel tells the agent about traffic. Every backend's flow source drains counters
 * the dataplane aggregated in the kernel (FlowCountsEvent, one per aggregate and interval); the
 * process tracer reports who opened connections (ProcessEvent). The flow table (flows.ts) joins
 * them into Flow records. VerdictEvent and ConnectionEvent are the per-packet / per-connection
 * forms, kept for sources that cannot aggregate.
 */
import type { Direction } from '../ir/types.js';

export type Verdict = 'allow' | 'deny' | 'log';

/** The addresses and ports a packet or connection carries (original direction for connections). */
export interface PacketTuple {
  /** IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP). */
  protocol: number;
  src: string;
  dst: string;
  /** 0 where the protocol has no ports. */
  sport: number;
  dport: number;
}

/** A packet a policy rule decided on (or logged): one per new allowed connection, one per denied packet. */
export interface VerdictEvent extends PacketTuple {
  kind: 'verdict';
  /** Milliseconds since the epoch. */
  time: number;
  verdict: Verdict;
  /**
   * IR rule id, or a synthetic id as in RuleCounter: `<endpoint>/<direction>/default`,
   * `<endpoint>/<direction>/fail-closed/<reason>`, `prefilter/<name>`.
   */
  rule: string;
  /** `namespace/name` of the pod whose policy decided. */
  endpoint?: string;
  direction: Direction;
  /** Length of the packet that carried the verdict. */
  bytes: number;
}

/** A connection's totals, when the dataplane's conntrack reports or ends it; the tuple is the original direction's. */
export interface ConnectionEvent extends PacketTuple {
  kind: 'connection';
  time: number;
  /** `update` carries running totals; `end` the final ones. */
  phase: 'update' | 'end';
  packets: number;
  bytes: number;
}

/**
 * Counters the dataplane aggregated in the kernel for one flow aggregate, drained once per
 * interval: every packet, byte and new connection since the previous drain of the same aggregate
 * (deltas, never running totals; the flow table adds them up). An aggregate is everything one
 * rule decided for one endpoint and direction between two addresses on one protocol and
 * destination port: the source port is not part of it (`sport` is 0).
 */
export interface FlowCountsEvent extends PacketTuple {
  kind: 'counts';
  verdict: Verdict;
  /** As in VerdictEvent. */
  rule: string;
  endpoint?: string;
  direction: Direction;
  /**
   * Packets and bytes the aggregate saw in this interval. Allowed aggregates: every packet of
   * their connections in the original direction that passed the deciding hook; denied: the
   * dropped packets; log: the packets the Log rule matched.
   */
  packets: number;
  bytes: number;
  /** New connections decided (allow/log); for deny, the dropped packets that would have opened one. */
  connections: number;
  /** Milliseconds since the epoch: the first and the latest packet counted in this interval. */
  firstSeen: number;
  lastSeen: number;
}

/**
 * The process that opened a connection (from the socket's state changes in process context), or,
 * with sport 0, the process that opened connections from src to dst:dport in one interval.
 */
export interface ProcessEvent extends PacketTuple {
  kind: 'process';
  time: number;
  pid: number;
  comm: string;
  /** cgroup v2 id (inode number of the cgroup directory), decimal. */
  cgroupId: string;
  /**
   * For events without a source port (sport 0, one per tuple and interval): how many connects
   * the tuple had in the interval; pid, comm and cgroupId are those of the first of them.
   */
  connections?: number;
  /**
   * Which end of a flow the process is. Absent or 'source': it opened the connection (src is its
   * address). 'socket': a socket's own view (src/sport local, dst/dport remote; dst '' when an
   * unconnected UDP socket has no peer), so the process is the source or the destination of the
   * flows that tuple matches, whichever way round they run.
   */
  side?: 'source' | 'socket';
}

/**
 * Packets the kernel dropped for a reason other than our policy (no route, rp_filter, no socket,
 * a full queue …), counted in the kernel per reason, kernel function and tuple, and drained once
 * per interval like FlowCountsEvent (`sport` is 0).
 */
export interface KernelDropEvent extends PacketTuple {
  kind: 'drop';
  /** The kernel's name of the reason, without `SKB_DROP_REASON_` (`NO_SOCKET`, `IP_RPFILTER`). */
  reason: string;
  /** Where the packet was freed, `function+0xoffset` (the raw address when kallsyms hides it). */
  function: string;
  /** Our pod on the packet's path: the destination's (ingress) when it is ours, else the source's (egress). */
  endpoint?: string;
  direction: Direction;
  packets: number;
  bytes: number;
  firstSeen: number;
  lastSeen: number;
}

export type KernelEvent = VerdictEvent | ConnectionEvent | ProcessEvent | FlowCountsEvent | KernelDropEvent;

/**
 * `where` of sink.lost() for aggregates the kernel could not keep (a full aggregation map or
 * set): the packets they would have counted are missing from every record.
 */
export const LOST_AGGREGATE_FULL = 'aggregation full';

/**
 * Where sources deliver; `lost` reports events the kernel or a source had to drop (full buffer,
 * full aggregation map, rate limit), by where they were lost.
 */
export interface EventSink {
  event(e: KernelEvent): void;
  lost(count: number, where: string): void;
}

/** A running reader of kernel events for one node; stop() releases every kernel object it opened. */
export interface EventSource {
  readonly name: string;
  start(sink: EventSink): Promise<void>;
  stop(): Promise<void>;
}
