/**
 * Reading the iptables backend's flow sets (rule-text.ts, names.ts) back for the aggregate source
 * (netfilter/aggregates.ts): once per interval, one process in the namespace that saves just the
 * flow sets (`ipset list -n`, then `save <set>` for each in one `ipset restore`, so the node's
 * other sets — a deny-list may hold a million entries — are never dumped) and prints the
 * SY-FLOWFULL rules' counters of both families, chain by chain (`iptables -v -S <chain>`: with
 * 10k services the filter table holds ~20k reject rules, and saving it whole every second took
 * 2–6 s of a core on a loaded machine).
 *
 * Elements are saved as `add <set> <src>,<proto>:<port>,<dst> timeout <left> packets <n> bytes <n>`:
 * the protocol by name (getprotobynumber, so /etc/protocols), ICMP's port as its type and code,
 * other protocols without ports as port 0; the flow's destination port is 0 for all of those.
 *
 * Element counters are running totals for the element's life; nothing refreshes a timeout (an
 * add with `--exist` would also reset the counters), so a busy element is re-created with fresh
 * counters when it times out, possibly between two reads. Each life gets its own id: an
 * element's birth (read time less the time its timeout has run) moves by a whole timeout when it
 * is a new life, and by a second at most when it is the same one.
 */
import { readFileSync } from 'node:fs';
import type { CounterSnapshot, DecisionCounter, TrafficCounter } from '../netfilter/aggregates.js';
import { runInNetns, ToolError } from '../exec.js';
import { tool, type IptablesMode } from './kernel.js';
import { FAMILIES, FLOW_FULL_CHAINS, FLOW_SET_PREFIX, parseFlowSetName, type Family } from './names.js';

/** One element of a flow set, as saved. */
export interface FlowElement {
  set: string;
  /** The element's key as ipset prints it (unique within the set). */
  member: string;
  family: Family;
  /** Decision sets: the deciding rule's tag; traffic sets: undefined. */
  tag?: number;
  src: string;
  dst: string;
  protocol: number;
  dport: number;
  /** Seconds left before it times out. */
  timeoutLeftS: number;
  packets: number;
  bytes: number;
}

export interface FlowSave {
  elements: FlowElement[];
  /** Timeout of each saved set (seconds), from its `create` line. */
  timeouts: Map<string, number>;
}

/** Protocols with ports: their port is the destination port; any other's is not a port. */
const PORT_PROTOCOLS = new Set([6, 17, 33, 132, 136]);

const WELL_KNOWN: Record<string, number> = {
  icmp: 1,
  tcp: 6,
  udp: 17,
  dccp: 33,
  gre: 47,
  esp: 50,
  ah: 51,
  'ipv6-icmp': 58,
  sctp: 132,
  udplite: 136,
};

let protocolNames: Map<string, number> | undefined;

/** Protocol names as ipset prints them (from /etc/protocols, as getprotobynumber reads them). */
function protocolNumber(name: string): number | undefined {
  if (/^\d+$/.test(name)) return Number(name);
  if (!protocolNames) {
    protocolNames = new Map(Object.entries(WELL_KNOWN));
    try {
      for (const line of readFileSync('/etc/protocols', 'utf8').split('\n')) {
        const [proto, number] = line.replace(/#.*/, '').trim().split(/\s+/);
        if (proto && number && /^\d+$/.test(number) && !protocolNames.has(proto))
          protocolNames.set(proto, Number(number));
      }
    } catch {
      // No /etc/protocols: the well-known names are all a pod's traffic uses.
    }
  }
  return protocolNames.get(name);
}

const ADD = /^add (\S+) (\S+) timeout (\d+) packets (\d+) bytes (\d+)/;
const CREATE = /^create (\S+) .* timeout (\d+)/;

/** `ipset save` text of flow sets → their elements; lines of other sets or unknown shape are skipped. */
export function parseFlowSave(text: string): FlowSave {
  const elements: FlowElement[] = [];
  const timeouts = new Map<string, number>();
  for (const line of text.split('\n')) {
    const created = CREATE.exec(line);
    if (created) {
      timeouts.set(created[1] as string, Number(created[2]));
      continue;
    }
    const m = ADD.exec(line);
    if (!m) continue;
    const set = m[1] as string;
    const named = parseFlowSetName(set);
    if (!named) continue;
    const member = m[2] as string;
    const parts = member.split(',');
    if (parts.length !== 3) continue;
    const [src, protoPort, dst] = parts as [string, string, string];
    const colon = protoPort.indexOf(':');
    const protocol = protocolNumber(colon < 0 ? protoPort : protoPort.slice(0, colon));
    if (protocol === undefined) continue;
    const port = colon < 0 ? 0 : Number(protoPort.slice(colon + 1));
    elements.push({
      set,
      member,
      family: named.family,
      ...(named.tag !== undefined ? { tag: named.tag } : {}),
      src,
      dst,
      protocol,
      dport: PORT_PROTOCOLS.has(protocol) && Number.isInteger(port) ? port : 0,
      timeoutLeftS: Number(m[3]),
      packets: Number(m[4]),
      bytes: Number(m[5]),
    });
  }
  return { elements, timeouts };
}

/**
 * Packets counted by the SY-FLOWFULL rules, in `iptables-save -c` text (`[packets:bytes] -A …`) or
 * `iptables -v -S` text (`-A <chain> … -c <packets> <bytes> …`), any number of families.
 */
export function fullFromSave(text: string): number {
  let n = 0;
  for (const line of text.split('\n')) {
    const saved = /^\[(\d+):\d+\] -A (\S+)/.exec(line);
    const listed = /^-A (\S+) (?:.* )?-c (\d+) \d+(?: |$)/.exec(line);
    const chain = saved?.[2] ?? listed?.[1];
    const packets = saved?.[1] ?? listed?.[2];
    if (chain && packets && (FLOW_FULL_CHAINS as readonly string[]).includes(chain)) n += Number(packets);
  }
  return n;
}

/**
 * Tells the lives of elements apart across reads (see the top of this file): `id()` is stable for
 * one life of one element and new for the next. Only elements of the latest read are remembered.
 */
export class ElementLives {
  private lives = new Map<string, { birth: number; life: number }>();

  /** Ids for one read made at `now` (ms), in the order of `elements`. */
  ids(elements: readonly FlowElement[], timeouts: ReadonlyMap<string, number>, now: number): string[] {
    const next = new Map<string, { birth: number; life: number }>();
    const ids = elements.map((e) => {
      const key = `${e.set} ${e.member}`;
      const timeoutS = timeouts.get(e.set);
      const birth = now - ((timeoutS ?? 0) - e.timeoutLeftS) * 1000;
      const known = this.lives.get(key);
      // The same life's birth moves by the timeout's one-second resolution; a new life's by the
      // whole timeout (an element lives no longer than that). Without its set's timeout (not
      // saved), an element is taken to live on.
      const reborn =
        known !== undefined && timeoutS !== undefined && Math.abs(birth - known.birth) * 2 > timeoutS * 1000;
      const life = !known ? 0 : reborn ? known.life + 1 : known.life;
      next.set(key, known && life === known.life ? known : { birth, life });
      return life === 0 ? key : `${key} #${life}`;
    });
    this.lives = next;
    return ids;
  }
}

/** The snapshot the aggregate source takes, from one read's elements and their ids. */
export function snapshotOf(
  elements: readonly FlowElement[],
  ids: readonly string[],
  full: number,
): CounterSnapshot {
  const decisions: DecisionCounter[] = [];
  const traffic: TrafficCounter[] = [];
  elements.forEach((e, i) => {
    const counter = {
      id: ids[i] as string,
      protocol: e.protocol,
      src: e.src,
      dst: e.dst,
      dport: e.dport,
      packets: e.packets,
      bytes: e.bytes,
    };
    if (e.tag !== undefined) decisions.push({ ...counter, tag: e.tag });
    else traffic.push(counter);
  });
  return { decisions, traffic, full };
}

const SEPARATOR = '@@switchyard-flows@@';

/** The shell script of one read: the flow sets, then each family's SY-FLOWFULL counters. */
export function readScript(mode: IptablesMode): string {
  const sets = `ipset list -n | sed -n 's/^\\(${FLOW_SET_PREFIX}[46]-[0-9a-z]*\\)$/save \\1/p' | ipset restore`;
  // A chain that is not there (flows off) lists nothing: that is not a failed read.
  const full = FAMILIES.map(
    (f) =>
      `{ ${FLOW_FULL_CHAINS.map((c) => `${tool(mode, f, 'list')} -w 5 -t filter -v -S ${c} 2>/dev/null || true`).join('; ')}; }`,
  );
  return [sets, ...full].join(` && echo ${SEPARATOR} && `);
}

/**
 * `read()` for the node `netns`: every flow set element and the not-aggregated count, in one
 * process. A failed read (a set destroyed between list and save, a table being replaced) throws;
 * the aggregate source tries again at the next interval.
 */
export function iptablesFlowReader(
  netns: string,
  mode: () => IptablesMode,
  now: () => number = Date.now,
): () => Promise<CounterSnapshot> {
  const lives = new ElementLives();
  return async () => {
    const script = readScript(mode());
    const r = await runInNetns(netns, 'sh', ['-c', script]);
    if (r.code !== 0) throw new ToolError(`reading flow sets in ${netns}`, r);
    const [sets = '', ...saves] = r.stdout.split(`${SEPARATOR}\n`);
    const { elements, timeouts } = parseFlowSave(sets);
    const ids = lives.ids(elements, timeouts, now());
    return snapshotOf(elements, ids, fullFromSave(saves.join('\n')));
  };
}
