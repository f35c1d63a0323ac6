/**
 * Packet parsing for the tcx policy programs: Ethernet, then IPv4 (with options) or IPv6 (with a
 * bounded walk over its extension headers), then the ports of TCP/UDP/SCTP or the type and echo
 * id of ICMP/ICMPv6. Anything the policy cannot judge leaves through a fail-closed label (counted
 * and dropped, one counter per reason); ARP and IPv6 neighbour discovery pass untouched.
 *
 * Both families end in one form (addr16.ts): addresses are 16 bytes in the conntrack key, IPv4
 * mapped; ICMPv6 becomes protocol ICMP with its types translated to ICMP's (echo 128/129 → 8/0,
 * errors → 3/11/12), so conntrack, the rule walk and the tables judge both families with one code.
 *
 * Afterwards: r6 = ctx, r7 = pointer to the remote address (16 bytes in the key on the stack),
 * r8 = destination port in host order (0 without ports), r9 = IP protocol, and the conntrack key
 * on the stack is complete.
 */
import { R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, type Assembler } from '../../bpf/index.js';
import type { Direction } from '../../ir/types.js';
import {
  ctKey,
  DIR,
  ETH_HLEN,
  ETHERTYPE_AS_LOADED,
  FRAME,
  IPPROTO,
  IPV6_EXT_HEADERS_WALKED,
  IPV6_MAX_L4_OFFSET,
  SKB,
} from './layout.js';

export const PARSE_LABELS = {
  nonIp: 'pass_arp',
  neighbour: 'pass_nd',
  ipv6Headers: 'fail_ipv6_headers',
  ipv6Mapped: 'fail_ipv6_mapped',
  fragment: 'fail_fragment',
  malformed: 'fail_malformed',
} as const;

/** IPv6 extension headers the parser walks (RFC 8200 4.1): they all start {next header, length}. */
export const IPV6_EXT = { hopByHop: 0, routing: 43, fragment: 44, destinationOptions: 60 } as const;
export const IPPROTO_ICMPV6 = 58;
/** ICMPv6 neighbour discovery: router solicitation/advertisement, neighbour solicitation/advertisement. */
export const ICMPV6_NEIGHBOUR_DISCOVERY = [133, 134, 135, 136] as const;
/**
 * ICMPv6 types as the ICMP types conntrack and policy know (RFC 4443): echo, and the errors that
 * quote a packet (unreachable and packet too big → unreachable, time exceeded, parameter problem).
 * Other error types (5–127, unassigned) become ICMPV6_OTHER_ERROR; informational types from 130
 * keep their number, which no ICMP type conntrack looks at has.
 */
export const ICMPV6_AS_ICMP: readonly (readonly [number, number])[] = [
  [128, 8],
  [129, 0],
  [1, 3],
  [2, 3],
  [3, 11],
  [4, 12],
];
export const ICMPV6_OTHER_ERROR = 254;

const K = ctKey.offsets;
const IP = ETH_HLEN;
const IPV6_HLEN = 40;
/** The largest offset an extension-header step can start at: a fragment header (8) after the bound. */
const EXT_STEP_MAX_OFFSET = IPV6_MAX_L4_OFFSET + 8;
/** The IPv4-mapped marker (::ffff:0:0/96, bytes 10–11 of the address) as a 32-bit load sees word 2. */
export const MAPPED_WORD_AS_LOADED = 0xffff0000;

/**
 * Emits the parser; r1 holds the context on entry.
 *
 * Shaped so that the verifier checks what follows `parsed` (conntrack, the rules, the tails) once,
 * not once per parser path. It explores fall-throughs first, so the first path to reach `parsed`
 * is IPv6 without extension headers, TCP: the one that leaves every byte the others write as
 * "some data" (its stack is the most general, so every later path there is pruned against it).
 * What would still tell the paths apart is kept out of its view: r9 is read back from the key's
 * protocol byte (a byte store the verifier keeps no copy of), the L4 offset is a u16 at an
 * unaligned slot (FRAME.l4offset; the extension-header walks meet once it is read back), and
 * l4info is only ever written a byte at a time. Together they took the bench's programs from
 * ~9,000 to ~3,100 processed instructions (docs/ebpf.md, "What the verifier walks").
 */
export function emitParse(asm: Assembler, direction: Direction): void {
  emitEthernet(asm);
  emitIpv6(asm);
  emitIcmpv6(asm);
  emitIpv4(asm);
  emitTransport(asm);
  asm
    .label('parsed')
    .comment('parsed: r9 = the protocol again, from the key (the verifier then knows it on no path)')
    .ldxb(R9, R10, FRAME.key + K.proto)
    .comment(`complete the conntrack key (interface, direction ${direction}); r7 = remote address`)
    .copy('w', R10, FRAME.key + K.ifindex, R6, SKB.ifindex, R4)
    .st('b', R10, FRAME.key + K.dir, DIR[direction])
    // The remote end: the source of traffic toward the pod, the destination of traffic from it.
    .stackAddress(R7, FRAME.key + (direction === 'ingress' ? K.saddr : K.daddr));
}

/** r2 = data, r3 = data_end; the EtherType decides: IP goes on, ARP passes, the rest fails closed. */
function emitEthernet(asm: Assembler): void {
  const key = FRAME.key;
  const L = PARSE_LABELS;
  asm.comment('parse: clear the conntrack key, then Ethernet').mov64(R6, R1);
  for (let at = 0; at + 8 <= ctKey.size; at += 8) asm.st('dw', R10, key + at, 0);
  if (ctKey.size % 8) asm.st('w', R10, key + ctKey.size - 4, 0);
  asm
    .st('w', R10, FRAME.l4info, 0)
    .ldxw(R2, R6, SKB.data)
    .ldxw(R3, R6, SKB.dataEnd)
    .checkBounds(R2, ETH_HLEN, R3, R4, L.malformed)
    .ldxh(R5, R2, 12)
    .jeq(R5, ETHERTYPE_AS_LOADED.arp, L.nonIp)
    .jne(R5, ETHERTYPE_AS_LOADED.ipv6, 'parse_ipv4');
}

/** The IPv4 header: version, length, no fragment; protocol and mapped addresses into the key; r2 = L4 header. */
function emitIpv4(asm: Assembler): void {
  const key = FRAME.key;
  const L = PARSE_LABELS;
  asm
    .label('parse_ipv4')
    // Other EtherTypes (VLAN tags, LLDP, …) are not routed anyway; refusing them keeps policy tight.
    .jne(R5, ETHERTYPE_AS_LOADED.ipv4, L.malformed)
    .comment('IPv4 header: version 4, IHL >= 5, not a fragment')
    .checkBounds(R2, IP + 20, R3, R4, L.malformed)
    .ldxb(R5, R2, IP)
    .mov64(R4, R5)
    .and64(R4, 0xf0)
    .jne(R4, 0x40, L.malformed)
    .and64(R5, 0x0f)
    .jlt(R5, 5, L.malformed)
    .lsh64(R5, 2)
    // Later fragments carry no ports and the first one alone says nothing about them: without
    // reassembly the policy cannot judge fragments, so they fail closed.
    .ldxh(R4, R2, IP + 6)
    .be(R4, 16)
    .and64(R4, 0x3fff)
    .jne(R4, 0, L.fragment)
    .comment('protocol (r9) and addresses (IPv4-mapped, ::ffff:a.b.c.d) into the conntrack key')
    .ldxb(R9, R2, IP + 9)
    .stx('b', R10, key + K.proto, R9)
    .st('w', R10, key + K.saddr + 8, MAPPED_WORD_AS_LOADED)
    .copy('w', R10, key + K.saddr + 12, R2, IP + 12, R4)
    .st('w', R10, key + K.daddr + 8, MAPPED_WORD_AS_LOADED)
    .copy('w', R10, key + K.daddr + 12, R2, IP + 16, R4)
    .add64(R5, ETH_HLEN)
    .stx('h', R10, FRAME.l4offset, R5)
    .add64(R2, R5);
}

/** Ports (r8, host order), TCP flags or the ICMP type into FRAME.l4info; echo ids as ports. */
function emitTransport(asm: Assembler): void {
  const key = FRAME.key;
  const L = PARSE_LABELS;
  asm
    .label('transport')
    .comment('transport: TCP, UDP, SCTP ports; ICMP type')
    .mov64(R8, 0)
    // TCP falls through: the verifier's first path to `parsed` (see emitParse).
    .jne(R9, IPPROTO.TCP, 'transport_other')
    .label('parse_tcp')
    .comment('TCP: the flags byte')
    .checkBounds(R2, 14, R3, R4, L.malformed)
    .copy('b', R10, FRAME.l4info, R2, 13, R4)
    .label('parse_ports')
    .comment('the ports; r8 = destination port in host order')
    .checkBounds(R2, 8, R3, R4, L.malformed)
    .copy('h', R10, key + K.sport, R2, 0, R4)
    .ldxh(R8, R2, 2)
    .stx('h', R10, key + K.dport, R8)
    .be(R8, 16)
    .ja('parsed')
    .label('transport_other')
    .dispatch(
      R9,
      [
        [IPPROTO.UDP, 'parse_ports'],
        [IPPROTO.SCTP, 'parse_ports'],
        [IPPROTO.ICMP, 'parse_icmp'],
      ],
      'parsed',
    )
    .label('parse_icmp')
    .comment('ICMP: the type (r4)')
    .checkBounds(R2, 8, R3, R4, L.malformed)
    .copy('b', R10, FRAME.l4info, R2, 0, R4)
    // Echo request and reply are tracked by their identifier, in both port fields so that the
    // reversed key of a reply is the request's key.
    .jeq(R4, 8, 'parse_echo')
    .jne(R4, 0, 'parsed')
    .label('parse_echo')
    .comment('echo request or reply: the identifier in both port fields')
    .ldxh(R4, R2, 4)
    .stx('h', R10, key + K.sport, R4)
    .stx('h', R10, key + K.dport, R4);
}

/**
 * The IPv6 header, then at most IPV6_EXT_HEADERS_WALKED extension headers (unrolled: the walk is
 * a fixed number of steps the verifier follows one by one), with r5 = offset of the header being
 * read, bounded by IPV6_MAX_L4_OFFSET after every step so that packet pointers built from it
 * stay checkable. A fragment header fails closed unless it is an atomic fragment (offset 0, no
 * more fragments: RFC 6946); more headers than walked, or a transport header further than the
 * bound, fail closed as `ipv6-headers`. Any other next header (AH, ESP, No Next Header, …) is the
 * protocol, judged as IPv4 judges a protocol it does not parse.
 */
function emitIpv6(asm: Assembler): void {
  const key = FRAME.key;
  const L = PARSE_LABELS;
  asm
    .label('parse_ipv6')
    .comment('IPv6 header: version 6; addresses into the conntrack key, never IPv4-mapped; r9 = next header')
    .checkBounds(R2, IP + IPV6_HLEN, R3, R4, L.malformed)
    .ldxb(R5, R2, IP)
    .and64(R5, 0xf0)
    .jne(R5, 0x60, L.malformed);
  for (let w = 0; w < 16; w += 4)
    asm
      .copy('w', R10, key + K.saddr + w, R2, IP + 8 + w, R4)
      .copy('w', R10, key + K.daddr + w, R2, IP + 24 + w, R4);
  for (const field of [K.saddr, K.daddr]) {
    // An IPv4-mapped address is how the maps store IPv4 (addr16.ts): on the wire it would pass
    // for an IPv4 peer, so it fails closed (RFC 4291 2.5.5.2: never on the wire).
    const ok = `v6_unmapped_${field}`;
    asm
      .ldxdw(R4, R10, key + field)
      .jne(R4, 0, ok)
      .ldxh(R4, R10, key + field + 8)
      .jne(R4, 0, ok)
      .ldxh(R4, R10, key + field + 10)
      .jeq(R4, 0xffff, L.ipv6Mapped)
      .label(ok);
  }
  asm.ldxb(R9, R2, IP + 6).mov64(R5, IP + IPV6_HLEN);
  const ext = IPV6_EXT;
  for (let i = 0; i <= IPV6_EXT_HEADERS_WALKED; i++) {
    const p = `ext${i}`;
    const next = i === IPV6_EXT_HEADERS_WALKED ? L.ipv6Headers : `ext${i + 1}`;
    asm.label(p);
    if (i === 0) asm.comment('extension headers: hop-by-hop, routing, destination options, fragment');
    // The offset read back and bounded by what it can be here (never taken): the walks that got
    // this far meet in one state, so the verifier follows each step once, not once per walk.
    else
      asm
        .stx('h', R10, FRAME.l4offset, R5)
        .ldxh(R5, R10, FRAME.l4offset)
        .jgt(R5, EXT_STEP_MAX_OFFSET, L.ipv6Headers);
    asm
      .jeq(R9, ext.hopByHop, `${p}_opt`)
      .jeq(R9, ext.routing, `${p}_opt`)
      .jeq(R9, ext.destinationOptions, `${p}_opt`)
      .jeq(R9, ext.fragment, i === IPV6_EXT_HEADERS_WALKED ? L.ipv6Headers : `${p}_frag`)
      .ja('ipv6_l4');
    if (i === IPV6_EXT_HEADERS_WALKED) {
      asm.label(`${p}_opt`).ja(L.ipv6Headers);
      break;
    }
    asm
      .label(`${p}_opt`)
      .mov64(R4, R2)
      .add64(R4, R5)
      .checkBounds(R4, 8, R3, R1, L.malformed)
      .ldxb(R9, R4, 0)
      .ldxb(R1, R4, 1)
      .add64(R1, 1)
      .lsh64(R1, 3)
      .add64(R5, R1)
      .jgt(R5, IPV6_MAX_L4_OFFSET, L.ipv6Headers)
      .ja(next)
      .label(`${p}_frag`)
      .comment('fragment header: only an atomic fragment (offset 0, no more fragments) goes on')
      .mov64(R4, R2)
      .add64(R4, R5)
      .checkBounds(R4, 8, R3, R1, L.malformed)
      .ldxh(R1, R4, 2)
      .be(R1, 16)
      .and64(R1, 0xfff9)
      .jne(R1, 0, L.fragment)
      .ldxb(R9, R4, 0)
      .add64(R5, 8)
      .ja(next);
  }
  asm
    .label('ipv6_l4')
    .comment('the transport header at r5: ICMPv6 apart, the rest as after IPv4')
    // Read back, r5 is any u16 to the verifier, then bounded: every walk goes on from one state.
    .stx('h', R10, FRAME.l4offset, R5)
    .ldxh(R5, R10, FRAME.l4offset)
    .jgt(R5, IPV6_MAX_L4_OFFSET, L.ipv6Headers)
    .add64(R2, R5)
    .jeq(R9, IPPROTO_ICMPV6, 'parse_icmp6')
    .stx('b', R10, key + K.proto, R9)
    .ja('transport');
}

/**
 * ICMPv6: neighbour discovery passes (as ARP does; Calico allows it whatever the policy), the
 * rest becomes protocol ICMP with its type translated (ICMPV6_AS_ICMP), so that echo is tracked
 * by its identifier and errors look for the connection they quote, as for ICMP.
 */
function emitIcmpv6(asm: Assembler): void {
  const key = FRAME.key;
  const L = PARSE_LABELS;
  asm
    .label('parse_icmp6')
    .comment('ICMPv6: the type (r4); neighbour discovery passes; the rest is judged as ICMP')
    .mov64(R9, IPPROTO.ICMP)
    .stx('b', R10, key + K.proto, R9)
    .mov64(R8, 0)
    .checkBounds(R2, 8, R3, R4, L.malformed)
    .ldxb(R4, R2, 0);
  for (const t of ICMPV6_NEIGHBOUR_DISCOVERY) asm.jeq(R4, t, L.neighbour);
  for (const [v6, v4] of ICMPV6_AS_ICMP) asm.jeq(R4, v6, `icmp6_${v4}_${v6}`);
  asm.jlt(R4, 128, 'icmp6_error').stx('b', R10, FRAME.l4info, R4).ja('parsed');
  asm.label('icmp6_error').st('b', R10, FRAME.l4info, ICMPV6_OTHER_ERROR).ja('parsed');
  for (const [v6, v4] of ICMPV6_AS_ICMP) {
    asm.label(`icmp6_${v4}_${v6}`).st('b', R10, FRAME.l4info, v4);
    if (v4 === 8 || v4 === 0) asm.ja('parse_echo');
    else asm.ja('parsed');
  }
}
