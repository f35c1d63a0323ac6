/**
 * The eBPF backend's flow event source for one node: the policy programs' ring buffer records
 * (Log rules; new connections allowed and packets denied while flow events are on) become
 * VerdictEvents, a periodic read of the conntrack map becomes ConnectionEvents, and records the
 * kernel could not queue (full ring buffer, counted per CPU in `events_lost`) or this source
 * chose not to deliver (rate limit, slots it could never name) are reported through sink.lost().
 *
 * Everything comes from the node's pins, so the source needs no agent state: slots and hooks are
 * named through the node's description (meta), re-read when its pin is replaced (every apply) or
 * a record names a slot it does not know yet (a program swapped in before the new description is
 * written). Before the node's first apply there are no pins: start() resolves at once and the
 * source retries quietly every 500 ms until they appear or stop() is called. When the node is
 * removed and recreated (new pins), it reopens them.
 *
 * Flood safety: the ring buffer is bounded (the kernel counts what does not fit), each wakeup
 * consumes a bounded batch before yielding to the event loop (epoll is level-triggered, so the
 * rest comes on the next turn), and a token bucket caps the events handed to the sink.
 */
import { statSync } from 'node:fs';
import { BpfMap, PerCpuMap, RingBufMap, RingBufReader, codecs } from '../../bpf/index.js';
import { watchReadable, type ReadableWatch } from '../../bpf/sys.js';
import type { NodeTarget } from '../backend.js';
import {
  ctKey,
  ctValue,
  EVENT_VERDICT_NAMES,
  flowEvent,
  IPPROTO,
  MAP,
  type CtKey,
  type CtValue,
  type FlowEvent,
} from './layout.js';
import { EVENTS_BYTES, mapPinPath, readEntries } from './maps.js';
import { readMeta, type NodeMeta } from './meta.js';
import { parseSlotKey, type SlotOwner } from './node.js';
import { metaPin, nodeDir } from './paths.js';
import type { Direction } from '../../ir/types.js';
import type { ConnectionEvent, EventSink, EventSource, VerdictEvent } from '../events.js';

export interface EbpfEventSourceOptions {
  /** How often the conntrack map and the lost counter are read (ms); default 1000. */
  connectionPollMs?: number;
  /** How often to look for the node's pins before its first apply (ms); default 500. */
  retryMs?: number;
  /** Verdict events handed to the sink per second at most (the rest are reported lost); default 50 000. */
  maxEventsPerSecond?: number;
}

/** `where` of sink.lost() for records the kernel could not queue. */
export const LOST_RING_BUFFER = 'ebpf ring buffer';
/** `where` of sink.lost() for records over maxEventsPerSecond. */
export const LOST_RATE_LIMIT = 'ebpf rate limit';
/** `where` of sink.lost() for records whose slot no description ever named (dropped, not guessed). */
export const LOST_UNRESOLVED = 'ebpf unresolved slot';

const DEFAULT_POLL_MS = 1000;
/** How often the ring buffer is drained (records come without wakeups). */
const DRAIN_MS = 50;
/** The conntrack read may take at most 1/20 of the time between reads. */
const CONNECTION_POLL_DUTY = 20;
const DEFAULT_RETRY_MS = 500;
const DEFAULT_MAX_EVENTS_PER_SECOND = 50_000;
/** Records consumed per wakeup before yielding to the event loop. */
const BATCH = 1024;
/** At stop or reopen: at most what a full ring buffer holds (a flood must not keep stop() busy). */
const FINAL_DRAIN = Math.ceil(EVENTS_BYTES / (flowEvent.size + 8));
/** Records waiting for a description that names their slot, and how long they may wait. */
const PENDING_MAX = 10_000;
const PENDING_WAIT_MS = 3000;
const PENDING_RETRY_MS = 100;

const lostCodec = codecs.u64;

interface Pending {
  record: FlowEvent;
  since: number;
}

interface Opened {
  events: RingBufMap;
  reader: RingBufReader;
  ct: BpfMap<CtKey, CtValue>;
  lost: PerCpuMap<number, bigint>;
  watch?: ReadableWatch;
  drainTimer?: NodeJS.Timeout;
  /** Inodes of the pins this was opened from: a different inode means the node was recreated. */
  eventsIno: number;
  ctIno: number;
}

interface Connection {
  packets: number;
  bytes: number;
  event: Omit<ConnectionEvent, 'time' | 'phase' | 'packets' | 'bytes'>;
}

function inode(path: string): number | undefined {
  try {
    return statSync(path).ino;
  } catch {
    return undefined;
  }
}

function connectionId(k: CtKey, v: CtValue): string {
  return `${k.ifindex}|${k.dir}|${k.proto}|${k.saddr}|${k.sport}|${k.daddr}|${k.dport}|${v.created}`;
}

class EbpfEventSource implements EventSource {
  readonly name: string;
  private readonly dir: string;
  private readonly pollMs: number;
  private readonly retryMs: number;
  private readonly maxPerSecond: number;
  private sink: EventSink | undefined;
  private opened: Opened | undefined;
  private running = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private pendingTimer: NodeJS.Timeout | undefined;

  /** slot → owner, from the latest description (slots it dropped keep their last meaning). */
  private slots = new Map<number, SlotOwner>();
  /** `ifindex|direction` → endpoint. */
  private hooks = new Map<string, string>();
  private metaIno: number | undefined;
  private pending: Pending[] = [];
  /** ktime (ns) → epoch ms: epoch = ktime / 1e6 + offset. */
  private clockOffsetMs = 0;
  private lostSeen = 0n;
  private connections = new Map<string, Connection>();
  private nextConnectionPoll = 0;
  private tokens: number;
  private tokensAt = 0;
  private rateDropped = 0;

  constructor(
    private readonly target: NodeTarget,
    opts: EbpfEventSourceOptions,
  ) {
    this.name = `ebpf:${target.scope}/${target.node}`;
    this.dir = nodeDir(target.scope, target.node);
    this.pollMs = opts.connectionPollMs ?? DEFAULT_POLL_MS;
    this.retryMs = opts.retryMs ?? DEFAULT_RETRY_MS;
    this.maxPerSecond = opts.maxEventsPerSecond ?? DEFAULT_MAX_EVENTS_PER_SECOND;
    this.tokens = this.maxPerSecond;
  }

  async start(sink: EventSink): Promise<void> {
    if (this.running) throw new Error(`${this.name}: already started`);
    this.running = true;
    this.sink = sink;
    this.tryOpen();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    // What is already queued still counts: deliver it and report what was lost.
    if (this.opened) {
      try {
        this.drain(FINAL_DRAIN);
        this.flushPending(true);
        this.reportLost();
      } catch {
        // the node went away meanwhile: nothing more to deliver
      }
    }
    this.running = false;
    clearTimeout(this.retryTimer);
    clearInterval(this.pollTimer);
    clearTimeout(this.pendingTimer);
    this.retryTimer = this.pollTimer = this.pendingTimer = undefined;
    this.close();
    this.pending = [];
    this.connections.clear();
    this.sink = undefined;
  }

  // ---- opening, reopening --------------------------------------------------------------------

  private tryOpen(): void {
    this.retryTimer = undefined;
    if (!this.running) return;
    if (!this.open()) {
      this.retryTimer = setTimeout(() => this.tryOpen(), this.retryMs);
      this.retryTimer.unref?.();
      return;
    }
    this.pollTimer = setInterval(() => this.poll(), this.pollMs);
    this.pollTimer.unref?.();
  }

  /** Opens the node's pins; false (nothing left open) when they are not all there yet. */
  private open(): boolean {
    const eventsPath = mapPinPath(this.dir, MAP.events);
    const ctPath = mapPinPath(this.dir, MAP.conntrack);
    const lostPath = mapPinPath(this.dir, MAP.eventsLost);
    const eventsIno = inode(eventsPath);
    const ctIno = inode(ctPath);
    if (eventsIno === undefined || ctIno === undefined || inode(lostPath) === undefined) return false;
    if (!this.refreshMeta(true)) return false;
    const closers: (() => void)[] = [];
    try {
      const events = RingBufMap.fromPin(eventsPath);
      closers.push(() => events.close());
      const reader = new RingBufReader(events);
      closers.push(() => reader.close());
      const ct = BpfMap.fromPin(ctPath, ctKey, ctValue);
      closers.push(() => ct.close());
      const lost = PerCpuMap.fromPin(lostPath, codecs.u32, lostCodec);
      closers.push(() => lost.close());
      this.opened = { events, reader, ct, lost, eventsIno, ctIno };
    } catch {
      for (const close of closers.reverse()) close();
      return false;
    }
    this.syncClock();
    this.lostSeen = this.readLost();
    // Entries already there are reported from their current totals on the first poll.
    this.connections.clear();
    const opened = this.opened;
    opened.watch = watchReadable(opened.events.fd, () => this.onReadable());
    // The programs write without waking readers (BPF_RB_NO_WAKEUP): drain on a timer instead.
    opened.drainTimer = setInterval(() => this.onReadable(), DRAIN_MS);
    opened.drainTimer.unref?.();
    this.onReadable();
    return true;
  }

  private close(): void {
    const o = this.opened;
    if (!o) return;
    this.opened = undefined;
    clearInterval(o.drainTimer);
    o.watch?.close();
    o.reader.close();
    o.events.close();
    o.ct.close();
    o.lost.close();
  }

  /** The pins were replaced (node removed and applied again) or removed: start over. */
  private reopenIfReplaced(): boolean {
    const o = this.opened;
    if (!o) return false;
    const eventsIno = inode(mapPinPath(this.dir, MAP.events));
    const ctIno = inode(mapPinPath(this.dir, MAP.conntrack));
    if (eventsIno === o.eventsIno && ctIno === o.ctIno) return false;
    // Records still queued in the old ring buffer are the old dataplane's last words.
    try {
      this.drain(FINAL_DRAIN);
      this.reportLost();
    } catch {
      // gone already
    }
    for (const c of this.connections.values()) this.emitConnection(c, 'end');
    this.connections.clear();
    clearInterval(this.pollTimer);
    this.pollTimer = undefined;
    this.close();
    this.tryOpen();
    return true;
  }

  /** Re-reads the description when its pin changed (or `force`); false when there is none. */
  private refreshMeta(force = false): boolean {
    const ino = inode(metaPin(this.dir));
    if (ino === undefined) return false;
    if (!force && ino === this.metaIno) return true;
    let meta: NodeMeta | undefined;
    try {
      meta = readMeta(this.dir);
    } catch {
      return false;
    }
    if (!meta) return false;
    this.metaIno = ino;
    for (const [key, slot] of Object.entries(meta.alloc.slots)) this.slots.set(slot, parseSlotKey(key));
    this.hooks = new Map(meta.hooks.map((h) => [`${h.ifindex}|${h.direction}`, h.endpoint]));
    return true;
  }

  private syncClock(): void {
    this.clockOffsetMs = Date.now() - Number(process.hrtime.bigint()) / 1e6;
  }

  // ---- verdict events ------------------------------------------------------------------------

  private onReadable(): void {
    if (!this.opened || !this.running) return;
    try {
      this.drain(BATCH);
    } catch {
      // A reader error means the map is unusable: the next poll reopens or retries.
    }
  }

  private drain(limit: number): void {
    const o = this.opened;
    if (!o) return;
    o.reader.consume((data, offset, length) => {
      if (length < flowEvent.size) return;
      this.onRecord(flowEvent.decode(data, offset));
    }, limit);
  }

  private takeToken(): boolean {
    const now = performance.now();
    this.tokens = Math.min(
      this.maxPerSecond,
      this.tokens + ((now - this.tokensAt) / 1000) * this.maxPerSecond,
    );
    this.tokensAt = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private onRecord(record: FlowEvent): void {
    if (!this.takeToken()) {
      this.rateDropped++;
      return;
    }
    if (!this.slots.has(record.slot)) this.refreshMeta();
    if (this.slots.has(record.slot)) {
      this.emitVerdict(record);
      return;
    }
    // A program swapped in before the description naming its new slots was written.
    if (this.pending.length >= PENDING_MAX) {
      this.sink?.lost(1, LOST_UNRESOLVED);
      return;
    }
    this.pending.push({ record, since: performance.now() });
    if (!this.pendingTimer) {
      this.pendingTimer = setTimeout(() => {
        this.pendingTimer = undefined;
        this.flushPending(false);
      }, PENDING_RETRY_MS);
      this.pendingTimer.unref?.();
    }
  }

  /** Emits held records whose slot is now named; drops (and reports) those too old, or all when `final`. */
  private flushPending(final: boolean): void {
    if (this.pending.length === 0) return;
    this.refreshMeta();
    const now = performance.now();
    const waiting: Pending[] = [];
    let dropped = 0;
    for (const p of this.pending) {
      if (this.slots.has(p.record.slot)) this.emitVerdict(p.record);
      else if (final || now - p.since > PENDING_WAIT_MS) dropped++;
      else waiting.push(p);
    }
    this.pending = waiting;
    if (dropped > 0) this.sink?.lost(dropped, LOST_UNRESOLVED);
    if (waiting.length > 0 && !final && this.running && !this.pendingTimer) {
      this.pendingTimer = setTimeout(() => {
        this.pendingTimer = undefined;
        this.flushPending(false);
      }, PENDING_RETRY_MS);
      this.pendingTimer.unref?.();
    }
  }

  private emitVerdict(r: FlowEvent): void {
    const owner = this.slots.get(r.slot);
    if (!owner) return;
    const verdict = EVENT_VERDICT_NAMES[r.verdict];
    if (!verdict) return;
    const direction: Direction = owner.direction;
    const endpoint = this.hooks.get(`${r.ifindex}|${direction}`) ?? owner.endpoint;
    const ported = r.proto === IPPROTO.TCP || r.proto === IPPROTO.UDP || r.proto === IPPROTO.SCTP;
    const event: VerdictEvent = {
      kind: 'verdict',
      time: Number(r.ts) / 1e6 + this.clockOffsetMs,
      verdict,
      rule: owner.rule,
      endpoint,
      direction,
      protocol: r.proto,
      src: r.saddr,
      dst: r.daddr,
      sport: ported ? r.sport : 0,
      dport: ported ? r.dport : 0,
      bytes: r.len,
    };
    this.sink?.event(event);
  }

  // ---- polling: conntrack, lost records ------------------------------------------------------

  private poll(): void {
    if (!this.running || !this.opened) return;
    try {
      if (this.reopenIfReplaced()) return;
      this.refreshMeta();
      this.syncClock();
      this.reportLost();
      // Reading the conntrack map costs in proportion to its size (thousands of short
      // connections a second leave tens of thousands of closed entries): keep it under
      // 1/CONNECTION_POLL_DUTY of a core by spacing the reads out as the map grows.
      const now = performance.now();
      if (now >= this.nextConnectionPoll) {
        this.pollConnections();
        const took = performance.now() - now;
        this.nextConnectionPoll = now + Math.max(this.pollMs, took * CONNECTION_POLL_DUTY) - 1;
      }
    } catch {
      // The pins went away between the check and the read: the next poll sees it.
    }
  }

  private readLost(): bigint {
    const values = this.opened?.lost.lookup(0) ?? [];
    return values.reduce((sum, v) => sum + v, 0n);
  }

  private reportLost(): void {
    const total = this.readLost();
    if (total > this.lostSeen) this.sink?.lost(Number(total - this.lostSeen), LOST_RING_BUFFER);
    this.lostSeen = total;
    if (this.rateDropped > 0) {
      this.sink?.lost(this.rateDropped, LOST_RATE_LIMIT);
      this.rateDropped = 0;
    }
  }

  private pollConnections(): void {
    const o = this.opened;
    if (!o) return;
    const now = process.hrtime.bigint();
    const seen = new Set<string>();
    for (const [k, v] of readEntries(o.ct)) {
      // Expired entries are dead to the data path; collection removes them later.
      if (now > v.expires) continue;
      const id = connectionId(k, v);
      seen.add(id);
      const packets = Number(v.packets);
      const bytes = Number(v.bytes);
      const known = this.connections.get(id);
      if (known && known.packets === packets && known.bytes === bytes) continue;
      const ported = k.proto === IPPROTO.TCP || k.proto === IPPROTO.UDP || k.proto === IPPROTO.SCTP;
      const c: Connection = known ?? {
        packets,
        bytes,
        event: {
          kind: 'connection',
          protocol: k.proto,
          src: k.saddr,
          dst: k.daddr,
          sport: ported ? k.sport : 0,
          dport: ported ? k.dport : 0,
        },
      };
      c.packets = packets;
      c.bytes = bytes;
      this.connections.set(id, c);
      this.emitConnection(c, 'update');
    }
    for (const [id, c] of this.connections) {
      if (seen.has(id)) continue;
      this.connections.delete(id);
      this.emitConnection(c, 'end');
    }
  }

  private emitConnection(c: Connection, phase: ConnectionEvent['phase']): void {
    this.sink?.event({ ...c.event, time: Date.now(), phase, packets: c.packets, bytes: c.bytes });
  }
}

/**
 * The flow event source of one node of the eBPF backend. start() resolves at once (the pins may
 * not exist yet); stop() delivers what is queued, then closes every fd, watch and timer.
 */
export function createEbpfEventSource(target: NodeTarget, opts: EbpfEventSourceOptions = {}): EventSource {
  return new EbpfEventSource(target, opts);
}
