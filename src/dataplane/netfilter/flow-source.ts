/**
 * The flow source of the netfilter backends (iptables, nftables) for one node: NFLOG messages
 * (group 1) become VerdictEvents, conntrack DESTROY events become ConnectionEvents, and what the
 * kernel did not deliver is reported through sink.lost():
 *
 * - `nflog-enobufs`: messages dropped because the socket buffer was full (NFULA_SEQ gaps);
 * - `rate-limit`: decisions over the flow-log rate limit, never sent to NFLOG (each backend counts
 *   them its own way and reads them back through its codec), read every `pollMs`.
 *
 * The prefix says the verdict and names the rule; each backend encodes it its own way (its
 * flow-log module is both the writer's and this reader's), so it is decoded through a reverse map
 * built from the IR the node runs. The endpoint is the node's pod whose address is the destination
 * (ingress rules) or the source (egress rules).
 */
import { defaultRuleId, directionOfRule } from '../../ir/rule-ids.js';
import type { Direction, IR } from '../../ir/types.js';
import type { FlowSourceOptions, NodeTarget } from '../backend.js';
import type { EventSink, EventSource, Verdict, VerdictEvent } from '../events.js';
import { startConntrackEvents, type ConntrackEvents } from './conntrack-events.js';
import { openNflog, type NflogPacket, type NflogReader } from './nflog.js';

export interface PrefixEntry {
  verdict: Verdict;
  rule: string;
  direction: Direction;
}

export type DecodedPrefix = Omit<PrefixEntry, 'direction'> & { direction?: Direction };

/** How one backend writes NFLOG prefixes and counts what it did not log. */
export interface NflogCodec {
  /** The NFLOG prefix the backend renders for a rule's verdict (Log rules: 'log'). */
  prefix(verdict: Verdict, rule: string): string;
  /** A prefix the IR does not explain (it moved on): the verdict and id as far as the text tells. */
  decode(prefix: string): DecodedPrefix;
  /** What the kernel counted as over the flow-log rate limit so far (not logged). */
  overLimit(target: NodeTarget): Promise<number>;
}

export interface NetfilterSourceOptions {
  name: string;
  target: NodeTarget;
  codec: NflogCodec;
  /** The IR the node currently runs (read on every message whose prefix is new to the map). */
  ir: () => IR | undefined;
  /** How often the kernel's over-limit counter is read; default 1000 ms. */
  lostIntervalMs?: number;
  /** conntrack `update` totals every this many ms; default 0 (only `end` events). */
  connectionUpdateMs?: number;
  /** nfnetlink_log group; default 1. */
  group?: number;
}

/** Every NFLOG prefix `codec` renders for `ir`, mapped back to verdict, rule and direction. */
export function prefixMap(ir: IR, codec: Pick<NflogCodec, 'prefix'>): Map<string, PrefixEntry> {
  const out = new Map<string, PrefixEntry>();
  const add = (verdict: Verdict, rule: string, direction: Direction): void => {
    out.set(codec.prefix(verdict, rule), { verdict, rule, direction });
  };
  for (const rs of ir.ruleSets) {
    for (const r of rs.globalRules) if (r.action !== 'pass') add(r.action, r.id, rs.direction);
    for (const r of rs.kubernetesRules) add('allow', r.id, rs.direction);
    add(rs.kubernetesDefault, defaultRuleId(rs.endpoint, rs.direction), rs.direction);
  }
  return out;
}

/** Decodes `sy A <id>` / `sy D <id>` flow-log heads; anything else is a Log rule's `rest`. */
export function decodeFlowLogHead(text: string, logRule: (text: string) => string): DecodedPrefix {
  const m = /^sy ([AD]) (.*)$/.exec(text);
  const verdict: Verdict = m ? (m[1] === 'A' ? 'allow' : 'deny') : 'log';
  const rule = m ? (m[2] as string) : logRule(text);
  const direction = directionOfRule(rule);
  return { verdict, rule, ...(direction ? { direction } : {}) };
}

interface Decoder {
  ir: IR | undefined;
  prefixes: Map<string, PrefixEntry>;
  /** Address → endpoint id, this node's pods. */
  local: Map<string, string>;
}

function decoderFor(ir: IR | undefined, node: string, codec: NflogCodec): Decoder {
  const local = new Map<string, string>();
  for (const e of ir?.endpoints ?? []) if (e.node === node) for (const a of e.addresses) local.set(a, e.id);
  return { ir, prefixes: ir ? prefixMap(ir, codec) : new Map(), local };
}

function verdictEvent(p: NflogPacket, d: Decoder, codec: NflogCodec): VerdictEvent {
  const entry = d.prefixes.get(p.prefix) ?? codec.decode(p.prefix);
  const direction: Direction =
    entry.direction ?? (d.local.has(p.dst) && !d.local.has(p.src) ? 'ingress' : 'egress');
  const endpoint = d.local.get(direction === 'ingress' ? p.dst : p.src);
  return {
    kind: 'verdict',
    time: p.time,
    verdict: entry.verdict,
    rule: entry.rule,
    ...(endpoint !== undefined ? { endpoint } : {}),
    direction,
    protocol: p.protocol,
    src: p.src,
    dst: p.dst,
    sport: p.sport,
    dport: p.dport,
    bytes: p.bytes,
  };
}

/** Reports the growth of the backend's over-limit counter as lost events, one read at a time. */
function overLimitPoller(target: NodeTarget, codec: NflogCodec) {
  let last = 0;
  let polling: Promise<void> | undefined;
  return {
    async reset(): Promise<void> {
      last = await codec.overLimit(target);
    },
    poll(sink: EventSink): void {
      if (polling) return;
      polling = codec
        .overLimit(target)
        .then((n) => {
          // A rewritten table starts its counters again from zero.
          const delta = n >= last ? n - last : n;
          last = n;
          if (delta > 0) sink.lost(delta, 'rate-limit');
        })
        .catch(() => undefined)
        .finally(() => (polling = undefined));
    },
    settled: async (): Promise<void> => {
      await polling;
    },
  };
}

export function createNetfilterEventSource(opts: NetfilterSourceOptions): EventSource {
  const { target, codec } = opts;
  let reader: NflogReader | undefined;
  let conntrack: ConntrackEvents | undefined;
  let timer: NodeJS.Timeout | undefined;
  let decoder = decoderFor(undefined, target.node, codec);
  const over = overLimitPoller(target, codec);

  const current = (): Decoder => {
    const ir = opts.ir();
    if (ir !== decoder.ir) decoder = decoderFor(ir, target.node, codec);
    return decoder;
  };

  return {
    name: opts.name,

    async start(sink: EventSink): Promise<void> {
      if (reader) throw new Error('netfilter event source already started');
      await over.reset();
      reader = openNflog({
        netns: target.netns,
        group: opts.group ?? 1,
        onPacket: (p) => sink.event(verdictEvent(p, current(), codec)),
        onLost: (n, where) => sink.lost(n, where),
      });
      try {
        conntrack = await startConntrackEvents({
          netns: target.netns,
          onEvent: (e) => sink.event(e),
          ...(opts.connectionUpdateMs ? { updateIntervalMs: opts.connectionUpdateMs } : {}),
        });
      } catch (e) {
        reader.close();
        reader = undefined;
        throw e;
      }
      timer = setInterval(() => over.poll(sink), opts.lostIntervalMs ?? 1000);
      timer.unref();
    },

    async stop(): Promise<void> {
      if (timer) clearInterval(timer);
      timer = undefined;
      await over.settled();
      reader?.close();
      reader = undefined;
      await conntrack?.stop();
      conntrack = undefined;
    },
  };
}

/** A netfilter backend's `flowSource()`: the kit's source, decoding through the backend's codec. */
export function netfilterFlowSource(
  name: string,
  target: NodeTarget,
  codec: NflogCodec,
  opts: FlowSourceOptions,
): EventSource {
  return createNetfilterEventSource({
    name,
    target,
    codec,
    ir: opts.ir,
    ...(opts.pollMs !== undefined ? { lostIntervalMs: opts.pollMs } : {}),
  });
}
