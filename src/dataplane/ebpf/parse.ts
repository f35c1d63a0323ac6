/**
 * Packet parsing for the tcx policy programs: Ethernet, IPv4 (with options), then the ports of
 * TCP/UDP/SCTP or the type and echo id of ICMP. Anything the policy cannot judge leaves through
 * a fail-closed label (counted and dropped); ARP passes untouched.
 *
 * Afterwards: r6 = ctx, r7 = remote address (as loaded: network order), r8 = destination port in
 * host order (0 without ports), r9 = IP protocol, and the conntrack key on the stack is complete.
 */
import { R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, type Assembler } from '../../bpf/index.js';
import type { Direction } from '../../ir/types.js';
import { ctKey, DIR, ETH_HLEN, ETHERTYPE_AS_LOADED, FRAME, IPPROTO, SKB } from './layout.js';

export const PARSE_LABELS = {
  nonIp: 'pass_arp',
  ipv6: 'fail_ipv6',
  fragment: 'fail_fragment',
  malformed: 'fail_malformed',
} as const;

const K = ctKey.offsets;
const IP = ETH_HLEN;

/** Emits the parser; r1 holds the context on entry. */
export function emitParse(asm: Assembler, direction: Direction): void {
  emitEthernet(asm);
  emitIpv4(asm);
  emitTransport(asm);
  asm
    .label('parsed')
    .comment(`parsed: complete the conntrack key (interface, direction ${direction}); r7 = remote address`)
    .copy('w', R10, FRAME.key + K.ifindex, R6, SKB.ifindex, R4)
    .st('b', R10, FRAME.key + K.dir, DIR[direction])
    // The remote end: the source of traffic toward the pod, the destination of traffic from it.
    .ldxw(R7, R10, FRAME.key + (direction === 'ingress' ? K.saddr : K.daddr));
}

/** r2 = data, r3 = data_end; the EtherType decides: IPv4 goes on, ARP passes, the rest fails closed. */
function emitEthernet(asm: Assembler): void {
  const key = FRAME.key;
  const L = PARSE_LABELS;
  asm
    .comment('parse: clear the conntrack key, then Ethernet')
    .mov64(R6, R1)
    .st('dw', R10, key, 0)
    .st('dw', R10, key + 8, 0)
    .st('w', R10, key + 16, 0)
    .st('w', R10, FRAME.l4info, 0)
    .ldxw(R2, R6, SKB.data)
    .ldxw(R3, R6, SKB.dataEnd)
    .checkBounds(R2, ETH_HLEN, R3, R4, L.malformed)
    .ldxh(R5, R2, 12)
    .jeq(R5, ETHERTYPE_AS_LOADED.arp, L.nonIp)
    .jeq(R5, ETHERTYPE_AS_LOADED.ipv6, L.ipv6)
    // Other EtherTypes (VLAN tags, LLDP, …) are not routed anyway; refusing them keeps policy tight.
    .jne(R5, ETHERTYPE_AS_LOADED.ipv4, L.malformed);
}

/** The IPv4 header: version, length, no fragment; protocol and addresses into the key; r2 = L4 header. */
function emitIpv4(asm: Assembler): void {
  const key = FRAME.key;
  const L = PARSE_LABELS;
  asm
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
    .comment('protocol (r9) and addresses into the conntrack key')
    .ldxb(R9, R2, IP + 9)
    .stx('b', R10, key + K.proto, R9)
    .copy('w', R10, key + K.saddr, R2, IP + 12, R4)
    .copy('w', R10, key + K.daddr, R2, IP + 16, R4)
    .add64(R5, ETH_HLEN)
    .stx('w', R10, FRAME.l4offset, R5)
    .add64(R2, R5);
}

/** Ports (r8, host order), TCP flags or the ICMP type into FRAME.l4info; echo ids as ports. */
function emitTransport(asm: Assembler): void {
  const key = FRAME.key;
  const L = PARSE_LABELS;
  asm
    .comment('transport: TCP, UDP, SCTP ports; ICMP type')
    .mov64(R8, 0)
    .dispatch(
      R9,
      [
        [IPPROTO.TCP, 'parse_tcp'],
        [IPPROTO.UDP, 'parse_ports'],
        [IPPROTO.SCTP, 'parse_ports'],
        [IPPROTO.ICMP, 'parse_icmp'],
      ],
      'parsed',
    )
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
