/**
 * Code both load balancers emit (the connect-time one, services-programs.ts, and the node-port
 * one, nodeport-programs.ts): the ClientIP affinity check and record, and the uniform pick. They
 * differ in their maps and in how the affinity key is built (the caller writes it on the stack).
 *
 * Registers on entry: r7 service id, r8 backend count (> 0), r9 affinity timeout in seconds.
 * Labels: `pick` (emitted by emitUniformPick); the caller's `chosen` (r0 = the backend) and
 * `refuse`.
 */
import { R0, R1, R2, R3, R7, R8, R9, R10, type Assembler } from '../../bpf/index.js';
import { affinityValue, backendKey, backendValue } from './services-layout.js';

/** Field offsets of a backend value and an affinity value ({addr, port, …}, their address 4 or 16 bytes). */
interface AddressLayout {
  offsets: { addr: number; port: number };
}

export interface BalancerMaps {
  affinity: string;
  backends: string;
  /** The backend map's value layout: backendValue (16-byte addresses) or the node ports' own. */
  backendValue: AddressLayout;
  /** The affinity map's value layout (affinityValue or the node ports' own, same address width). */
  affinityValue: AddressLayout & { offsets: { slot: number; pad: number; lastSeen: number } };
}

/** Stack offsets (from r10) of the areas the shared code uses. */
export interface BalancerFrame {
  affKey: number;
  /** affinityValue. */
  affValue: number;
  /** backendKey. */
  backendKey: number;
}

const NS_PER_SECOND = 1_000_000_000;
const bk = backendKey.offsets;

/** The connect-time balancer's layouts (services-layout.ts). */
export const SERVICE_LAYOUTS = { backendValue, affinityValue } as const;

/** u32 words of an address in this layout: 1 (IPv4) or 4 (16-byte addresses). */
export function addressWords(layout: AddressLayout): number {
  return (layout.offsets.port - layout.offsets.addr) / 4;
}

/** The remembered backend (its key at affKey), if fresh and still in its slot: `chosen`, else `pick`. */
export function emitAffinityHit(asm: Assembler, maps: BalancerMaps, f: BalancerFrame): void {
  const bv = maps.backendValue.offsets;
  const av = maps.affinityValue.offsets;
  const words = addressWords(maps.backendValue);
  asm
    .mapLookup(maps.affinity, f.affKey)
    .jeq(R0, 0, 'pick')
    .copy('w', R10, f.affValue + av.slot, R0, av.slot, R2);
  for (let w = 0; w < words; w++) asm.copy('w', R10, f.affValue + av.addr + 4 * w, R0, av.addr + 4 * w, R2);
  asm
    .copy('h', R10, f.affValue + av.port, R0, av.port, R2)
    .copy('dw', R10, f.affValue + av.lastSeen, R0, av.lastSeen, R2)
    .call('ktime_get_ns')
    .ldxdw(R1, R10, f.affValue + av.lastSeen)
    .sub64(R0, R1)
    .mov64(R2, R9)
    .mul64(R2, NS_PER_SECOND)
    .jgt(R0, R2, 'pick')
    .ldxw(R2, R10, f.affValue + av.slot)
    .jge(R2, R8, 'pick')
    .stx('w', R10, f.backendKey + bk.id, R7)
    .stx('w', R10, f.backendKey + bk.slot, R2)
    .mapLookup(maps.backends, f.backendKey)
    .jeq(R0, 0, 'pick');
  for (let w = 0; w < words; w++)
    asm
      .ldxw(R2, R0, bv.addr + 4 * w)
      .ldxw(R3, R10, f.affValue + av.addr + 4 * w)
      .jne(R2, R3, 'pick');
  asm
    .ldxh(R2, R0, bv.port)
    .ldxh(R3, R10, f.affValue + av.port)
    .jne(R2, R3, 'pick')
    .ja('chosen');
}

/** Uniform choice (count > 0 was checked before): r0 = the backend, or `refuse`. */
export function emitUniformPick(asm: Assembler, maps: BalancerMaps, f: BalancerFrame): void {
  asm
    .label('pick')
    .comment('pick a backend slot uniformly at random')
    .call('get_prandom_u32')
    .alu32('mod', R0, R8)
    .stx('w', R10, f.backendKey + bk.id, R7)
    .stx('w', R10, f.backendKey + bk.slot, R0)
    .mapLookup(maps.backends, f.backendKey)
    // A slot below count is always filled (the sync writes slots before raising count).
    .jeq(R0, 0, 'refuse');
}

/** Remembers the chosen backend (its address and port already at affValue) for the client. */
export function emitAffinityRecord(asm: Assembler, maps: BalancerMaps, f: BalancerFrame): void {
  const av = maps.affinityValue.offsets;
  asm
    .comment('affinity: remember the backend for the client')
    .copy('w', R10, f.affValue + av.slot, R10, f.backendKey + bk.slot, R2)
    .st('h', R10, f.affValue + av.pad, 0);
  // C padding before lastSeen (4-byte addresses leave a word there, 16-byte ones none).
  if (av.lastSeen > av.pad + 2) asm.st('w', R10, f.affValue + av.pad + 2, 0);
  asm
    .call('ktime_get_ns')
    .stx('dw', R10, f.affValue + av.lastSeen, R0)
    .mapUpdate(maps.affinity, f.affKey, f.affValue);
}
