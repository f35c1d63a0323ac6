/**
 * What the kernel tells the agent about traffic, before aggregation into flows. Every backend's
 * flow source (eBPF ring buffer, NFLOG + conntrack events) and the process tracer produce these;
 * the aggregator (flows.ts) joins them into Flow records.
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

/** The process that opened a connection (from the socket's state changes in process context). */
export interface ProcessEvent extends PacketTuple {
  kind: 'process';
  time: number;
  pid: number;
  comm: string;
  /** cgroup v2 id (inode number of the cgroup directory), decimal. */
  cgroupId: string;
}

export type KernelEvent = VerdictEvent | ConnectionEvent | ProcessEvent;

/** Where sources deliver; `lost` reports events the kernel or a source had to drop (full buffer, rate limit). */
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
