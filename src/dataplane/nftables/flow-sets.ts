/**
 * The layout of the nftables backend's flow aggregates, shared by the rules that fill them
 * (decision.ts) and the reader that drains them (flow-counters.ts): set names, key types, the key
 * expressions the rules update with, and how a key read back from the kernel decodes.
 *
 * Four dynamic sets with a counter on every element, one per kind and address family:
 *
 *   flows4 / flows6      source . destination . protocol . destination port . rule tag
 *                        updated by the rule that decides (or a Log rule): one element per
 *                        aggregate, its counter the packets that rule decided
 *   traffic4 / traffic6  source . destination . protocol . destination port
 *                        updated by the established path in the original direction: the later
 *                        packets of allowed connections, which the reader joins to their allows
 *
 * Protocols with ports (TCP, UDP, SCTP) key on `th dport`; any other protocol on port 0 (`th
 * dport` would load bytes 2–3 of whatever follows the IP header: ICMP's checksum, one element per
 * checksum). The tag is `flowRuleTag(verdict, rule)` as a 32-bit `mark` constant in the key.
 */
import type { NftSet } from './objects.js';

export type FlowFamily = 'v4' | 'v6';
export type FlowKind = 'flows' | 'traffic';

export const FLOW_FAMILIES: readonly FlowFamily[] = ['v4', 'v6'];

/**
 * Elements per set. An element is one (source, destination, protocol, destination port, rule),
 * not one connection: 10k new connections/s between a few hundred clients and a node's services
 * are a few hundred elements. The room is for many distinct peers: 65536 holds e.g. 1000 peers ×
 * 64 (port, rule) pairs, or ~1000 new distinct tuples/s for the whole element timeout. At
 * ~200 bytes plus a per-CPU counter per element, a full set is ~13 MB on a 2-CPU node. A set that
 * is full only costs records (counted in FLOWS_FULL_COUNTER), never a verdict.
 */
export const FLOW_SET_SIZE = 65536;

/**
 * Seconds an element lives after its last packet. Well above the drain interval (1 s), so an
 * element is read many times before it goes; a connection idle for longer loses its link to the
 * allow that admitted it (its later traffic starts an element the reader cannot attribute).
 */
export const FLOW_ELEMENT_TIMEOUT_S = 60;

/** Named counter of updates a full set refused (the packet still got its verdict). */
export const FLOWS_FULL_COUNTER = 'flows-full';

export function flowSetName(kind: FlowKind, family: FlowFamily): string {
  return `${kind}${family === 'v4' ? '4' : '6'}`;
}

const ADDR: Record<FlowFamily, { type: string; match: string; bytes: number }> = {
  v4: { type: 'ipv4_addr', match: 'ip', bytes: 4 },
  v6: { type: 'ipv6_addr', match: 'ip6', bytes: 16 },
};

/**
 * The protocols keyed on their destination port (`th dport`), as one named set rather than an
 * anonymous `{ tcp, udp, sctp }` in every flow chain rule: each anonymous set is a set of its own
 * in the table (two per flow chain, thousands at 10k endpoints), and nf_tables walks a table's
 * sets by name for every set a transaction creates or looks up, so every one of them slowed each
 * change that added a flow chain (docs/nftables.md "Updates").
 */
export const PORTED_SET = 'flow-ported';
export const PORTED = `meta l4proto @${PORTED_SET}`;
export const NOT_PORTED = `meta l4proto != @${PORTED_SET}`;

/** The four sets and the counter, as table objects. */
export function flowSetObjects(size = FLOW_SET_SIZE): NftSet[] {
  const sets: NftSet[] = [];
  for (const kind of ['flows', 'traffic'] as const) {
    for (const family of FLOW_FAMILIES) {
      const a = ADDR[family].type;
      const key = `${a} . ${a} . inet_proto . inet_service${kind === 'flows' ? ' . mark' : ''}`;
      sets.push({
        kind: 'set',
        name: flowSetName(kind, family),
        spec: `{ type ${key}; flags dynamic,timeout; timeout ${FLOW_ELEMENT_TIMEOUT_S}s; size ${size}; counter; }`,
        elements: [],
        note:
          kind === 'flows'
            ? `flows: packets each rule decided, per source . destination . protocol . port . rule tag (${family})`
            : `flows: established packets of allowed connections, original direction (${family})`,
      });
    }
  }
  sets.push({
    kind: 'set',
    name: PORTED_SET,
    spec: '{ type inet_proto; }',
    elements: ['tcp', 'udp', 'sctp'],
    note: 'flows: the protocols keyed on their destination port',
  });
  sets.push({
    kind: 'counter',
    name: FLOWS_FULL_COUNTER,
    spec: '',
    elements: [],
    note: 'flows: updates a full flow set refused (the verdict was applied all the same)',
  });
  return sets;
}

/** The rule tag as nft writes a `mark` constant. */
export function tagText(tag: number): string {
  return `0x${tag.toString(16).padStart(8, '0')}`;
}

/**
 * `update @set { key }` for one family and port kind: the packet's tuple, and the tag for
 * decisions. Each needs its condition (`meta nfproto …`, PORTED / NOT_PORTED) in front.
 */
export function updateStatement(kind: FlowKind, family: FlowFamily, ported: boolean, tag?: number): string {
  const ip = ADDR[family].match;
  const parts = [`${ip} saddr`, `${ip} daddr`, 'meta l4proto', ported ? 'th dport' : '0'];
  if (kind === 'flows') {
    if (tag === undefined) throw new Error('a decision element needs its rule tag');
    parts.push(tagText(tag));
  }
  return `update @${flowSetName(kind, family)} { ${parts.join(' . ')} }`;
}

/** The conditions, one per update rule, that together cover every packet exactly once. */
export function updateVariants(): { family: FlowFamily; ported: boolean; condition: string }[] {
  return FLOW_FAMILIES.flatMap((family) => {
    const nfproto = `meta nfproto ${family === 'v4' ? 'ipv4' : 'ipv6'}`;
    return [
      { family, ported: true, condition: `${nfproto} ${PORTED}` },
      { family, ported: false, condition: `${nfproto} ${NOT_PORTED}` },
    ];
  });
}

/** A key read back from the kernel: the concatenation, each field padded to 4 bytes. */
export interface DecodedKey {
  src: string;
  dst: string;
  protocol: number;
  dport: number;
  /** Decision elements only. */
  tag?: number;
}

/** Texts of addresses seen lately: a node's elements name the same few pods over and over. */
const ipv4Texts = new Map<number, string>();
const ADDRESS_CACHE = 4096;

function ipv4(b: Buffer, off: number): string {
  const value = b.readUInt32BE(off);
  let text = ipv4Texts.get(value);
  if (text === undefined) {
    if (ipv4Texts.size >= ADDRESS_CACHE) ipv4Texts.clear();
    text = `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
    ipv4Texts.set(value, text);
  }
  return text;
}

/** RFC 5952 text (what inet_ntop, nft and the IR print): the longest run of ≥ 2 zero groups as `::`. */
function ipv6(b: Buffer, off: number): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(b.readUInt16BE(off + 2 * i));
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** Bytes of a key of `kind` and `family` as the kernel stores it. */
export function keyLength(kind: FlowKind, family: FlowFamily): number {
  return 2 * ADDR[family].bytes + 4 + 4 + (kind === 'flows' ? 4 : 0);
}

/**
 * Decodes a key as the kernel dumps it (`buf[off, off + len)`): addresses in network order, the
 * protocol in the first byte of its 4, the port big-endian in the first 2 of its 4, the tag (a
 * `mark`, host order: little-endian hosts only, like all of the project's native code) in 4.
 * Undefined when the length does not fit the set's type.
 */
export function decodeKey(
  kind: FlowKind,
  family: FlowFamily,
  buf: Buffer,
  off = 0,
  len = buf.length - off,
): DecodedKey | undefined {
  if (len !== keyLength(kind, family)) return undefined;
  const n = ADDR[family].bytes;
  const text = family === 'v4' ? ipv4 : ipv6;
  const decoded: DecodedKey = {
    src: text(buf, off),
    dst: text(buf, off + n),
    protocol: buf[off + 2 * n] as number,
    dport: buf.readUInt16BE(off + 2 * n + 4),
  };
  if (kind === 'flows') decoded.tag = buf.readUInt32LE(off + 2 * n + 8);
  return decoded;
}
