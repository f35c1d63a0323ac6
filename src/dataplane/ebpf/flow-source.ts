/**
 * The eBPF backend's flow source for one node: every interval it drains the flow aggregates the
 * policy programs keep in the node's `flows` map (BPF_MAP_LOOKUP_AND_DELETE_BATCH, so each
 * aggregate is read once and the programs start it afresh), adds up the per-CPU copies and hands
 * one FlowCountsEvent per aggregate to the sink: deltas since the previous drain. Aggregates the
 * full map refused (counted per CPU in `flows_lost`) are reported through sink.lost().
 *
 * JavaScript does work per aggregate and interval, never per packet or connection: at most
 * FLOW_CAPACITY entries a drain, whatever the traffic.
 *
 * Everything comes from the node's pins, so the source needs no agent state and a restarted agent
 * picks up what accumulated meanwhile: slots and hooks are named through the node's description
 * (meta), re-read when its pin is replaced (every apply). An aggregate whose slot no description
 * names yet (a program swapped in before the apply wrote the new description) waits a few drains
 * for it. Before the node's first apply there are no pins: start() resolves at once and the source
 * retries quietly until they appear or stop() is called. When the node is removed and recreated
 * (new pins), it reopens them.
 */
import { statSync } from 'node:fs';
import { PerCpuMap, codecs } from '../../bpf/index.js';
import { FLOW_INTERVAL_MS, type NodeTarget } from '../backend.js';
import { LOST_AGGREGATE_FULL, type EventSink, type EventSource, type FlowCountsEvent } from '../events.js';
import { flowKey, flowValue, FLOW_VERDICT_NAMES, MAP, type FlowKey, type FlowValue } from './layout.js';
import { mapPinPath, readFlowsLost } from './maps.js';
import { readMeta, type NodeMeta } from './meta.js';
import { parseSlotKey, type SlotOwner } from './node.js';
import { metaPin, nodeDir } from './paths.js';

export interface EbpfFlowSourceOptions {
  /** How often the `flows` map is drained and the lost counter read (ms); default FLOW_INTERVAL_MS. */
  pollMs?: number;
  /** How often to look for the node's pins before its first apply (ms); default 500. */
  retryMs?: number;
}

/** `where` of sink.lost() for aggregates whose slot no description ever named (dropped, not guessed). */
export const LOST_UNRESOLVED = 'ebpf unresolved slot';

const DEFAULT_RETRY_MS = 500;
/** How long an aggregate may wait for a description that names its slot. */
const PENDING_WAIT_MS = 3000;
/** Aggregates waiting at most (the rest are reported lost at once). */
const PENDING_MAX = 10_000;

/** One aggregate drained from the kernel, its CPUs added up; times in epoch ms. */
interface Drained {
  key: FlowKey;
  packets: number;
  bytes: number;
  connections: number;
  firstSeen: number;
  lastSeen: number;
}

interface Pending {
  aggregate: Drained;
  since: number;
}

interface Opened {
  flows: PerCpuMap<FlowKey, FlowValue>;
  lost: PerCpuMap<number, bigint>;
  /** Inode of the `flows` pin this was opened from: a different inode means the node was recreated. */
  flowsIno: number;
}

function inode(path: string): number | undefined {
  try {
    return statSync(path).ino;
  } catch {
    return undefined;
  }
}

function aggregateId(k: FlowKey): string {
  return `${k.ifindex}|${k.dir}|${k.proto}|${k.verdict}|${k.saddr}|${k.daddr}|${k.dport}|${k.slot}`;
}

/**
 * The per-CPU copies of one aggregate as one: counts added up, first seen the earliest and last
 * seen the latest of the CPUs that counted anything (a CPU that counted nothing has zeroes).
 */
export function mergeCpus(values: readonly FlowValue[]): FlowValue {
  const out: FlowValue = { packets: 0, bytes: 0, connections: 0, first: 0, last: 0 };
  for (const v of values) {
    if (v.packets === 0 && v.connections === 0) continue;
    out.packets += v.packets;
    out.bytes += v.bytes;
    out.connections += v.connections;
    if (out.first === 0 || (v.first !== 0 && v.first < out.first)) out.first = v.first;
    if (v.last > out.last) out.last = v.last;
  }
  return out;
}

class EbpfFlowSource implements EventSource {
  readonly name: string;
  private readonly dir: string;
  private readonly pollMs: number;
  private readonly retryMs: number;
  private sink: EventSink | undefined;
  private opened: Opened | undefined;
  private running = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;

  /** slot → owner, from the latest description (slots it dropped keep their last meaning). */
  private slots = new Map<number, SlotOwner>();
  /** `ifindex|direction` → endpoint. */
  private hooks = new Map<string, string>();
  private metaIno: number | undefined;
  private pending = new Map<string, Pending>();
  /** ktime (ns) → epoch ms: epoch = ktime / 1e6 + offset. */
  private clockOffsetMs = 0;
  private lostSeen = 0n;

  constructor(
    private readonly target: NodeTarget,
    opts: EbpfFlowSourceOptions,
  ) {
    this.name = `ebpf:${target.scope}/${target.node}`;
    this.dir = nodeDir(target.scope, target.node);
    this.pollMs = opts.pollMs ?? FLOW_INTERVAL_MS;
    this.retryMs = opts.retryMs ?? DEFAULT_RETRY_MS;
  }

  async start(sink: EventSink): Promise<void> {
    if (this.running) throw new Error(`${this.name}: already started`);
    this.running = true;
    this.sink = sink;
    this.tryOpen();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    // What the kernel counted up to now still counts: drain it, report what was lost.
    if (this.opened) {
      try {
        this.drain(true);
      } catch {
        // the node went away meanwhile: nothing more to deliver
      }
    }
    this.running = false;
    clearTimeout(this.retryTimer);
    clearInterval(this.pollTimer);
    this.retryTimer = this.pollTimer = undefined;
    this.close();
    this.pending.clear();
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
    const flowsPath = mapPinPath(this.dir, MAP.flows);
    const lostPath = mapPinPath(this.dir, MAP.flowsLost);
    const flowsIno = inode(flowsPath);
    if (flowsIno === undefined || inode(lostPath) === undefined) return false;
    if (!this.refreshMeta(true)) return false;
    let flows: PerCpuMap<FlowKey, FlowValue> | undefined;
    try {
      flows = PerCpuMap.fromPin(flowsPath, flowKey, flowValue);
      const lost = PerCpuMap.fromPin(lostPath, codecs.u32, codecs.u64);
      this.opened = { flows, lost, flowsIno };
    } catch {
      flows?.close();
      return false;
    }
    this.syncClock();
    // Losses before this source started were another reader's to report (or nobody's).
    this.lostSeen = readFlowsLost(this.opened.lost);
    return true;
  }

  private close(): void {
    const o = this.opened;
    if (!o) return;
    this.opened = undefined;
    o.flows.close();
    o.lost.close();
  }

  /** The pins were replaced (node removed and applied again) or removed: start over. */
  private reopenIfReplaced(): boolean {
    const o = this.opened;
    if (!o) return false;
    if (inode(mapPinPath(this.dir, MAP.flows)) === o.flowsIno) return false;
    // What the old map still holds is the old dataplane's last count.
    try {
      this.drain(false);
    } catch {
      // gone already
    }
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

  // ---- draining ------------------------------------------------------------------------------

  private poll(): void {
    if (!this.running || !this.opened) return;
    try {
      if (this.reopenIfReplaced()) return;
      this.drain(false);
    } catch {
      // The pins went away between the check and the read: the next poll sees it.
    }
  }

  /** Drains the map, emits what can be named, reports losses; `final` gives up on pending slots. */
  private drain(final: boolean): void {
    const o = this.opened;
    if (!o) return;
    this.refreshMeta();
    this.syncClock();
    const now = performance.now();
    for (const [key, values] of o.flows.lookupAndDeleteBatch()) {
      const v = mergeCpus(values);
      if (v.packets === 0 && v.connections === 0) continue;
      this.take(
        {
          key,
          packets: v.packets,
          bytes: v.bytes,
          connections: v.connections,
          firstSeen: this.epochMs(v.first),
          lastSeen: this.epochMs(v.last),
        },
        now,
      );
    }
    this.retryPending(now, final);
    const lost = readFlowsLost(o.lost);
    if (lost > this.lostSeen) this.sink?.lost(Number(lost - this.lostSeen), LOST_AGGREGATE_FULL);
    this.lostSeen = lost;
  }

  private epochMs(ktimeNs: number): number {
    return ktimeNs / 1e6 + this.clockOffsetMs;
  }

  /** Emits an aggregate, or holds it (merged with what already waits) until its slot is named. */
  private take(a: Drained, now: number): void {
    if (this.emit(a)) return;
    const id = aggregateId(a.key);
    const waiting = this.pending.get(id);
    if (waiting) {
      const w = waiting.aggregate;
      w.packets += a.packets;
      w.bytes += a.bytes;
      w.connections += a.connections;
      w.firstSeen = Math.min(w.firstSeen, a.firstSeen);
      w.lastSeen = Math.max(w.lastSeen, a.lastSeen);
    } else if (this.pending.size >= PENDING_MAX) this.sink?.lost(1, LOST_UNRESOLVED);
    else this.pending.set(id, { aggregate: a, since: now });
  }

  private retryPending(now: number, final: boolean): void {
    if (this.pending.size === 0) return;
    let dropped = 0;
    for (const [id, p] of this.pending) {
      if (this.emit(p.aggregate)) this.pending.delete(id);
      else if (final || now - p.since > PENDING_WAIT_MS) {
        this.pending.delete(id);
        dropped++;
      }
    }
    if (dropped > 0) this.sink?.lost(dropped, LOST_UNRESOLVED);
  }

  /** False when the description does not name the aggregate's slot (yet). */
  private emit(a: Drained): boolean {
    const owner = this.slots.get(a.key.slot);
    const verdict = FLOW_VERDICT_NAMES[a.key.verdict];
    if (!owner || !verdict) return false;
    const { direction } = owner;
    const event: FlowCountsEvent = {
      kind: 'counts',
      protocol: a.key.proto,
      src: a.key.saddr,
      dst: a.key.daddr,
      sport: 0,
      dport: a.key.dport,
      verdict,
      rule: owner.rule,
      endpoint: this.hooks.get(`${a.key.ifindex}|${direction}`) ?? owner.endpoint,
      direction,
      packets: a.packets,
      bytes: a.bytes,
      connections: a.connections,
      firstSeen: a.firstSeen,
      lastSeen: a.lastSeen,
    };
    this.sink?.event(event);
    return true;
  }
}

/**
 * The flow source of one node of the eBPF backend. start() resolves at once (the pins may not
 * exist yet); stop() drains what the kernel counted so far, then closes every fd and timer.
 */
export function createEbpfFlowSource(target: NodeTarget, opts: EbpfFlowSourceOptions = {}): EventSource {
  return new EbpfFlowSource(target, opts);
}
