/**
 * Kernel events → flow records. Counters the kernel aggregated (one event per aggregate and
 * drain) add to one record per aggregate; per-packet verdicts open (or add to) a per-connection
 * record, conntrack totals fill in its packets and bytes; process events attach the process at
 * each end (who opened it, who served it), by the full tuple or, for aggregates, by the tuple
 * without the source port. Bounded on
 * every side so a flood cannot take the agent down: a token bucket caps events per second
 * (the rest are counted as dropped), and the table keeps only the most recently active flows.
 */
import type {
  ConnectionEvent,
  EventSink,
  FlowCountsEvent,
  KernelDropEvent,
  KernelEvent,
  ProcessEvent,
  VerdictEvent,
} from '../dataplane/events.js';
import { PROTOCOL_NAMES as PROTOCOLS } from '../util/protocols.js';
import type { Flow, FlowPeer, FlowProcess, FlowStats, FlowVerdict } from './flow-types.js';

export type { Flow, FlowPeer, FlowProcess, FlowStats, FlowVerdict } from './flow-types.js';

/** A flow as kept: times as numbers, turned into ISO strings only when someone looks. */
type FlowRecord = Omit<Flow, 'firstSeen' | 'lastSeen'> & { first: number; last: number };

/** Both ends are resolved to pods as the record is shown, so they follow the desired state in force. */
function view(r: FlowRecord, peerOf?: (address: string) => FlowPeer | undefined): Flow {
  const { first, last, src, dst, ...rest } = r;
  const source = peerOf?.(src);
  const destination = peerOf?.(dst);
  return {
    ...rest,
    src,
    dst,
    ...(source ? { source } : {}),
    ...(destination ? { destination } : {}),
    firstSeen: new Date(first).toISOString(),
    lastSeen: new Date(last).toISOString(),
  };
}

export interface FlowFilter {
  pod?: string;
  verdict?: FlowVerdict;
  /** Substring of the policy label or rule id. */
  policy?: string;
}

export interface FlowTableOptions {
  node: string;
  /** Flows kept (least recently active go first). */
  capacity?: number;
  /** Sustained events per second taken in; bursts up to one second's worth. */
  maxEventsPerSecond?: number;
  /** Policy label of a rule id, when it belongs to a policy. */
  policyOf?: (rule: string) => string | undefined;
  podOfCgroup?: (cgroupId: string) => string | undefined;
  /** The pod (on any node) that owns an address: names both ends of every flow. */
  peerOf?: (address: string) => FlowPeer | undefined;
  now?: () => number;
}

const PENDING_PROCESS_MS = 30_000;
const PENDING_PROCESS_MAX = 4096;

function tupleKey(protocol: number, src: string, sport: number, dst: string, dport: number): string {
  return `${protocol}|${src}|${sport}|${dst}|${dport}`;
}

/** Flows to one address and port, whoever sends: how an unconnected UDP receiver is joined. */
function serviceKey(protocol: number, dst: string, dport: number): string {
  return `svc|${protocol}|${dst}|${dport}`;
}

type Side = 'source' | 'destination';

function setProcess(f: FlowRecord, side: Side, process: FlowProcess): void {
  if (side === 'destination') {
    f.destinationProcess = process;
    return;
  }
  f.process = process;
  f.sourceProcess = process;
}

/** The tuple an aggregate and a process event without a source port share. */
function aggregateTupleKey(protocol: number, src: string, dst: string, dport: number): string {
  return tupleKey(protocol, src, 0, dst, dport);
}

export function matchesFilter(f: Flow, filter: FlowFilter): boolean {
  if (filter.verdict && f.verdict !== filter.verdict) return false;
  if (
    filter.pod &&
    f.endpoint !== filter.pod &&
    f.process?.pod !== filter.pod &&
    f.source?.pod !== filter.pod &&
    f.destination?.pod !== filter.pod
  )
    return false;
  if (filter.policy && !(f.policy?.includes(filter.policy) || f.rule.includes(filter.policy))) return false;
  return true;
}

export class FlowTable implements EventSink {
  private readonly flows = new Map<string, FlowRecord>();
  /** 5-tuple → keys of flows with that tuple (a same-node connection has an egress and an ingress flow). */
  private readonly byTuple = new Map<string, Set<string>>();
  private readonly tupleOfKey = new Map<string, string>();
  /** (protocol, dst, dport) → keys of flows to that address and port, for unconnected UDP receivers. */
  private readonly byService = new Map<string, Set<string>>();
  private readonly serviceOfKey = new Map<string, string>();
  private readonly pendingProcess = new Map<string, { at: number; process: FlowProcess }>();
  private readonly listeners = new Set<(f: Flow) => void>();
  private readonly capacity: number;
  private readonly rate: number;
  private readonly now: () => number;
  private tokens: number;
  private refilledAt: number;
  private readonly counts: FlowStats = {
    events: 0,
    rateLimited: 0,
    lost: {},
    flows: 0,
    evicted: 0,
    packets: { allow: 0, deny: 0, log: 0 },
    packetsIPv6: { allow: 0, deny: 0, log: 0 },
  };
  private readonly kernelDrops: Record<string, number> = {};

  constructor(private readonly opts: FlowTableOptions) {
    this.capacity = opts.capacity ?? 10_000;
    this.rate = opts.maxEventsPerSecond ?? 20_000;
    this.now = opts.now ?? Date.now;
    this.tokens = this.rate;
    this.refilledAt = this.now();
  }

  private admit(): boolean {
    const now = this.now();
    this.tokens = Math.min(this.rate, this.tokens + ((now - this.refilledAt) * this.rate) / 1000);
    this.refilledAt = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  event(e: KernelEvent): void {
    if (!this.admit()) {
      this.counts.rateLimited++;
      return;
    }
    this.counts.events++;
    if (e.kind === 'counts') this.counts_(e);
    else if (e.kind === 'verdict') this.verdict(e);
    else if (e.kind === 'connection') this.connection(e);
    else if (e.kind === 'drop') this.drop(e);
    else this.process(e);
  }

  lost(count: number, where: string): void {
    if (count > 0) this.counts.lost[where] = (this.counts.lost[where] ?? 0) + count;
  }

  private touch(f: FlowRecord): void {
    // Re-inserting keeps the map ordered by last activity, so eviction takes the stalest.
    this.flows.delete(f.key);
    this.flows.set(f.key, f);
    if (this.listeners.size === 0) return;
    const shown = view(f, this.opts.peerOf);
    for (const l of this.listeners) l(shown);
  }

  /** Only IPv6 addresses hold a colon (the sources write IPv4-mapped addresses as IPv4). */
  private countPackets(verdict: VerdictEvent['verdict'], src: string, packets: number): void {
    this.counts.packets[verdict] += packets;
    if (src.includes(':') && this.counts.packetsIPv6) this.counts.packetsIPv6[verdict] += packets;
  }

  private counts_(e: FlowCountsEvent): void {
    this.countPackets(e.verdict, e.src, e.packets);
    const tuple = aggregateTupleKey(e.protocol, e.src, e.dst, e.dport);
    const key = `${e.verdict}|${e.endpoint ?? ''}|${e.direction}|${tuple}|${e.rule}`;
    let f = this.flows.get(key);
    if (f) {
      f.packets += e.packets;
      f.bytes += e.bytes;
      f.connections += e.connections;
      f.first = Math.min(f.first, e.firstSeen);
      f.last = Math.max(f.last, e.lastSeen);
    } else {
      f = this.open(key, tuple, e, e.firstSeen, e.lastSeen);
      f.packets = e.packets;
      f.bytes = e.bytes;
      f.connections = e.connections;
    }
    this.touch(f);
  }

  /** Kernel drops: one record per reason, kernel function and aggregate tuple, like policy aggregates. */
  private drop(e: KernelDropEvent): void {
    this.kernelDrops[e.reason] = (this.kernelDrops[e.reason] ?? 0) + e.packets;
    const tuple = aggregateTupleKey(e.protocol, e.src, e.dst, e.dport);
    const rule = `kernel/${e.reason}`;
    const key = `dropped|${e.endpoint ?? ''}|${e.direction}|${tuple}|${rule}|${e.function}`;
    let f = this.flows.get(key);
    if (f) {
      f.packets += e.packets;
      f.bytes += e.bytes;
      f.first = Math.min(f.first, e.firstSeen);
      f.last = Math.max(f.last, e.lastSeen);
    } else {
      f = this.open(key, tuple, { ...e, verdict: 'dropped', rule }, e.firstSeen, e.lastSeen);
      f.packets = e.packets;
      f.bytes = e.bytes;
      f.dropReason = e.reason;
      f.dropFunction = e.function;
    }
    this.touch(f);
  }

  /** A new record for `e`, indexed by `tuple` for the process join; the caller sets its counts. */
  private open(
    key: string,
    tuple: string,
    e: Pick<
      VerdictEvent,
      'protocol' | 'src' | 'sport' | 'dst' | 'dport' | 'direction' | 'endpoint' | 'rule'
    > & {
      verdict: FlowVerdict;
    },
    first: number,
    last: number,
  ): FlowRecord {
    const policy = this.opts.policyOf?.(e.rule);
    const f: FlowRecord = {
      key,
      node: this.opts.node,
      first,
      last,
      protocol: PROTOCOLS[e.protocol] ?? String(e.protocol),
      src: e.src,
      sport: e.sport,
      dst: e.dst,
      dport: e.dport,
      direction: e.direction,
      ...(e.endpoint ? { endpoint: e.endpoint } : {}),
      verdict: e.verdict,
      rule: e.rule,
      ...(policy ? { policy } : {}),
      packets: 0,
      bytes: 0,
      connections: 0,
    };
    let keys = this.byTuple.get(tuple);
    if (!keys) this.byTuple.set(tuple, (keys = new Set()));
    keys.add(key);
    this.tupleOfKey.set(key, tuple);
    const service = serviceKey(e.protocol, e.dst, e.dport);
    let byService = this.byService.get(service);
    if (!byService) this.byService.set(service, (byService = new Set()));
    byService.add(key);
    this.serviceOfKey.set(key, service);
    for (const side of ['source', 'destination'] as const) {
      const pending = this.pendingProcess.get(`${side}|${tuple}`);
      if (pending) setProcess(f, side, pending.process);
    }
    const served = this.pendingProcess.get(`destination|${service}`);
    if (served && !f.destinationProcess) setProcess(f, 'destination', served.process);
    this.evict();
    this.flows.set(key, f);
    return f;
  }

  private verdict(e: VerdictEvent): void {
    this.countPackets(e.verdict, e.src, 1);
    const tuple = tupleKey(e.protocol, e.src, e.sport, e.dst, e.dport);
    const key = `${e.verdict}|${e.endpoint ?? ''}|${e.direction}|${tuple}`;
    let f = this.flows.get(key);
    if (f) {
      f.packets++;
      f.bytes += e.bytes;
      f.last = e.time;
    } else {
      f = this.open(key, tuple, e, e.time, e.time);
      f.packets = 1;
      f.bytes = e.bytes;
      f.connections = 1;
    }
    this.touch(f);
  }

  private connection(e: ConnectionEvent): void {
    const keys = this.byTuple.get(tupleKey(e.protocol, e.src, e.sport, e.dst, e.dport));
    if (!keys) return;
    for (const key of keys) {
      const f = this.flows.get(key);
      if (!f || f.verdict !== 'allow') continue;
      // Conntrack counts the whole connection; never go below what verdicts already counted.
      f.packets = Math.max(f.packets, e.packets);
      f.bytes = Math.max(f.bytes, e.bytes);
      f.last = e.time;
      this.touch(f);
    }
  }

  private process(e: ProcessEvent): void {
    const pod = this.opts.podOfCgroup?.(e.cgroupId);
    const process: FlowProcess = { pid: e.pid, comm: e.comm, cgroupId: e.cgroupId, ...(pod ? { pod } : {}) };
    // Per-connection records join on the full tuple, aggregates on the tuple without the source
    // port (a process event without one matches only aggregates). The process event may come
    // before the flow's first counts or after them.
    const joins: [string, Side][] = [];
    if (e.dst) {
      joins.push([tupleKey(e.protocol, e.src, e.sport, e.dst, e.dport), 'source']);
      joins.push([aggregateTupleKey(e.protocol, e.src, e.dst, e.dport), 'source']);
    }
    if (e.side === 'socket') {
      // The same socket seen as a flow's destination: its local end is the flow's dst.
      if (e.dst) {
        joins.push([tupleKey(e.protocol, e.dst, e.dport, e.src, e.sport), 'destination']);
        joins.push([aggregateTupleKey(e.protocol, e.dst, e.src, e.sport), 'destination']);
      } else {
        // An unconnected UDP socket: every flow to its address and port.
        joins.push([serviceKey(e.protocol, e.src, e.sport), 'destination']);
      }
    }
    for (const [tuple, side] of joins) {
      const pendingKey = `${side}|${tuple}`;
      this.pendingProcess.delete(pendingKey);
      this.pendingProcess.set(pendingKey, { at: this.now(), process });
      const index = tuple.startsWith('svc|') ? this.byService : this.byTuple;
      for (const key of index.get(tuple) ?? []) {
        const f = this.flows.get(key);
        if (!f) continue;
        setProcess(f, side, process);
        this.touch(f);
      }
    }
    this.prunePending();
  }

  private prunePending(): void {
    const cutoff = this.now() - PENDING_PROCESS_MS;
    for (const [k, v] of this.pendingProcess) {
      if (v.at >= cutoff && this.pendingProcess.size <= PENDING_PROCESS_MAX) break;
      this.pendingProcess.delete(k);
    }
  }

  private evict(): void {
    while (this.flows.size >= this.capacity) {
      const oldest = this.flows.keys().next();
      if (oldest.done) return;
      this.remove(oldest.value);
      this.counts.evicted++;
    }
  }

  private remove(key: string): void {
    const service = this.serviceOfKey.get(key);
    this.serviceOfKey.delete(key);
    if (service !== undefined) {
      const keys = this.byService.get(service);
      keys?.delete(key);
      if (keys?.size === 0) this.byService.delete(service);
    }
    this.flows.delete(key);
    const tuple = this.tupleOfKey.get(key);
    this.tupleOfKey.delete(key);
    if (tuple === undefined) return;
    const keys = this.byTuple.get(tuple);
    keys?.delete(key);
    if (keys?.size === 0) this.byTuple.delete(tuple);
  }

  /** Most recent first. */
  list(filter: FlowFilter = {}, limit = 1000): Flow[] {
    const out: Flow[] = [];
    const all = [...this.flows.values()];
    for (let i = all.length - 1; i >= 0 && out.length < limit; i--) {
      const r = all[i];
      if (!r) continue;
      const f = view(r, this.opts.peerOf);
      if (matchesFilter(f, filter)) out.push(f);
    }
    return out;
  }

  /** Calls `listener` with every flow created or updated from now on; returns the unsubscribe function. */
  subscribe(listener: (f: Flow) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  stats(): FlowStats {
    return {
      ...this.counts,
      lost: { ...this.counts.lost },
      packets: { ...this.counts.packets },
      packetsIPv6: { allow: 0, deny: 0, log: 0, ...this.counts.packetsIPv6 },
      flows: this.flows.size,
      kernelDrops: { ...this.kernelDrops },
    };
  }
}
