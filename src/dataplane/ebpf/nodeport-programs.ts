/**
 * The node-port load balancer: two tcx programs on the node's fabric interface (where traffic
 * from outside enters the node, as it would through a NIC) that translate each packet of a
 * connection to a node port or a load-balancer address, using maps only for service data:
 *
 *   ingress  a known connection (np_nat) is rewritten as recorded: the client's packets to the
 *            backend, and the replies of source-translated connections back to the client;
 *            a SYN or the first packet to {address, port, protocol} in np_svc chooses a backend
 *            (ClientIP affinity, else uniform), records both directions in np_nat and rewrites.
 *            A backend on another node: the source becomes the node's fabric address (so the
 *            reply returns here) and the packet leaves by the fabric again (bpf_redirect_neigh).
 *            No ready backend, or a load-balancer address on a port it does not serve: the
 *            destination becomes the node's own address, whose stack answers with a TCP RST or
 *            an ICMP port unreachable (refused, not a time-out).
 *   egress   the replies of connections the ingress translated without source translation
 *            (backends on this node) leave with the service's address and port as their source.
 *
 * The translated packet goes on to the node's routing and to the pod's host veth, where the
 * policy programs judge it: policy applies to the packet after translation. The node's own
 * addresses are immediates of the code, so a node's program changes when its addresses do.
 */
import {
  Assembler,
  codecs,
  R0,
  R1,
  R2,
  R3,
  R4,
  R5,
  R6,
  R7,
  R8,
  R9,
  R10,
  TcAction,
  type AssembledProgram,
} from '../../bpf/index.js';
import { ETH_HLEN, ETHERTYPE_AS_LOADED, IPPROTO, SKB, TCP_FLAG } from './layout.js';
import {
  NAT_FLAG,
  NP_BACKEND_REMOTE,
  NP_MAP,
  natKey,
  natValue,
  npAffinityKey,
  npAffinityValue,
  npBackendValue,
  npSvcKey,
  SNAT_PORTS,
  SNAT_TRIES,
} from './nodeport-layout.js';
import { svcValue } from './services-layout.js';
import { emitAffinityHit, emitAffinityRecord, emitUniformPick } from './lb-code.js';

const MAPS = {
  affinity: NP_MAP.affinity,
  backends: NP_MAP.backends,
  backendValue: npBackendValue,
  affinityValue: npAffinityValue,
};

export type NodePortHook = 'ingress' | 'egress';

export interface NodePortAddresses {
  /** Where refused connections are sent: the node's external address (else its fabric address). */
  own: string;
  /** The source of connections translated to a backend on another node: the node's fabric address. */
  snat: string;
}

export const NODEPORT_PROGRAM_NAMES: Record<NodePortHook, string> = {
  ingress: 'sy_np_ingress',
  egress: 'sy_np_egress',
};

const IP_OFF = ETH_HLEN;
/** Programs translate IPv4 without options only (IHL 5); anything else passes untouched. */
export const L4_OFF = IP_OFF + 20;
export const PKT = {
  ipCsum: IP_OFF + 10,
  proto: IP_OFF + 9,
  fragment: IP_OFF + 6,
  saddr: IP_OFF + 12,
  daddr: IP_OFF + 16,
  sport: L4_OFF,
  dport: L4_OFF + 2,
  tcpFlags: L4_OFF + 13,
  tcpCsum: L4_OFF + 16,
  udpCsum: L4_OFF + 6,
} as const;

/** include/uapi/linux/bpf.h: flags of bpf_l4_csum_replace, bpf_map_update_elem. */
const BPF_F_PSEUDO_HDR = 0x10;
const BPF_F_MARK_MANGLED_0 = 0x20;
const BPF_NOEXIST = 1;

/** Stack frame (offsets from r10), each area 8-aligned. */
export const FRAME = {
  /** The packet's tuple as it arrived (natKey). */
  key: -16,
  /** The tuple it leaves with and the entry's flags (natValue). */
  next: -32,
  revKey: -48,
  revValue: -64,
  svcKey: -72,
  affKey: -80,
  affValue: -104,
  backendKey: -112,
  /** u32: TCP flags of the packet (0 for UDP). */
  tcpFlags: -116,
  /** u32: offset of the L4 checksum. */
  l4Csum: -120,
  /** u32: extra bpf_l4_csum_replace flags (UDP: a zero checksum stays zero). */
  l4Flags: -124,
} as const;

const nk = natKey.offsets;
const nv = natValue.offsets;
const sk = npSvcKey.offsets;
const sv = svcValue.offsets;
const bv = npBackendValue.offsets;
const ak = npAffinityKey.offsets;
const av = npAffinityValue.offsets;

/** An IPv4 address as a 32-bit load of its network-order bytes sees it (little-endian host). */
export function addressAsLoaded(address: string): number {
  const v = codecs.parseIpv4(address);
  return (((v & 0xff) << 24) | (((v >>> 8) & 0xff) << 16) | (((v >>> 16) & 0xff) << 8) | (v >>> 24)) >>> 0;
}

/**
 * Ethernet + IPv4 (no options, not a fragment) + TCP or UDP: the tuple to the stack, else pass.
 * `ctx`: where the context keeps the packet's bounds (the XDP program passes struct xdp_md's).
 */
export function emitParse(
  asm: Assembler,
  ctx: { data: number; dataEnd: number } = { data: SKB.data, dataEnd: SKB.dataEnd },
): void {
  const f = FRAME;
  asm
    .comment('IPv4 without options, not a fragment, TCP or UDP: anything else is not ours')
    .mov64(R6, R1)
    .ldxw(R2, R6, ctx.data)
    .ldxw(R3, R6, ctx.dataEnd)
    .checkBounds(R2, L4_OFF + 8, R3, R4, 'pass')
    .ldxh(R5, R2, 12)
    .jne(R5, ETHERTYPE_AS_LOADED.ipv4, 'pass')
    .ldxb(R5, R2, IP_OFF)
    .jne(R5, 0x45, 'pass')
    // Flags and fragment offset as loaded little-endian: MF (0x20) and the offset's 13 bits.
    .ldxh(R5, R2, PKT.fragment)
    .and64(R5, 0xff3f)
    .jne(R5, 0, 'pass')
    .ldxb(R5, R2, PKT.proto)
    .stx('b', R10, f.key + nk.proto, R5)
    .st('w', R10, f.tcpFlags, 0)
    .jeq(R5, IPPROTO.UDP, 'udp')
    .jne(R5, IPPROTO.TCP, 'pass')
    .checkBounds(R2, L4_OFF + 20, R3, R4, 'pass')
    .ldxb(R5, R2, PKT.tcpFlags)
    .stx('w', R10, f.tcpFlags, R5)
    .st('w', R10, f.l4Csum, PKT.tcpCsum)
    .st('w', R10, f.l4Flags, 0)
    .ja('tuple')
    .label('udp')
    .st('w', R10, f.l4Csum, PKT.udpCsum)
    .st('w', R10, f.l4Flags, BPF_F_MARK_MANGLED_0)
    .label('tuple')
    .comment("the packet's tuple: the translation map's key")
    .copy('w', R10, f.key + nk.saddr, R2, PKT.saddr, R4)
    .copy('w', R10, f.key + nk.daddr, R2, PKT.daddr, R4)
    .copy('h', R10, f.key + nk.sport, R2, PKT.sport, R4)
    .copy('h', R10, f.key + nk.dport, R2, PKT.dport, R4)
    .st('b', R10, f.key + nk.pad, 0)
    .st('h', R10, f.key + nk.pad2, 0);
}

/** A recorded translation: copy it to `next` and rewrite (ingress: a new SYN chooses anew). */
export function emitKnownConnection(asm: Assembler, hook: NodePortHook): void {
  const f = FRAME;
  asm.comment('a connection translated before? np_nat holds its next tuple').mapLookup(NP_MAP.nat, f.key);
  if (hook === 'egress') {
    asm
      .jeq(R0, 0, 'pass')
      .ldxw(R1, R0, nv.flags)
      .comment('egress translates replies only')
      .jset(R1, NAT_FLAG.reverse, 'known')
      .ja('pass');
  } else {
    asm
      .jeq(R0, 0, 'choose')
      .ldxw(R1, R0, nv.flags)
      .jset(R1, NAT_FLAG.reverse, 'known')
      .comment('a SYN on a forward entry opens a new connection on a reused tuple: choose again')
      .ldxw(R2, R10, f.tcpFlags)
      .and64(R2, TCP_FLAG.SYN | TCP_FLAG.ACK)
      .jeq(R2, TCP_FLAG.SYN, 'choose');
  }
  asm
    .label('known')
    .copy('dw', R10, f.next, R0, 0, R1)
    .copy('dw', R10, f.next + 8, R0, 8, R1)
    .ja('rewrite');
}

/** {destination, port, protocol} in np_svc: r7 = id, r8 = backend count, r9 = affinity timeout. */
export function emitServiceLookup(asm: Assembler): void {
  const f = FRAME;
  asm
    .label('choose')
    .comment('a node port or load-balancer port? look {destination, port, protocol} up')
    .copy('w', R10, f.svcKey + sk.vip, R10, f.key + nk.daddr, R1)
    .copy('h', R10, f.svcKey + sk.port, R10, f.key + nk.dport, R1)
    .copy('b', R10, f.svcKey + sk.proto, R10, f.key + nk.proto, R1)
    .st('b', R10, f.svcKey + sk.node, 0)
    .mapLookup(NP_MAP.services, f.svcKey)
    .jeq(R0, 0, 'not_service_port')
    .ldxw(R7, R0, sv.id)
    .ldxw(R8, R0, sv.count)
    .ldxw(R9, R0, sv.affinity)
    .comment('no ready backend (or none on this node under Local): refused')
    .jeq(R8, 0, 'refuse')
    .jeq(R9, 0, 'pick');
}

/** ClientIP affinity: the client's remembered backend while fresh and still in its slot. */
export function emitClientAffinity(asm: Assembler): void {
  const f = FRAME;
  asm
    .comment("ClientIP affinity: the client's remembered backend, if fresh and still in its slot")
    .copy('w', R10, f.affKey + ak.client, R10, f.key + nk.saddr, R1)
    .stx('w', R10, f.affKey + ak.id, R7);
  emitAffinityHit(asm, MAPS, f);
}

export function emitPick(asm: Assembler): void {
  emitUniformPick(asm, MAPS, FRAME);
}

/**
 * r0 = the backend. The next tuple: client → backend (source kept); remember the backend for
 * ClientIP affinity; a backend on another node goes on to the source translation.
 */
export function emitChosen(asm: Assembler): void {
  const f = FRAME;
  asm
    .label('chosen')
    .comment('r0 = the backend: the client keeps its address, the destination becomes the backend')
    .copy('w', R10, f.next + nv.saddr, R10, f.key + nk.saddr, R1)
    .copy('h', R10, f.next + nv.sport, R10, f.key + nk.sport, R1)
    .ldxw(R1, R0, bv.addr)
    .stx('w', R10, f.next + nv.daddr, R1)
    .stx('w', R10, f.affValue + av.addr, R1)
    .ldxh(R1, R0, bv.port)
    .stx('h', R10, f.next + nv.dport, R1)
    .stx('h', R10, f.affValue + av.port, R1)
    .ldxh(R1, R0, bv.pad)
    .st('w', R10, f.next + nv.flags, NAT_FLAG.forward)
    .st('w', R10, f.revValue + nv.flags, NAT_FLAG.reverse)
    .jne(R1, NP_BACKEND_REMOTE, 'affinity')
    .st('w', R10, f.next + nv.flags, NAT_FLAG.forward | NAT_FLAG.redirect)
    .st('w', R10, f.revValue + nv.flags, NAT_FLAG.reverse | NAT_FLAG.redirect)
    .label('affinity')
    .jeq(R9, 0, 'record');
  emitAffinityRecord(asm, MAPS, f);
}

/** The reverse entry's value: the replies leave with the original tuple, swapped. */
export function emitReverseValue(asm: Assembler): void {
  const f = FRAME;
  asm
    .copy('w', R10, f.revValue + nv.saddr, R10, f.key + nk.daddr, R1)
    .copy('w', R10, f.revValue + nv.daddr, R10, f.key + nk.saddr, R1)
    .copy('h', R10, f.revValue + nv.sport, R10, f.key + nk.dport, R1)
    .copy('h', R10, f.revValue + nv.dport, R10, f.key + nk.sport, R1);
}

/** The reverse entry's key: the reply's tuple, i.e. the next tuple swapped. */
export function emitReverseKey(asm: Assembler): void {
  const f = FRAME;
  asm
    .copy('w', R10, f.revKey + nk.saddr, R10, f.next + nv.daddr, R1)
    .copy('w', R10, f.revKey + nk.daddr, R10, f.next + nv.saddr, R1)
    .copy('h', R10, f.revKey + nk.sport, R10, f.next + nv.dport, R1)
    .copy('h', R10, f.revKey + nk.dport, R10, f.next + nv.sport, R1)
    .copy('b', R10, f.revKey + nk.proto, R10, f.key + nk.proto, R1)
    .st('b', R10, f.revKey + nk.pad, 0)
    .st('h', R10, f.revKey + nk.pad2, 0);
}

/**
 * Both entries of the connection. A backend on another node: the source becomes the node's
 * fabric address and a random port of SNAT_PORTS whose reverse entry is free (BPF_NOEXIST), so
 * two clients never share a reply tuple; all tries taken → drop (the client retries).
 */
function emitRecord(asm: Assembler, addresses: NodePortAddresses): void {
  const f = FRAME;
  asm.label('record');
  emitReverseValue(asm);
  asm.ldxw(R1, R10, f.next + nv.flags).jset(R1, NAT_FLAG.redirect, 'snat');
  emitReverseKey(asm);
  asm
    .mapUpdate(NP_MAP.nat, f.revKey, f.revValue)
    .ja('forward_entry')
    .label('snat')
    .comment("backend on another node: source = this node's fabric address and a free port")
    .st('w', R10, f.next + nv.saddr, addressAsLoaded(addresses.snat));
  for (let attempt = 0; attempt < SNAT_TRIES; attempt++) {
    asm
      .call('get_prandom_u32')
      .alu32('mod', R0, SNAT_PORTS.count)
      .add32(R0, SNAT_PORTS.first)
      .be(R0, 16)
      .stx('h', R10, f.next + nv.sport, R0);
    emitReverseKey(asm);
    asm.mapUpdate(NP_MAP.nat, f.revKey, f.revValue, BPF_NOEXIST).jeq(R0, 0, 'forward_entry');
  }
  asm
    .comment('no free source port: drop, the client retries')
    .exitWith(TcAction.SHOT)
    .label('forward_entry')
    .mapUpdate(NP_MAP.nat, f.key, f.next)
    .ja('rewrite');
}

/**
 * Refused: a load-balancer address has no listener of its own, so its connection is sent to the
 * node's own address (same port) where the stack answers RST / port unreachable, and the answer
 * is translated back. The node's own address needs nothing: its stack answers already.
 */
export function emitRefuse(asm: Assembler, addresses: NodePortAddresses): void {
  const f = FRAME;
  const own = addressAsLoaded(addresses.own);
  asm
    .label('not_service_port')
    .comment('not a service port: refused if the address is a load-balancer address, else pass')
    .st('h', R10, f.svcKey + sk.port, 0)
    .st('b', R10, f.svcKey + sk.proto, 0)
    .mapLookup(NP_MAP.services, f.svcKey)
    .jeq(R0, 0, 'pass')
    .label('refuse')
    .comment("refused: to the node's own address, whose stack answers with RST or port unreachable")
    .ldxw(R1, R10, f.key + nk.daddr)
    .jmp32('jeq', R1, own, 'pass')
    .copy('dw', R10, f.next, R10, f.key, R1)
    .copy('dw', R10, f.next + 8, R10, f.key + 8, R1)
    .st('w', R10, f.next + nv.daddr, own)
    .st('w', R10, f.next + nv.flags, NAT_FLAG.forward)
    .st('w', R10, f.revValue + nv.flags, NAT_FLAG.reverse);
  emitReverseValue(asm);
  emitReverseKey(asm);
  asm.mapUpdate(NP_MAP.nat, f.revKey, f.revValue).ja('forward_entry');
}

/** One field from `key` to `next`: checksums fixed by difference, then the bytes stored. */
function emitRewriteField(
  asm: Assembler,
  name: string,
  field: { key: number; next: number; packet: number; size: 'w' | 'h'; address: boolean },
): void {
  const f = FRAME;
  const bytes = field.size === 'w' ? 4 : 2;
  const done = `rewrote_${name}`;
  asm
    .ldx(field.size, R7, R10, f.key + field.key)
    .ldx(field.size, R8, R10, f.next + field.next)
    .jeq(R7, R8, done)
    .mov64(R1, R6)
    .ldxw(R2, R10, f.l4Csum)
    .mov64(R3, R7)
    .mov64(R4, R8)
    .ldxw(R5, R10, f.l4Flags)
    .or64(R5, bytes | (field.address ? BPF_F_PSEUDO_HDR : 0))
    .call('l4_csum_replace')
    .jne(R0, 0, 'drop');
  if (field.address)
    asm
      .mov64(R1, R6)
      .mov64(R2, PKT.ipCsum)
      .mov64(R3, R7)
      .mov64(R4, R8)
      .mov64(R5, 4)
      .call('l3_csum_replace')
      .jne(R0, 0, 'drop');
  asm
    .mov64(R1, R6)
    .mov64(R2, field.packet)
    .stackAddress(R3, f.next + field.next)
    .mov64(R4, bytes)
    .mov64(R5, 0)
    .call('skb_store_bytes')
    .jne(R0, 0, 'drop')
    .label(done);
}

/** The packet gets the next tuple; then it goes on (or, ingress, out the fabric again). */
function emitRewrite(asm: Assembler, hook: NodePortHook): void {
  asm.label('rewrite').comment('rewrite addresses and ports to the next tuple, checksums by difference');
  emitRewriteField(asm, 'saddr', {
    key: nk.saddr,
    next: nv.saddr,
    packet: PKT.saddr,
    size: 'w',
    address: true,
  });
  emitRewriteField(asm, 'daddr', {
    key: nk.daddr,
    next: nv.daddr,
    packet: PKT.daddr,
    size: 'w',
    address: true,
  });
  emitRewriteField(asm, 'sport', {
    key: nk.sport,
    next: nv.sport,
    packet: PKT.sport,
    size: 'h',
    address: false,
  });
  emitRewriteField(asm, 'dport', {
    key: nk.dport,
    next: nv.dport,
    packet: PKT.dport,
    size: 'h',
    address: false,
  });
  if (hook === 'ingress')
    asm
      .ldxw(R1, R10, FRAME.next + nv.flags)
      .jset(R1, NAT_FLAG.redirect, 'redirect')
      .exitWith(TcAction.NEXT)
      .label('redirect')
      .comment('out the fabric again, next hop and its MAC from the routing and neighbour tables')
      .ldxw(R1, R6, SKB.ifindex)
      .mov64(R2, 0)
      .mov64(R3, 0)
      .mov64(R4, 0)
      .call('redirect_neigh')
      .exit();
  else asm.exitWith(TcAction.NEXT);
  asm.label('drop').exitWith(TcAction.SHOT).label('pass').exitWith(TcAction.NEXT);
}

export function nodePortProgram(hook: NodePortHook, addresses: NodePortAddresses): AssembledProgram {
  const asm = new Assembler();
  emitParse(asm);
  emitKnownConnection(asm, hook);
  if (hook === 'ingress') {
    emitServiceLookup(asm);
    emitClientAffinity(asm);
    emitPick(asm);
    emitChosen(asm);
    emitRecord(asm, addresses);
    emitRefuse(asm, addresses);
  }
  emitRewrite(asm, hook);
  return asm.assemble();
}
