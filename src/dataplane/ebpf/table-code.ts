/**
 * The decision-table lookup that replaces the rule walk of a table-mode program (see tables.ts
 * and layout.ts for the maps and keys). Its length does not depend on the rules, and neither do
 * its constants (the hook's table index and the fail-closed slot are allocated stably), so a rule
 * change is a map update and never a reload:
 *
 *   table = policy[index]                       (array of maps; empty: fail closed)
 *   class = table[peer key of the remote] ?: 0  (LPM; a miss is class 0, the rest)
 *   entry = table[port key of class, protocol, destination port]   (LPM; a miss: fail closed)
 *   count the Log rules and add to their aggregates, count the Pass rule, count the deciding rule,
 *   then the allow or deny tail with its slot in r1: what the walk does, in the same order.
 *
 * On entry r6 = ctx, r7 = pointer to the remote address (16 bytes), r8 = destination port (host order), r9 = protocol;
 * r7 and r8 are reused afterwards (the tails do not read them).
 */
import { R0, R1, R2, R3, R6, R7, R8, R9, R10, type Assembler } from '../../bpf/index.js';
import {
  FLOW_CONNECTIONS,
  FLOW_VERDICT,
  FRAME,
  IPPROTO,
  MAP,
  SKB,
  TABLE_KEY_HEADER_BITS,
  TABLE_KEY_KIND,
  TABLE_LOG_SLOTS,
  TABLE_OTHER_PROTOCOL,
  tablePeerKey,
  tablePortKey,
  tableValue,
} from './layout.js';
import { emitFlowCall, SUBPROGRAMS } from './emit.js';
import { ADDR16_BYTES } from './addr16.js';
import type { RuleEmitter } from './rules.js';

export const TABLE_LABELS = { fail: 'fail_table' } as const;

const PK = tablePeerKey.offsets;
const QK = tablePortKey.offsets;
const V = tableValue.offsets;
/** Peer lookups match the whole address (16 bytes, IPv4 mapped); port lookups the port and its padding. */
const PEER_LOOKUP_PREFIXLEN = TABLE_KEY_HEADER_BITS + ADDR16_BYTES * 8;
const PORT_LOOKUP_PREFIXLEN = TABLE_KEY_HEADER_BITS + 32;

export function emitTableDecision(asm: Assembler, rules: RuleEmitter, index: number): void {
  const key = FRAME.tableKey;
  asm
    .comment(`decision table ${index}: the peer key of the remote address (r7 points at it)`)
    .st('w', R10, key + PK.prefixlen, PEER_LOOKUP_PREFIXLEN)
    .st('w', R10, key + PK.kind, TABLE_KEY_KIND.peer); // kind, pad, pad2
  for (let w = 0; w < ADDR16_BYTES; w += 4) asm.copy('w', R10, key + PK.addr + w, R7, w, R1);
  asm
    .comment("the hook's table (r7) from the node's policy map")
    .st('w', R10, FRAME.tableIndex, index)
    .mapLookup(MAP.tables, FRAME.tableIndex)
    .jeq(R0, 0, TABLE_LABELS.fail)
    .mov64(R7, R0)
    .comment('peer class: longest prefix of the remote address; none is class 0')
    .mov64(R1, R7)
    .stackAddress(R2, key)
    .call('map_lookup_elem')
    .mov64(R1, 0)
    .jeq(R0, 0, 'table_class')
    .ldxh(R1, R0, V.class)
    .label('table_class')
    .comment('port key in place: class, protocol (other protocols share one), destination port big-endian')
    .st('w', R10, key + QK.prefixlen, PORT_LOOKUP_PREFIXLEN)
    .stx('h', R10, key + QK.class, R1)
    .st('b', R10, key + QK.kind, TABLE_KEY_KIND.port)
    .mov64(R2, R9);
  for (const proto of [IPPROTO.TCP, IPPROTO.UDP, IPPROTO.SCTP, IPPROTO.ICMP])
    asm.jeq(R9, proto, 'table_proto');
  asm
    .mov64(R2, TABLE_OTHER_PROTOCOL)
    .label('table_proto')
    .stx('b', R10, key + QK.proto, R2)
    .mov64(R3, R8)
    .be(R3, 16)
    .stx('h', R10, key + QK.port, R3)
    .st('h', R10, key + QK.pad, 0)
    .mov64(R1, R7)
    .stackAddress(R2, key)
    .call('map_lookup_elem')
    .jeq(R0, 0, TABLE_LABELS.fail)
    .mov64(R8, R0)
    .comment(
      `the entry (r8): up to ${TABLE_LOG_SLOTS} Log rules, each counted and aggregated, in rule order`,
    );
  for (let i = 0; i < TABLE_LOG_SLOTS; i++) {
    asm
      .ldxb(R1, R8, V.logCount)
      .jle(R1, i, 'table_logged')
      .ldxw(R1, R8, V.logs + 4 * i)
      .ldxw(R2, R6, SKB.len);
    rules.call(SUBPROGRAMS.count);
    asm.ldxw(R1, R8, V.logs + 4 * i);
    emitFlowCall(asm, FLOW_VERDICT.log, FLOW_CONNECTIONS.ifOpening);
    rules.calls.add(SUBPROGRAMS.flow);
  }
  asm
    .label('table_logged')
    .comment('the Pass rule that led to the Kubernetes tier counts, as in the walk')
    .ldxw(R1, R8, V.passSlot)
    .jeq(R1, 0, 'table_decide')
    .ldxw(R2, R6, SKB.len);
  rules.call(SUBPROGRAMS.count);
  asm
    .label('table_decide')
    .comment('the deciding rule: count, then its tail with its slot in r1')
    .ldxw(R1, R8, V.slot)
    .ldxw(R2, R6, SKB.len);
  rules.call(SUBPROGRAMS.count);
  asm
    .ldxw(R1, R8, V.slot)
    .ldxb(R2, R8, V.verdict)
    .jeq(R2, FLOW_VERDICT.allow, rules.far('allow'))
    .ja(rules.far('deny'));
  rules.reachable = false;
}
