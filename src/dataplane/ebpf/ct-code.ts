/**
 * The conntrack part of a policy program. Before policy: the packet's own key (a later packet of
 * a connection that was allowed through this hook), then the reversed key with the other
 * direction (a reply), then, for ICMP errors, the connection the error is about (netfilter's
 * RELATED). Hits pass without policy, as netfilter's ESTABLISHED,RELATED rule does; ICMP replies
 * and errors that belong to nothing are dropped, as netfilter drops INVALID. After policy allows:
 * the new entry.
 *
 * Entries carry their own expiry (now + the timeout of their state), so the data path never
 * needs a timeout table and garbage collection only compares two numbers.
 */
import { R0, R1, R2, R3, R4, R5, R6, R9, R10, type Assembler, type Register } from '../../bpf/index.js';
import type { Direction } from '../../ir/types.js';
import {
  CT_FLAG_REPLIED,
  CT_STATE,
  CT_TIMEOUT_S,
  ctKey,
  ctValue,
  DIR,
  FLOW_CONNECTIONS,
  FLOW_VERDICT,
  FRAME,
  IPPROTO,
  IPV6_MAX_L4_OFFSET,
  MAP,
  NS_PER_S,
  SKB,
  TCP_FLAG,
  TCX,
} from './layout.js';
import { emitFlowCall, emitIfFlowsOn } from './emit.js';
import { ADDR16_BYTES } from './addr16.js';
import { IPPROTO_ICMPV6, MAPPED_WORD_AS_LOADED } from './parse.js';

const K = ctKey.offsets;
const V = ctValue.offsets;

export const CT_LABELS = { policy: 'policy', invalid: 'fail_invalid', pass: 'pass' } as const;

/** ICMP types that report on another packet (unreachable, source quench, redirect, time exceeded, parameter problem). */
const ICMP_ERRORS = [3, 4, 5, 11, 12];
/** ICMP answers: only valid as part of a connection (echo, timestamp, info, address mask replies). */
const ICMP_REPLIES = [0, 14, 16, 18];

/** out = timeout in ns of the state in `state` (unknown states get the UDP timeout). */
export function emitTimeout(asm: Assembler, state: Register, out: Register, prefix: string): void {
  const done = `${prefix}_tmo`;
  for (const [name, value] of Object.entries(CT_STATE) as [keyof typeof CT_STATE, number][]) {
    asm.mov64(out, CT_TIMEOUT_S[name]).jeq(state, value, done);
  }
  asm.mov64(out, CT_TIMEOUT_S.udp).label(done).mul64(out, NS_PER_S);
}

/**
 * r0 = entry: refresh it, advance the TCP state, pass. A packet of the original direction (not a
 * `reply`) also adds to the flow aggregate of the rule that allowed the connection, when flows
 * are on and the entry names one.
 */
function emitTouch(asm: Assembler, reply: boolean, prefix: string): void {
  const p = prefix;
  asm
    .ldxdw(R2, R10, FRAME.now)
    .stx('dw', R0, V.lastSeen, R2)
    .mov64(R1, 1)
    .atomicAdd('dw', R0, V.packets, R1)
    .ldxw(R1, R6, SKB.len)
    .atomicAdd('dw', R0, V.bytes, R1);
  if (reply) asm.ldxb(R1, R0, V.flags).or64(R1, CT_FLAG_REPLIED).stx('b', R0, V.flags, R1);
  asm
    .ldxb(R3, R0, V.state)
    .jne(R9, IPPROTO.TCP, `${p}_expiry`)
    .ldxw(R1, R10, FRAME.l4info)
    .jset(R1, TCP_FLAG.RST, `${p}_rst`)
    .jset(R1, TCP_FLAG.FIN, `${p}_fin`);
  if (reply) {
    // The answer to a SYN: the connection is up.
    asm.jne(R3, CT_STATE.synSent, `${p}_expiry`).mov64(R3, CT_STATE.established).ja(`${p}_store`);
  } else asm.ja(`${p}_expiry`);
  asm
    .label(`${p}_rst`)
    .mov64(R3, CT_STATE.closed)
    .ja(`${p}_store`)
    .label(`${p}_fin`)
    .jge(R3, CT_STATE.closing, `${p}_expiry`)
    .mov64(R3, CT_STATE.closing)
    .label(`${p}_store`)
    .stx('b', R0, V.state, R3)
    .label(`${p}_expiry`);
  emitTimeout(asm, R3, R1, p);
  asm.add64(R1, R2).stx('dw', R0, V.expires, R1);
  if (!reply) {
    const pass = `${p}_pass`;
    asm.comment("the allowing rule's flow aggregate: this packet too").ldxw(R1, R0, V.slot).jeq(R1, 0, pass);
    emitIfFlowsOn(asm, pass);
    emitFlowCall(asm, FLOW_VERDICT.allow, FLOW_CONNECTIONS.none);
    asm.label(pass);
  }
  asm.exitWith(TCX.NEXT);
}

/** Jumps to `miss` unless r0 is a live entry (the time is in FRAME.now). */
function emitLive(asm: Assembler, miss: string): void {
  asm.jeq(R0, 0, miss).ldxdw(R1, R0, V.expires).ldxdw(R2, R10, FRAME.now).jgt(R2, R1, miss);
}

function emitLookup(asm: Assembler, keyOffset: number): void {
  asm.mapLookup(MAP.conntrack, keyOffset);
}

/** Emits the lookups; falls through to CT_LABELS.policy for packets that start something new. */
export function emitConntrackLookup(asm: Assembler, direction: Direction): void {
  asm
    .comment("conntrack: the time, then this packet's own connection")
    .call('ktime_get_ns')
    .stx('dw', R10, FRAME.now, R0);
  emitForwardLookup(asm);
  emitReverseLookup(asm, direction === 'ingress' ? DIR.egress : DIR.ingress);
  emitIcmpClass(asm);
  emitRelatedLookup(asm);
}

/**
 * A later packet of a connection allowed through this hook: refresh it and pass. A TCP SYN
 * (without ACK) is never a later packet: it opens a connection, so it is judged again whatever
 * the entry says. netfilter counts a connection ESTABLISHED only after a reply, re-opens a closed
 * one on a SYN, and re-judges a SYN that re-opens an established one once its SYN-ACK shows the
 * old connection is gone. Otherwise a client that reuses the 5-tuple of an earlier connection
 * would pass on that stale entry after a policy change that denies it: an attempt never answered
 * (a SYN timed out, the port free again), or an answered connection whose close this hook never
 * saw (its link detached for a moment, found by the chaos test). (Other unanswered packets, such
 * as a one-way UDP stream, still pass on their entry.)
 */
function emitForwardLookup(asm: Assembler): void {
  emitLookup(asm, FRAME.key);
  emitLive(asm, 'ct_reverse');
  // A SYN on a known tuple is a new connection reusing the ports: judge it afresh.
  asm
    .comment('a SYN starts a new connection, whatever the entry says: judge it afresh')
    .jne(R9, IPPROTO.TCP, 'ct_fwd')
    .ldxw(R1, R10, FRAME.l4info)
    .and64(R1, TCP_FLAG.SYN | TCP_FLAG.ACK)
    .jeq(R1, TCP_FLAG.SYN, 'ct_reverse')
    .label('ct_fwd')
    .comment('established: refresh the entry, advance the TCP state, pass');
  emitTouch(asm, false, 'ct_fwd');
}

/**
 * A reply: the reversed key under the other direction (`other`). Refresh it and pass. A SYN is
 * never a reply (netfilter finds it INVALID on an established connection): it starts one, and is
 * judged. Otherwise an entry only the other hook holds (the SYN-ACK of a connection this hook did
 * not see, its link detached for a moment) would let a later SYN on that 5-tuple through unjudged.
 */
function emitReverseLookup(asm: Assembler, other: number): void {
  const rk = FRAME.reverseKey;
  const k = FRAME.key;
  asm
    .label('ct_reverse')
    .comment('a SYN is no reply: judge it')
    .jne(R9, IPPROTO.TCP, 'ct_rev_key')
    .ldxw(R1, R10, FRAME.l4info)
    .and64(R1, TCP_FLAG.SYN | TCP_FLAG.ACK)
    .jeq(R1, TCP_FLAG.SYN, CT_LABELS.policy)
    .label('ct_rev_key')
    .comment('a reply? the reversed key, other direction')
    .copy('w', R10, rk + K.ifindex, R10, k + K.ifindex, R1)
    .st('b', R10, rk + K.dir, other)
    .stx('b', R10, rk + K.proto, R9)
    .st('h', R10, rk + K.pad, 0)
    .copy('h', R10, rk + K.dport, R10, k + K.sport, R1)
    .copy('h', R10, rk + K.sport, R10, k + K.dport, R1);
  for (let w = 0; w < ADDR16_BYTES; w += 4)
    asm
      .copy('w', R10, rk + K.daddr + w, R10, k + K.saddr + w, R1)
      .copy('w', R10, rk + K.saddr + w, R10, k + K.daddr + w, R1);
  emitLookup(asm, rk);
  emitLive(asm, 'ct_icmp');
  asm.comment('reply: refresh the entry (replied), advance the TCP state, pass');
  emitTouch(asm, true, 'ct_rev');
}

/** ICMP errors look for the connection they are about; answers without a connection are invalid. */
function emitIcmpClass(asm: Assembler): void {
  asm
    .label('ct_icmp')
    .comment('ICMP: errors are related to a connection, replies without one are invalid')
    .jne(R9, IPPROTO.ICMP, CT_LABELS.policy)
    .ldxw(R1, R10, FRAME.l4info);
  for (const t of ICMP_ERRORS) asm.jeq(R1, t, 'ct_related');
  for (const t of ICMP_REPLIES) asm.jeq(R1, t, CT_LABELS.invalid);
  asm.ja(CT_LABELS.policy);
}

/**
 * The error quotes the offending packet's IP header and first 8 bytes. That packet travelled
 * the other way through this hook, so its entry is under the other direction, tuple as quoted:
 * an IPv4 header (no options: the quote of one of our packets has none) with its addresses
 * mapped, or an IPv6 header whose next header is the transport (an ICMPv6 echo is tracked as
 * ICMP, as the parser stores it).
 */
function emitRelatedLookup(asm: Assembler): void {
  const rk = FRAME.reverseKey;
  const inner = 8; // ICMP header
  asm
    .label('ct_related')
    .comment('ICMP error: the connection of the quoted packet (RELATED), else invalid')
    .ldxw(R2, R6, SKB.data)
    .ldxw(R3, R6, SKB.dataEnd)
    .ldxh(R4, R10, FRAME.l4offset)
    .and64(R4, IPV6_MAX_L4_OFFSET)
    .add64(R2, R4)
    .st('w', R10, rk + K.sport, 0)
    .checkBounds(R2, inner + 1, R3, R4, CT_LABELS.invalid)
    .ldxb(R4, R2, inner)
    .jeq(R4, 0x45, 'ct_rel_v4')
    .and64(R4, 0xf0)
    .jne(R4, 0x60, CT_LABELS.invalid)
    .comment('quoted IPv6: addresses as they are, the next header (ICMPv6 as ICMP), then ports or echo id')
    .checkBounds(R2, inner + 40 + 8, R3, R4, CT_LABELS.invalid);
  for (let w = 0; w < ADDR16_BYTES; w += 4)
    asm
      .copy('w', R10, rk + K.saddr + w, R2, inner + 8 + w, R5)
      .copy('w', R10, rk + K.daddr + w, R2, inner + 24 + w, R5);
  asm
    .ldxb(R4, R2, inner + 6)
    .mov64(R1, 40)
    .jne(R4, IPPROTO_ICMPV6, 'ct_rel_proto')
    .mov64(R4, IPPROTO.ICMP)
    .ldxb(R5, R2, inner + 40)
    .jne(R5, 128, 'ct_rel_lookup_proto')
    .ldxh(R5, R2, inner + 40 + 4)
    .stx('h', R10, rk + K.sport, R5)
    .stx('h', R10, rk + K.dport, R5)
    .ja('ct_rel_lookup_proto')
    .label('ct_rel_v4')
    .comment('quoted IPv4: mapped addresses, the protocol, then ports or echo id')
    .checkBounds(R2, inner + 20 + 8, R3, R4, CT_LABELS.invalid)
    .ldxb(R4, R2, inner + 9)
    .st('dw', R10, rk + K.saddr, 0)
    .st('w', R10, rk + K.saddr + 8, MAPPED_WORD_AS_LOADED)
    .copy('w', R10, rk + K.saddr + 12, R2, inner + 12, R5)
    .st('dw', R10, rk + K.daddr, 0)
    .st('w', R10, rk + K.daddr + 8, MAPPED_WORD_AS_LOADED)
    .copy('w', R10, rk + K.daddr + 12, R2, inner + 16, R5)
    .mov64(R1, 20)
    .jne(R4, IPPROTO.ICMP, 'ct_rel_proto')
    .ldxb(R5, R2, inner + 20)
    .jne(R5, 8, 'ct_rel_lookup_proto')
    .ldxh(R5, R2, inner + 24)
    .stx('h', R10, rk + K.sport, R5)
    .stx('h', R10, rk + K.dport, R5)
    .ja('ct_rel_lookup_proto')
    .label('ct_rel_proto')
    .comment('ports of TCP, UDP and SCTP right after the quoted header (r1 = its length)')
    .jeq(R4, IPPROTO.TCP, 'ct_rel_ports')
    .jeq(R4, IPPROTO.UDP, 'ct_rel_ports')
    .jne(R4, IPPROTO.SCTP, 'ct_rel_lookup_proto')
    .label('ct_rel_ports')
    .add64(R2, R1)
    .checkBounds(R2, inner + 4, R3, R5, CT_LABELS.invalid)
    .copy('h', R10, rk + K.sport, R2, inner, R5)
    .copy('h', R10, rk + K.dport, R2, inner + 2, R5)
    .label('ct_rel_lookup_proto')
    .stx('b', R10, rk + K.proto, R4);
  emitLookup(asm, rk);
  emitLive(asm, CT_LABELS.invalid);
  asm.exitWith(TCX.NEXT);
}

/**
 * Placed at the allow label: records the allowed packet's connection, then passes it.
 * `afterCreate` is emitted once the entry is written (a RST, which opens nothing, skips it).
 */
export function emitConntrackCreate(asm: Assembler, afterCreate?: () => void): void {
  const v = FRAME.value;
  asm
    .comment("the new connection's entry: its first state, times and counts")
    .jne(R9, IPPROTO.TCP, 'ct_new_other')
    .ldxw(R1, R10, FRAME.l4info)
    // A RST opens nothing.
    .jset(R1, TCP_FLAG.RST, CT_LABELS.pass)
    .and64(R1, TCP_FLAG.SYN | TCP_FLAG.ACK)
    .mov64(R3, CT_STATE.synSent)
    .jeq(R1, TCP_FLAG.SYN, 'ct_new_store')
    // Picked up mid-stream (netfilter's loose TCP tracking does the same).
    .mov64(R3, CT_STATE.established)
    .ja('ct_new_store')
    .label('ct_new_other')
    .mov64(R3, CT_STATE.udp)
    .jne(R9, IPPROTO.ICMP, 'ct_new_store')
    .mov64(R3, CT_STATE.icmp)
    .label('ct_new_store')
    .st('dw', R10, v + V.state, 0) // state, flags, padding and slot
    .stx('b', R10, v + V.state, R3)
    .comment('the deciding rule: later packets of this direction add to its flow aggregate')
    .ldxw(R1, R10, FRAME.slot)
    .stx('w', R10, v + V.slot, R1)
    .ldxdw(R2, R10, FRAME.now)
    .stx('dw', R10, v + V.created, R2)
    .stx('dw', R10, v + V.lastSeen, R2);
  emitTimeout(asm, R3, R1, 'ct_new');
  asm
    .add64(R1, R2)
    .stx('dw', R10, v + V.expires, R1)
    .st('dw', R10, v + V.packets, 1)
    .ldxw(R1, R6, SKB.len)
    .stx('dw', R10, v + V.bytes, R1)
    .mapUpdate(MAP.conntrack, FRAME.key, v);
  afterCreate?.();
  asm.label(CT_LABELS.pass).comment('pass').exitWith(TCX.NEXT);
}
