/**
 * The flow source of the netfilter backends (iptables, nftables) for one node: NFLOG messages
 * (group 1) become VerdictEvents, conntrack DESTROY events become ConnectionEvents, and what the
 * kernel did not deliver is reported through sink.lost():
 *
 * - `nflog-enobufs`: messages dropped because the socket buffer was full (NFULA_SEQ gaps);
 * - `rate-limit`: decisions over the flow-log rate limit, never sent to NFLOG (the backends count
 *   them: iptables SY-FLOWLOG-ALLOW/-DROP rule counters, nft counter `flowlog-lost`), read every
 *   `lostIntervalMs`.
 *
 * The prefix says the verdict and names the rule (`sy A <id>`, `sy D <id>`, Log rules `<id>` on
 * iptables and `sy <id> ` on nftables; long ids hashed or cut), so it is decoded through a reverse
 * map built from the IR the node runs. The endpoint is the node's pod whose address is the
 * destination (ingress rules) or the source (egress rules).
 */
import type { NodeTarget } from '../dataplane/backend.js';
import { runInNetns } from '../dataplane/exec.js';
import { flowLogOverLimit } from '../dataplane/iptables/counters.js';
import { IptablesBackend } from '../dataplane/iptables/index.js';
import { parseSave, tool } from '../dataplane/iptables/kernel.js';
import { flowLogPrefix, nflogPrefix } from '../dataplane/iptables/names.js';
import { parseNamedCounter } from '../dataplane/nftables/counters.js';
import { defaultRuleId, FAMILY, FLOWLOG_COUNTER, logPrefix, TABLE } from '../dataplane/nftables/names.js';
import type { Direction, IR } from '../ir/types.js';
import { startConntrackEvents, type ConntrackEvents } from './conntrack-events.js';
import type { EventSink, EventSource, Verdict, VerdictEvent } from './events.js';
import { openNflog, type NflogPacket, type NflogReader } from './nflog.js';

export type NetfilterBackendName = 'iptables' | 'nftables';

export interface NetfilterSourceOptions {
  target: NodeTarget;
  backend: NetfilterBackendName;
  /** The IR the node currently runs (read on every message whose prefix is new to the map). */
  ir: () => IR | undefined;
  /** How often the kernel's over-limit counter is read; default 1000 ms. */
  lostIntervalMs?: number;
  /** conntrack `update` totals every this many ms; default 0 (only `end` events). */
  connectionUpdateMs?: number;
  /** nfnetlink_log group; default 1. */
  group?: number;
}

export interface PrefixEntry {
  verdict: Verdict;
  rule: string;
  direction: Direction;
}

/** Every NFLOG prefix the backend renders for `ir`, mapped back to verdict, rule and direction. */
export function prefixMap(ir: IR, backend: NetfilterBackendName): Map<string, PrefixEntry> {
  const out = new Map<string, PrefixEntry>();
  const prefix = (verdict: Verdict, rule: string): string =>
    backend === 'nftables'
      ? logPrefix(verdict, rule)
      : verdict === 'log'
        ? nflogPrefix(rule)
        : flowLogPrefix(verdict, rule);
  const add = (verdict: Verdict, rule: string, direction: Direction): void => {
    out.set(prefix(verdict, rule), { verdict, rule, direction });
  };
  for (const rs of ir.ruleSets) {
    for (const r of rs.globalRules) if (r.action !== 'pass') add(r.action, r.id, rs.direction);
    for (const r of rs.kubernetesRules) add('allow', r.id, rs.direction);
    add(rs.kubernetesDefault, defaultRuleId(rs.endpoint, rs.direction), rs.direction);
  }
  return out;
}

/** A prefix the map does not know (the IR moved on): the verdict and id as far as the text tells. */
export function decodePrefix(
  prefix: string,
  backend: NetfilterBackendName,
): Omit<PrefixEntry, 'direction'> & {
  direction?: Direction;
} {
  const text = backend === 'nftables' ? prefix.replace(/ $/, '') : prefix;
  const m = /^sy ([AD]) (.*)$/.exec(text);
  let verdict: Verdict = 'log';
  let rule = text;
  if (m) {
    verdict = m[1] === 'A' ? 'allow' : 'deny';
    rule = m[2] as string;
  } else if (backend === 'nftables' && text.startsWith('sy ')) rule = text.slice(3);
  const d = /\/(ingress|egress)\//.exec(rule)?.[1] as Direction | undefined;
  return { verdict, rule, ...(d ? { direction: d } : {}) };
}

interface Decoder {
  ir: IR | undefined;
  prefixes: Map<string, PrefixEntry>;
  /** Address → endpoint id, this node's pods. */
  local: Map<string, string>;
}

function decoderFor(ir: IR | undefined, node: string, backend: NetfilterBackendName): Decoder {
  const local = new Map<string, string>();
  for (const e of ir?.endpoints ?? []) if (e.node === node) for (const a of e.addresses) local.set(a, e.id);
  return { ir, prefixes: ir ? prefixMap(ir, backend) : new Map(), local };
}

/** What the kernel counted as over the flow-log rate limit so far (not logged). */
export async function readOverLimit(target: NodeTarget, backend: NetfilterBackendName): Promise<number> {
  if (backend === 'nftables') {
    const r = await runInNetns(target.netns, 'nft', [
      '-j',
      'list',
      'counter',
      FAMILY,
      TABLE,
      FLOWLOG_COUNTER,
    ]);
    return r.code === 0 ? parseNamedCounter(r.stdout) : 0;
  }
  const mode = new IptablesBackend().mode;
  let total = 0;
  for (const family of [4, 6] as const) {
    const r = await runInNetns(target.netns, tool(mode, family, 'save'), ['-c', '-t', 'filter']);
    if (r.code === 0) total += flowLogOverLimit(parseSave(r.stdout, family));
  }
  return total;
}

export function createNetfilterEventSource(opts: NetfilterSourceOptions): EventSource {
  const { target, backend } = opts;
  let reader: NflogReader | undefined;
  let conntrack: ConntrackEvents | undefined;
  let timer: NodeJS.Timeout | undefined;
  let polling: Promise<void> | undefined;
  let lastOver = 0;
  let decoder = decoderFor(undefined, target.node, backend);

  const current = (): Decoder => {
    const ir = opts.ir();
    if (ir !== decoder.ir) decoder = decoderFor(ir, target.node, backend);
    return decoder;
  };

  const verdictEvent = (p: NflogPacket): VerdictEvent => {
    const d = current();
    const known = d.prefixes.get(p.prefix);
    const entry = known ?? decodePrefix(p.prefix, backend);
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
  };

  const pollOver = (sink: EventSink): void => {
    if (polling) return;
    polling = readOverLimit(target, backend)
      .then((n) => {
        // A rewritten table starts its counters again from zero.
        const delta = n >= lastOver ? n - lastOver : n;
        lastOver = n;
        if (delta > 0) sink.lost(delta, 'rate-limit');
      })
      .catch(() => undefined)
      .finally(() => (polling = undefined));
  };

  return {
    name: `netfilter-${backend}`,

    async start(sink: EventSink): Promise<void> {
      if (reader) throw new Error('netfilter event source already started');
      lastOver = await readOverLimit(target, backend);
      reader = openNflog({
        netns: target.netns,
        group: opts.group ?? 1,
        onPacket: (p) => sink.event(verdictEvent(p)),
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
      timer = setInterval(() => pollOver(sink), opts.lostIntervalMs ?? 1000);
      timer.unref();
    },

    async stop(): Promise<void> {
      if (timer) clearInterval(timer);
      timer = undefined;
      await polling;
      reader?.close();
      reader = undefined;
      await conntrack?.stop();
      conntrack = undefined;
    },
  };
}
