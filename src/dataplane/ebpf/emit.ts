/**
 * Code sequences the node's programs share (the tcx policy programs and the XDP prefilter), so
 * they count and read packets the same way, and the names of the policy programs' subprograms.
 */
import { R0, R1, R2, R3, R4, R5, R6, R10, type Assembler, type Register } from '../../bpf/index.js';
import { counterValue, MAP, NODE_CONFIG_FLAG, nodeConfig } from './layout.js';

/** The bpf-to-bpf subprograms of a policy program, by label. */
export const SUBPROGRAMS = {
  count: 'sub_count',
  inSet: 'sub_in_set',
  inPortSet: 'sub_in_portset',
  /** One packet more in a flow aggregate: Log rules always; allow/deny tails and the established path when flows are on. */
  flow: 'sub_flow',
} as const;
export type Subprogram = (typeof SUBPROGRAMS)[keyof typeof SUBPROGRAMS];

/**
 * r0 = a counter (counterValue): one packet of `bytes` bytes more. Plain adds: counters are
 * per-CPU, so no other CPU writes this value. Clobbers r1.
 */
export function emitCountPacket(asm: Assembler, bytes: Register): void {
  const c = counterValue.offsets;
  asm.addToU64(R0, c.packets, 1, R1).addToU64(R0, c.bytes, bytes, R1);
}

/**
 * Goes to `off` unless the node's config turns flow aggregates on: a direct load from the config
 * array (no helper call). Clobbers r2.
 */
export function emitIfFlowsOn(asm: Assembler, off: string): void {
  asm
    .comment('flow aggregates on (node config)?')
    .ldMapValue(R2, MAP.config, nodeConfig.offsets.flags)
    .ldxw(R2, R2, 0)
    .and64(R2, NODE_CONFIG_FLAG.flowEvents)
    .jeq(R2, 0, off);
}

/**
 * Calls the flow subprogram for the slot in r1, from a policy program's main frame (r6 = ctx,
 * FRAME.now holds the time): `verdict` is a FLOW_VERDICT, `connections` a FLOW_CONNECTIONS.
 */
export function emitFlowCall(asm: Assembler, verdict: number, connections: number): void {
  asm.mov64(R2, R10).mov64(R3, R6).mov64(R4, verdict).mov64(R5, connections).callLocal(SUBPROGRAMS.flow);
}
