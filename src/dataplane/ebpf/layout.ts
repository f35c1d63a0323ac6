/**
 * Byte layouts shared by the generated programs and the user-space code that reads and writes the
 * same maps: one definition, so a program and its loader can never disagree about an offset.
 */
import { codecs, type Codec } from '../../bpf/index.js';
import { formatAddress, parseCidr } from '../../util/ip.js';
import { addr16 } from './addr16.js';

/** struct __sk_buff fields the policy programs read (include/uapi/linux/bpf.h). */
export const SKB = {
  len: 0,
  ingressIfindex: 36,
  ifindex: 40,
  data: 76,
  dataEnd: 80,
  /** sizeof(struct __sk_buff) up to and including ifindex: enough context for PROG_TEST_RUN. */
  testContextSize: 48,
} as const;

/** struct xdp_md. */
export const XDP_MD = { data: 0, dataEnd: 4 } as const;

export const ETH_HLEN = 14;
export { IPPROTO, PROTOCOL_NAMES, PROTOCOL_NUMBERS } from '../../util/protocols.js';

/** EtherTypes as a little-endian 16-bit load of the network-order field sees them. */
export const ETHERTYPE_AS_LOADED = { ipv4: 0x0008, arp: 0x0608, ipv6: 0xdd86 } as const;

export const TCP_FLAG = { FIN: 0x01, SYN: 0x02, RST: 0x04, ACK: 0x10 } as const;

/** tcx verdicts: NEXT lets later programs of the chain see an allowed packet. */
export const TCX = { NEXT: -1, SHOT: 2 } as const;

/** Policy direction of a program, as stored in conntrack keys. */
export const DIR = { ingress: 0, egress: 1 } as const;

/**
 * Conntrack key: the hook (host veth ifindex + policy direction) and the 5-tuple as the packet
 * that created the entry carried it. Keying by hook keeps the two endpoints of a same-node
 * connection apart: A's egress approval must not stand in for B's ingress policy. Addresses are
 * 16 bytes (addr16.ts: IPv4 mapped), so one map tracks both families; ICMPv6 is stored as
 * protocol ICMP (1), its types translated to their ICMP equivalents (parse.ts).
 */
export const ctKey = codecs.struct({
  ifindex: codecs.u32,
  dir: codecs.u8,
  proto: codecs.u8,
  pad: codecs.u16,
  saddr: addr16,
  daddr: addr16,
  sport: codecs.be16,
  dport: codecs.be16,
});
export type CtKey = codecs.CodecValue<typeof ctKey>;

/** Conntrack value; times are bpf_ktime_get_ns (CLOCK_MONOTONIC), as process.hrtime.bigint(). */
export const ctValue = codecs.struct({
  created: codecs.u64,
  lastSeen: codecs.u64,
  expires: codecs.u64,
  packets: codecs.u64,
  bytes: codecs.u64,
  state: codecs.u8,
  flags: codecs.u8,
  pad: codecs.u16,
  /**
   * Counter slot of the rule that allowed the connection (0: none, e.g. the node's own traffic):
   * later packets of the original direction add to that rule's flow aggregate (flowKey).
   */
  slot: codecs.u32,
});
export type CtValue = codecs.CodecValue<typeof ctValue>;

export const CT_STATE = {
  synSent: 1,
  established: 2,
  closing: 3,
  closed: 4,
  udp: 5,
  icmp: 6,
} as const;
export type CtStateName = keyof typeof CT_STATE;
export const CT_STATE_NAMES: Record<number, CtStateName> = Object.fromEntries(
  Object.entries(CT_STATE).map(([name, value]) => [value, name as CtStateName]),
);

/** Seconds an entry lives after its last packet, per state. FIN/RST make it short-lived. */
export const CT_TIMEOUT_S: Record<CtStateName, number> = {
  synSent: 60,
  established: 7200,
  closing: 30,
  closed: 10,
  udp: 60,
  icmp: 30,
};

export const NS_PER_S = 1_000_000_000;

/** Set when a packet of the reverse direction has been seen. */
export const CT_FLAG_REPLIED = 0x01;

/**
 * LPM trie key of the per-node IP-set trie: {prefixlen, set index, address (addr16)}. The set
 * index is always matched in full (prefixlen = 32 + the CIDR's 128-bit length: 96 + n for IPv4),
 * so one trie holds every set of both families and a membership change is a map update.
 */
export const setLpmKey = codecs.struct({
  prefixlen: codecs.u32,
  set: codecs.u32,
  addr: addr16,
});
/** Prefix length of a set lookup: the set index and the whole address. */
export const SET_LOOKUP_PREFIXLEN = 32 + 128;
export type SetLpmKey = codecs.CodecValue<typeof setLpmKey>;

const U64_MASK = 0xffff_ffff_ffff_ffffn;

/**
 * struct bpf_lpm_trie_key of the IPv6 prefilter trie (pf_trie6): a host-order u32 prefix length,
 * then the 16-byte address in network order, as the XDP program copies it from the IPv6 header.
 * Values are IPv6 CIDR strings; no IPv4 mapping here (the IPv4 lists have their own trie).
 */
export const ipv6LpmKey: Codec<string> = {
  size: 20,
  align: 4,
  encode: (v, b, o) => {
    const c = parseCidr(v);
    if (c?.family !== 6) throw new RangeError(`'${v}' is not an IPv6 CIDR`);
    b.writeUInt32LE(c.prefix, o);
    b.writeBigUInt64BE(c.base >> 64n, o + 4);
    b.writeBigUInt64BE(c.base & U64_MASK, o + 12);
  },
  decode: (b, o) => {
    const value = (b.readBigUInt64BE(o + 4) << 64n) | b.readBigUInt64BE(o + 12);
    return `${formatAddress({ family: 6, value })}/${b.readUInt32LE(o)}`;
  },
};

/** IP-port set membership: exact (set, address, destination port in host order). */
export const portSetKey = codecs.struct({
  set: codecs.u32,
  addr: addr16,
  port: codecs.u16,
  pad: codecs.u16,
});
export type PortSetKey = codecs.CodecValue<typeof portSetKey>;

export const counterValue = codecs.struct({ packets: codecs.u64n, bytes: codecs.u64n });
export type CounterValue = codecs.CodecValue<typeof counterValue>;

/** The verdict of a flow aggregate: a Log rule matched, a connection was allowed, a packet denied. */
export const FLOW_VERDICT = { log: 0, allow: 1, deny: 2 } as const;
export type FlowVerdictName = keyof typeof FLOW_VERDICT;
export const FLOW_VERDICT_NAMES: Record<number, FlowVerdictName> = { 0: 'log', 1: 'allow', 2: 'deny' };

/**
 * Key of the node's `flows` map: one aggregate per hook (`ifindex` of the host veth, policy `dir`
 * 0 ingress / 1 egress), protocol, verdict, addresses as the packet carried them, destination
 * port (network order; 0 for protocols without ports) and the counter slot of the deciding rule
 * (which names the endpoint, direction and rule through the node's slot table). No source port:
 * every connection between two addresses to one port that one rule decided adds to one entry.
 * Addresses (addr16: IPv4 mapped, IPv6 as is) are zero where parsing had not reached them
 * (malformed, fragments, extension headers the parser does not walk).
 */
export const flowKey = codecs.struct({
  ifindex: codecs.u32,
  dir: codecs.u8,
  proto: codecs.u8,
  verdict: codecs.u8,
  pad: codecs.u8,
  saddr: addr16,
  daddr: addr16,
  dport: codecs.be16,
  pad2: codecs.u16,
  slot: codecs.u32,
});
export type FlowKey = codecs.CodecValue<typeof flowKey>;

/**
 * Value of the `flows` map, one per CPU (plain adds, no atomics): packets and bytes counted, new
 * connections, and the bpf_ktime_get_ns of the first and latest packet this CPU counted (0 while
 * this CPU counted none).
 */
export const flowValue = codecs.struct({
  packets: codecs.u64n,
  bytes: codecs.u64n,
  connections: codecs.u64n,
  first: codecs.u64n,
  last: codecs.u64n,
});
export type FlowValue = codecs.CodecValue<typeof flowValue>;

/**
 * What a decision adds to its aggregate's `connections`: nothing (the established path, fail-closed
 * drops), one (the allow tail, which just created a conntrack entry), or one when the packet would
 * open a connection if allowed (deny and Log: a TCP SYN without ACK, any packet of another protocol).
 */
export const FLOW_CONNECTIONS = { none: 0, one: 1, ifOpening: 2 } as const;

/** The node's run-time switches: one array element the programs read directly (no helper call). */
export const nodeConfig = codecs.struct({ flags: codecs.u32, pad: codecs.u32 });
export type NodeConfig = codecs.CodecValue<typeof nodeConfig>;
export const NODE_CONFIG_FLAG = {
  /**
   * Allow and deny aggregates in the `flows` map (the decision and, for allowed connections, their
   * later packets). Log rules' aggregates do not depend on it: they are policy.
   */
  flowEvents: 0x1,
} as const;

/**
 * Decision tables (table mode). One LPM trie per endpoint and direction holds both lookups, told
 * apart by the first byte of the key, so that one update of the hook's slot in the node's
 * `policy` map swaps the whole table at once:
 *
 *   peer key  {prefixlen, kind 0, 0, 0, remote address (addr16)}          → {class}
 *   port key  {prefixlen, kind 1, protocol, class, dport (BE), 0, 0…}     → {slot, pass slot, verdict, logs}
 *
 * Both keys are 24 bytes; the first 32 bits after prefixlen are always matched in full, so a
 * peer key never matches a port key. Prefix lengths: 32 + the CIDR's 128-bit length (peer: 96 +
 * n for IPv4, so both families share the trie), 32 + the port prefix length 0–16 (port: a port
 * range is stored as the prefixes that cover it).
 */
export const TABLE_KEY_KIND = { peer: 0, port: 1 } as const;
/** Bits of a table key always matched in full: kind, protocol and class (or padding). */
export const TABLE_KEY_HEADER_BITS = 32;
/** The protocol byte of port keys for any IP protocol but TCP, UDP, SCTP and ICMP. */
export const TABLE_OTHER_PROTOCOL = 0;
/** Log rules a table entry can carry; more on one packet keep the endpoint on the rule walk. */
export const TABLE_LOG_SLOTS = 8;

export const tablePeerKey = codecs.struct({
  prefixlen: codecs.u32,
  kind: codecs.u8,
  pad: codecs.u8,
  pad2: codecs.u16,
  addr: addr16,
});
export type TablePeerKey = codecs.CodecValue<typeof tablePeerKey>;

export const tablePortKey = codecs.struct({
  prefixlen: codecs.u32,
  kind: codecs.u8,
  proto: codecs.u8,
  class: codecs.u16,
  port: codecs.be16,
  pad: codecs.u16,
  /** Unused: a trie's keys are all as long as its longest (the peer key). */
  tail: codecs.bytes(12),
});
export type TablePortKey = codecs.CodecValue<typeof tablePortKey>;

/**
 * A table trie's value. Peer keys use `class` only; port keys the rest: the deciding rule's
 * counter slot, the slot of the Pass rule that led to the Kubernetes tier (0: none; counted as
 * the walk counts it), the verdict (FLOW_VERDICT.allow or .deny) and the Log rules' slots.
 */
export const tableValue = codecs.struct({
  slot: codecs.u32,
  passSlot: codecs.u32,
  verdict: codecs.u8,
  logCount: codecs.u8,
  class: codecs.u16,
  logs: codecs.array(codecs.u32, TABLE_LOG_SLOTS),
});
export type TableValue = codecs.CodecValue<typeof tableValue>;

/** Stack frame of a policy program (fp-relative, each area aligned for its widest field). */
export const FRAME = {
  /** ctKey (44 bytes). */
  key: -48,
  reverseKey: -96,
  value: -144,
  now: -152,
  /**
   * TCP flags, or the ICMP type (ICMPv6 types translated to ICMP's, parse.ts): read as a u32, but
   * only its low byte is ever written, so the other three are zero on every parser path alike.
   */
  l4info: -156,
  /**
   * Offset of the L4 header from the start of the frame (u16). Not 8-byte aligned on purpose: the
   * verifier keeps no copy of a value stored there, so what it reads back is any u16 and the
   * parser's paths (IPv6 extension headers) meet in one state (parse.ts).
   */
  l4offset: -158,
  /** Counter slot of the rule that decided (u32), for the allow tail's conntrack entry and aggregate. */
  slot: -164,
  /** Table mode: the hook's index in the node's `policy` map of tables (u32). */
  tableIndex: -168,
  /** Table mode: the decision-table trie key (tablePeerKey, then tablePortKey in place). */
  tableKey: -192,
} as const;

/**
 * Per-program counter slots for packets a program refuses to judge (fail closed): fragments of
 * either family (no reassembly: later fragments carry no ports), malformed or non-IP frames other
 * than ARP (truncated headers, a wrong version), IPv6 packets whose extension headers the bounded
 * walk does not get through (`ipv6-headers`: more than IPV6_EXT_HEADERS_WALKED, or the transport
 * header past IPV6_MAX_L4_OFFSET), IPv6 packets with an IPv4-mapped source or destination
 * (`ipv6-mapped`: ::ffff:0:0/96 never appears on the wire, RFC 4291 2.5.5.2, and the maps store
 * IPv4 addresses in that form, so such a packet would pass as an IPv4 peer), and ICMP/ICMPv6
 * replies or errors that belong to no connection (netfilter's INVALID).
 */
export const FAIL_CLOSED = ['fragment', 'malformed', 'ipv6-headers', 'ipv6-mapped', 'invalid'] as const;
/** Extension headers (hop-by-hop, routing, destination options, fragment) the IPv6 parser walks. */
export const IPV6_EXT_HEADERS_WALKED = 6;
/** Furthest start of the transport header the IPv6 parser accepts (from the frame's start). */
export const IPV6_MAX_L4_OFFSET = 511;
export type FailClosedReason = (typeof FAIL_CLOSED)[number];
/**
 * Table mode only: the hook's slot in the `policy` map is empty or its table answers nothing for
 * a packet. Neither should happen (a table is installed before its program and covers every
 * packet); if it does, the packet is dropped and counted here rather than passed.
 */
export const TABLE_FAIL_CLOSED = 'table';

/** Symbolic map names the generated code refers to (resolved to fds at load time). */
export const MAP = {
  conntrack: 'ct',
  ipSets: 'ipsets',
  portSets: 'portsets',
  counters: 'counters',
  /** Flow aggregates (flowKey → flowValue per CPU), drained by the agent every interval. */
  flows: 'flows',
  prefilter: 'pf_trie',
  /** The IPv6 deny-lists: 16-byte prefixes (the IPv4 trie keeps its 4-byte keys). */
  prefilter6: 'pf_trie6',
  prefilterCounters: 'pf_counters',
  config: 'config',
  /** Element 0, per CPU: aggregates the full `flows` map refused (a failed insert each). */
  flowsLost: 'flows_lost',
  /** Table mode: hook index → the hook's decision table (an LPM trie of its own). */
  tables: 'policy',
} as const;
export type MapName = (typeof MAP)[keyof typeof MAP];
