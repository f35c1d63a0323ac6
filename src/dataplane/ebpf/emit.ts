/**
 * Code sequences the node's programs share (the tcx policy programs and the XDP prefilter), so
 * both count and read packets the same way.
 */
import { R0, R1, type Assembler, type Register } from '../../bpf/index.js';
import { counterValue } from './layout.js';

/**
 * r0 = a counter (counterValue): one packet of `bytes` bytes more. Plain adds: counters are
 * per-CPU, so no other CPU writes this value. Clobbers r1.
 */
export function emitCountPacket(asm: Assembler, bytes: Register): void {
  const c = counterValue.offsets;
  asm.addToU64(R0, c.packets, 1, R1).addToU64(R0, c.bytes, bytes, R1);
}
