/**
 * The fabric interface's XDP program: the prefilter first (deny-listed sources dropped, counted
 * per list), then the node-port load balancer's forward path, in one program.
 *
 * Why one program and not a tail call or freplace chain: an interface has one XDP program, and
 * one program is swapped on its pinned link in one BPF_LINK_UPDATE, so the prefilter and the load
 * balancer change together or not at all; the verifier sees the whole path, the order (prefilter
 * before translation) is the code's order, and no prog array has to be kept in step with the
 * link. freplace needs BTF of the program it extends, which the generated code has none of.
 *
 * The load balancer part is the tcx ingress program's (nodeport-programs.ts: the same maps, the
 * same lookups, choice and records in np_nat). A connection to a backend on this node, and a
 * refused one, is recorded, rewritten and passed to the stack (XDP_PASS), which routes it to the
 * pod's host veth, where the tcx policy programs judge the translated packet. The tcx ingress
 * program behind it finds nothing left to translate.
 *
 * What XDP cannot do stays at tcx: the replies of connections to local backends leave by the
 * fabric's egress (tcx egress); connections source-translated to a backend on another node, both
 * ways, pass XDP untouched (see emitRewrite); interfaces without XDP keep the whole job at tcx.
 * Checksums are fixed by difference (RFC 1624) in the program: XDP has no l3/l4_csum_replace.
 */
import {
  Assembler,
  R1,
  R2,
  R3,
  R4,
  R6,
  R7,
  R8,
  R10,
  XdpAction,
  type AssembledProgram,
} from '../../bpf/index.js';
import { IPPROTO, XDP_MD } from './layout.js';
import { NAT_FLAG, NP_MAP, natKey, natValue } from './nodeport-layout.js';
import {
  emitChosen,
  emitClientAffinity,
  emitParse,
  emitKnownConnection,
  emitPick,
  emitRefuse,
  emitReverseKey,
  emitReverseValue,
  emitServiceLookup,
  FRAME,
  L4_OFF,
  PKT,
  type NodePortAddresses,
} from './nodeport-programs.js';
import { emitPrefilter, PREFILTER_PROGRAM_NAME } from './prefilter.js';

export const FABRIC_XDP_PROGRAM_NAME = 'sy_fabric_xdp';

/** The prefilter alone keeps its name (sy_prefilter); with the load balancer, sy_fabric_xdp. */
export function fabricXdpProgramName(parts: FabricXdpParts): string {
  return parts.nodePorts ? FABRIC_XDP_PROGRAM_NAME : PREFILTER_PROGRAM_NAME;
}

export interface FabricXdpParts {
  /** The node has prefilter lists: their check comes first. */
  prefilter: boolean;
  /** The node's node-port addresses when the load balancer runs at XDP. */
  nodePorts?: NodePortAddresses;
}

const nk = natKey.offsets;
const nv = natValue.offsets;

/** r7 += the one's-complement difference of a 32-bit field (as loaded) from `key` to `next`. */
function emitAddressDelta(asm: Assembler, keyOff: number, nextOff: number): void {
  for (const [off, sign] of [
    [keyOff, 'old'],
    [nextOff, 'new'],
  ] as const) {
    asm.ldxw(R1, R10, off).mov64(R2, R1).and64(R1, 0xffff).rsh64(R2, 16);
    if (sign === 'old') asm.xor64(R1, 0xffff).xor64(R2, 0xffff);
    asm.add64(R7, R1).add64(R7, R2);
  }
}

/** r7 += the one's-complement difference of a 16-bit field (as loaded) from `key` to `next`. */
function emitPortDelta(asm: Assembler, keyOff: number, nextOff: number): void {
  asm.ldxh(R1, R10, keyOff).xor64(R1, 0xffff).add64(R7, R1).ldxh(R1, R10, nextOff).add64(R7, R1);
}

/**
 * The checksum at r2 + `offset` (as loaded) updated by the difference in `delta`: RFC 1624's
 * HC' = ~(~HC + ~m + m'), folded to 16 bits. A UDP checksum of zero (none) stays zero, and a
 * computed zero is sent as 0xffff.
 */
function emitChecksumUpdate(asm: Assembler, offset: number, delta: typeof R7, udp: boolean): void {
  const done = `csum_done_${offset}`;
  asm.ldxh(R3, R2, offset);
  if (udp) asm.jeq(R3, 0, done);
  asm.xor64(R3, 0xffff).add64(R3, delta);
  for (let i = 0; i < 3; i++) asm.mov64(R4, R3).rsh64(R4, 16).and64(R3, 0xffff).add64(R3, R4);
  asm.xor64(R3, 0xffff).and64(R3, 0xffff);
  if (udp) asm.jne(R3, 0, `${done}_store`).mov64(R3, 0xffff).label(`${done}_store`);
  asm.stx('h', R2, offset, R3).label(done);
}

/**
 * Both entries of a connection to a backend on this node (or a refusal): the same records the tcx
 * program writes. A backend on another node is left to tcx before anything is recorded: its
 * source translation has to leave by the fabric again (below).
 */
function emitRecord(asm: Assembler): void {
  const f = FRAME;
  asm.label('record');
  emitReverseValue(asm);
  asm
    .ldxw(R1, R10, f.next + nv.flags)
    .comment('a backend on another node: untouched to tcx (source translation, bpf_redirect_neigh)')
    .jset(R1, NAT_FLAG.redirect, 'pass');
  emitReverseKey(asm);
  asm.mapUpdate(NP_MAP.nat, f.revKey, f.revValue).label('forward_entry').mapUpdate(NP_MAP.nat, f.key, f.next);
}

/**
 * The translation in the packet: addresses, ports and checksums, then to the node's stack.
 * Entries that leave by the fabric again (source-translated connections, both ways) pass
 * untouched: the tcx program translates them and sends them on with bpf_redirect_neigh. XDP_TX
 * could send them from here, but on a veth a frame sent back by XDP is only received when the
 * peer runs NAPI (an XDP program or GRO on the peer), which the lab's fabric does not.
 */
function emitRewrite(asm: Assembler): void {
  const f = FRAME;
  asm
    .label('rewrite')
    .ldxw(R1, R10, f.next + nv.flags)
    .jset(R1, NAT_FLAG.redirect, 'pass')
    .comment('the differences of the pseudo header (addresses) and of the ports, one sum each');
  asm.mov64(R7, 0);
  emitAddressDelta(asm, f.key + nk.saddr, f.next + nv.saddr);
  emitAddressDelta(asm, f.key + nk.daddr, f.next + nv.daddr);
  asm.mov64(R8, R7);
  emitPortDelta(asm, f.key + nk.sport, f.next + nv.sport);
  emitPortDelta(asm, f.key + nk.dport, f.next + nv.dport);
  asm
    .comment('helpers invalidated the packet pointers: load and check them again')
    .ldxw(R2, R6, XDP_MD.data)
    .ldxw(R3, R6, XDP_MD.dataEnd)
    .checkBounds(R2, L4_OFF + 8, R3, R4, 'pass')
    .ldxb(R1, R10, f.key + nk.proto)
    .jeq(R1, IPPROTO.UDP, 'l4_udp')
    .checkBounds(R2, L4_OFF + 20, R3, R4, 'pass');
  emitChecksumUpdate(asm, PKT.tcpCsum, R7, false);
  asm.ja('l3').label('l4_udp');
  emitChecksumUpdate(asm, PKT.udpCsum, R7, true);
  asm.label('l3');
  emitChecksumUpdate(asm, PKT.ipCsum, R8, false);
  asm
    .copy('w', R2, PKT.saddr, R10, f.next + nv.saddr, R1)
    .copy('w', R2, PKT.daddr, R10, f.next + nv.daddr, R1)
    .copy('h', R2, PKT.sport, R10, f.next + nv.sport, R1)
    .copy('h', R2, PKT.dport, R10, f.next + nv.dport, R1)
    .comment("to the node's stack: routed to the pod's host veth, where policy judges it")
    .exitWith(XdpAction.PASS);
}

/** The fabric's XDP program: the prefilter when the node has lists, then the node-port path. */
export function fabricXdpProgram(parts: FabricXdpParts): AssembledProgram {
  const asm = new Assembler().mov64(R6, R1);
  if (parts.prefilter) emitPrefilter(asm, { drop: 'drop', pass: parts.nodePorts ? 'lb' : 'pass' });
  if (parts.nodePorts) {
    // The prefilter's helper calls clobbered r1: the context is in r6.
    asm.label('lb').mov64(R1, R6);
    emitParse(asm, XDP_MD);
    emitKnownConnection(asm, 'ingress');
    emitServiceLookup(asm);
    emitClientAffinity(asm);
    emitPick(asm);
    emitChosen(asm);
    emitRecord(asm);
    asm.ja('rewrite');
    emitRefuse(asm, parts.nodePorts);
    emitRewrite(asm);
  }
  // Only the prefilter drops by label (the load balancer's drop exits where it is).
  if (parts.prefilter) asm.label('drop').exitWith(XdpAction.DROP);
  return asm.label('pass').exitWith(XdpAction.PASS).assemble();
}
