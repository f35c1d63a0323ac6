/**
 * Flows aggregated in the kernel by the netfilter backends, drained once per interval.
 *
 * Each backend keeps two kinds of counted elements in dynamic sets (nft sets with `counter`,
 * ipsets with `counters`), which it reads back through its own `read()`:
 *
 * - decision elements, added by the rule that decides (allow, deny, log): one per (rule tag,
 *   source, destination, protocol, destination port); its counter holds the packets that rule
 *   decided, which are the new connections for allow and log (only a connection's first packet
 *   reaches the policy chains) and the dropped packets for deny;
 * - traffic elements, added by the established path in the original direction: one per (source,
 *   destination, protocol, destination port); its counter holds every later packet of the
 *   allowed connections between them.
 *
 * Kernel counters are running totals for as long as an element lives (elements time out when
 * idle), so this module keeps the last total of each element it saw and emits the growth as
 * FlowCountsEvent deltas. Allowed aggregates get the traffic of their 4-tuple added; a tuple's
 * traffic keeps going to the aggregates that last allowed it, for as long as its element lives.
 * Times have the interval's resolution: a delta is stamped from the previous read to this one.
 */
import { createHash } from 'node:crypto';
import { defaultRuleId, directionOfRule } from '../../ir/rule-ids.js';
import type { Direction, IR } from '../../ir/types.js';
import { FLOW_INTERVAL_MS, type NodeTarget } from '../backend.js';
import {
  LOST_AGGREGATE_FULL,
  type EventSink,
  type EventSource,
  type FlowCountsEvent,
  type PacketTuple,
  type Verdict,
} from '../events.js';

/** Tags computed so far: every render of a node asks again for each of its rules (a hash each). */
const knownTags = new Map<string, number>();
/** A bound on the tags kept (rules of the node's IR; beyond it the cache starts over). */
const KNOWN_TAGS = 1 << 18;

/** What identifies a decision element's rule in the kernel: 32 bits derived from verdict and rule id. */
export function flowRuleTag(verdict: Verdict, rule: string): number {
  const text = `${verdict} ${rule}`;
  let tag = knownTags.get(text);
  if (tag === undefined) {
    if (knownTags.size >= KNOWN_TAGS) knownTags.clear();
    tag = createHash('sha256').update(text).digest().readUInt32BE(0);
    knownTags.set(text, tag);
  }
  return tag;
}

export interface TaggedRule {
  verdict: Verdict;
  rule: string;
  direction: Direction;
}

/** Every rule of `ir` that decides (or logs) with its tag: how a reader names what a tag meant. */
export function ruleTags(ir: IR): Map<number, TaggedRule> {
  const out = new Map<number, TaggedRule>();
  const add = (verdict: Verdict, rule: string, direction: Direction): void => {
    out.set(flowRuleTag(verdict, rule), { verdict, rule, direction });
  };
  for (const rs of ir.ruleSets) {
    for (const r of rs.globalRules) if (r.action !== 'pass') add(r.action, r.id, rs.direction);
    for (const r of rs.kubernetesRules) add('allow', r.id, rs.direction);
    add(rs.kubernetesDefault, defaultRuleId(rs.endpoint, rs.direction), rs.direction);
  }
  return out;
}

type Tuple = Omit<PacketTuple, 'sport'>;

/** A decision element as the kernel holds it: running totals since the element was added. */
export interface DecisionCounter extends Tuple {
  /** Unique per kernel element (set and key), stable while the element lives. */
  id: string;
  tag: number;
  packets: number;
  bytes: number;
}

/** A traffic element: running totals of the established packets of one 4-tuple. */
export interface TrafficCounter extends Tuple {
  id: string;
  packets: number;
  bytes: number;
}

export interface CounterSnapshot {
  decisions: readonly DecisionCounter[];
  traffic: readonly TrafficCounter[];
  /** Running total of elements the kernel could not add (a full set). */
  full: number;
}

export interface AggregateSourceOptions {
  name: string;
  target: NodeTarget;
  /** Reads every decision and traffic element of the node (the backend's sets). */
  read: () => Promise<CounterSnapshot>;
  /** The IR the node runs: names tags and local endpoints. */
  ir: () => IR | undefined;
  intervalMs?: number;
  now?: () => number;
}

function tupleKey(t: Tuple): string {
  return `${t.protocol}|${t.src}|${t.dst}|${t.dport}`;
}

interface Naming {
  ir: IR | undefined;
  tags: Map<number, TaggedRule>;
  /** Address → endpoint id, this node's pods. */
  local: Map<string, string>;
}

function namingFor(ir: IR | undefined, node: string): Naming {
  const local = new Map<string, string>();
  for (const e of ir?.endpoints ?? []) if (e.node === node) for (const a of e.addresses) local.set(a, e.id);
  return { ir, tags: ir ? ruleTags(ir) : new Map(), local };
}

type Aggregate = Omit<FlowCountsEvent, 'kind' | 'firstSeen' | 'lastSeen'>;

/**
 * The delta logic, without timers or processes: feed it snapshots, get the events. Exposed for
 * unit tests; `createAggregateSource` drives it.
 */
export class AggregateDrain {
  private decisions = new Map<string, { packets: number; bytes: number }>();
  private traffic = new Map<string, { packets: number; bytes: number }>();
  /** Tuple → the allowed aggregates that last decided it (their traffic goes there). */
  private allowedBy = new Map<string, Aggregate[]>();
  private full: number | undefined;
  private naming: Naming;
  private lastRead: number | undefined;

  constructor(
    private readonly node: string,
    private readonly ir: () => IR | undefined,
    private readonly sink: EventSink,
  ) {
    this.naming = namingFor(undefined, node);
  }

  private current(): Naming {
    const ir = this.ir();
    if (ir !== this.naming.ir) this.naming = namingFor(ir, this.node);
    return this.naming;
  }

  /**
   * Turns one snapshot into events; `now` is when it was read. With `emit` false it only takes
   * the totals as the baseline (what the kernel counted before this reader started).
   */
  take(snapshot: CounterSnapshot, now: number, emit = true): void {
    const naming = this.current();
    const firstSeen = this.lastRead ?? now;
    this.lastRead = now;
    const out = new Map<string, Aggregate>();
    const decided = new Map<string, Aggregate[]>();

    const seenDecisions = new Map<string, { packets: number; bytes: number }>();
    for (const d of snapshot.decisions) {
      seenDecisions.set(d.id, { packets: d.packets, bytes: d.bytes });
      const growth = grown(this.decisions.get(d.id), d);
      const named = naming.tags.get(d.tag);
      if (!named) continue;
      const template = aggregateOf(naming, d, named);
      if (named.verdict === 'allow') remember(decided, tupleKey(d), template);
      if (growth.packets === 0) continue;
      const aggregate = into(out, template);
      aggregate.packets += growth.packets;
      aggregate.bytes += growth.bytes;
      aggregate.connections += growth.packets;
    }
    this.decisions = seenDecisions;
    for (const [tuple, templates] of decided) this.allowedBy.set(tuple, templates);

    const seenTraffic = new Map<string, { packets: number; bytes: number }>();
    const liveTuples = new Set<string>();
    for (const t of snapshot.traffic) {
      seenTraffic.set(t.id, { packets: t.packets, bytes: t.bytes });
      const tuple = tupleKey(t);
      liveTuples.add(tuple);
      const growth = grown(this.traffic.get(t.id), t);
      if (growth.packets === 0) continue;
      for (const template of this.allowedBy.get(tuple) ?? []) {
        const aggregate = into(out, template);
        aggregate.packets += growth.packets;
        aggregate.bytes += growth.bytes;
      }
    }
    this.traffic = seenTraffic;
    // A tuple whose traffic element and decisions are all gone has nothing left to count.
    for (const tuple of this.allowedBy.keys())
      if (!liveTuples.has(tuple) && !decided.has(tuple)) this.allowedBy.delete(tuple);

    const lost = this.full === undefined ? 0 : Math.max(0, snapshot.full - this.full);
    this.full = snapshot.full;
    if (!emit) return;
    if (lost > 0) this.sink.lost(lost, LOST_AGGREGATE_FULL);
    for (const a of out.values()) this.sink.event({ kind: 'counts', ...a, firstSeen, lastSeen: now });
  }
}

/** The aggregate a decision element belongs to, with zero counts (a template, never mutated). */
function aggregateOf(naming: Naming, t: Tuple, named: TaggedRule): Aggregate {
  const endpoint = naming.local.get(named.direction === 'ingress' ? t.dst : t.src);
  return {
    protocol: t.protocol,
    src: t.src,
    sport: 0,
    dst: t.dst,
    dport: t.dport,
    verdict: named.verdict,
    rule: named.rule,
    ...(endpoint !== undefined ? { endpoint } : {}),
    direction: directionOfRule(named.rule) ?? named.direction,
    packets: 0,
    bytes: 0,
    connections: 0,
  };
}

/** This interval's copy of `template` in `out`. */
function into(out: Map<string, Aggregate>, template: Aggregate): Aggregate {
  const key = aggregateKey(template);
  let a = out.get(key);
  if (!a) out.set(key, (a = { ...template }));
  return a;
}

function aggregateKey(a: Aggregate): string {
  return `${a.verdict}|${a.rule}|${a.endpoint ?? ''}|${a.direction}|${tupleKey(a)}`;
}

/**
 * Adds `a` to the aggregates that allowed `tuple`, once per aggregate: several elements can
 * decide one aggregate (ICMP's port is its type and code on iptables, 0 in the aggregate), and
 * the tuple's traffic must reach it only once.
 */
function remember(byTuple: Map<string, Aggregate[]>, tuple: string, a: Aggregate): void {
  const list = byTuple.get(tuple);
  if (!list) byTuple.set(tuple, [a]);
  else if (!list.some((x) => aggregateKey(x) === aggregateKey(a))) list.push(a);
}

/** Growth of a running total since the last read; a smaller total is a new element. */
function grown(
  previous: { packets: number; bytes: number } | undefined,
  current: { packets: number; bytes: number },
): { packets: number; bytes: number } {
  if (!previous || current.packets < previous.packets)
    return { packets: current.packets, bytes: current.bytes };
  return { packets: current.packets - previous.packets, bytes: current.bytes - previous.bytes };
}

/** An EventSource that reads the backend's counters every interval and emits their growth. */
export function createAggregateSource(opts: AggregateSourceOptions): EventSource {
  const now = opts.now ?? Date.now;
  let timer: NodeJS.Timeout | undefined;
  let reading: Promise<void> | undefined;
  let drain: AggregateDrain | undefined;

  // A failed read (the node's table is being replaced) is retried at the next interval: the
  // counters are running totals, so nothing is lost unless an element expires in between.
  const readOnce = (d: AggregateDrain, emit: boolean): Promise<void> => {
    reading ??= opts
      .read()
      .then((snapshot) => d.take(snapshot, now(), emit))
      .catch(() => undefined)
      .finally(() => (reading = undefined));
    return reading;
  };

  return {
    name: opts.name,
    async start(sink: EventSink): Promise<void> {
      if (drain) throw new Error(`${opts.name} already started`);
      const d = new AggregateDrain(opts.target.node, opts.ir, sink);
      drain = d;
      // What the kernel counted before this source started (an agent restart adopting the sets)
      // was reported by the previous agent: it is the baseline, not news.
      await readOnce(d, false);
      timer = setInterval(() => void readOnce(d, true), opts.intervalMs ?? FLOW_INTERVAL_MS);
      timer.unref();
    },
    async stop(): Promise<void> {
      if (timer) clearInterval(timer);
      timer = undefined;
      await reading;
      // One last read, so what was counted since the previous interval is not lost.
      if (drain) await readOnce(drain, true);
      drain = undefined;
    },
  };
}
