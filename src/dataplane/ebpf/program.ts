/**
 * A whole policy program for one endpoint and direction:
 *
 *   parse → conntrack (established, reply, related: pass) → fail-closed exits
 *   → [ingress: node-originated: allow] → global tier → Kubernetes tier → default
 *     (table mode: one decision-table lookup instead, see table-code.ts)
 *   → allow (new conntrack entry, flow aggregate, TCX_NEXT) | deny (flow aggregate, SHOT)
 *
 * followed by the bpf-to-bpf subprograms the rules call (count, set membership, IP-port
 * membership, flow aggregate). Every decision adds its packet to a flow aggregate in the node's
 * `flows` map (allow: with a new connection; deny: the dropped packet, fail-closed drops
 * included); so do the later packets of an allowed connection in its original direction (the
 * established path in ct-code.ts). Allow and deny aggregates are written only while the node's
 * config array has NODE_CONFIG_FLAG.flowEvents set; Log rules' always. Maps are referenced by
 * name; they become fds only when the program is loaded, so generating a program needs no kernel.
 */
import { createHash } from 'node:crypto';
import {
  Assembler,
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
  type AssembledProgram,
  type Instruction,
  type Register,
} from '../../bpf/index.js';
import { defaultRuleId, failClosedRuleId } from '../../ir/rule-ids.js';
import type { Direction, RuleSet } from '../../ir/types.js';
import { CT_LABELS, emitConntrackCreate, emitConntrackLookup } from './ct-code.js';
import { emitCountPacket, emitFlowCall, emitIfFlowsOn, SUBPROGRAMS, type Subprogram } from './emit.js';
import {
  FAIL_CLOSED,
  FLOW_CONNECTIONS,
  FLOW_VERDICT,
  flowKey,
  flowValue,
  FRAME,
  IPPROTO,
  MAP,
  portSetKey,
  setLpmKey,
  SKB,
  TABLE_FAIL_CLOSED,
  TCP_FLAG,
  TCX,
  ctKey,
  SET_LOOKUP_PREFIXLEN,
  type FailClosedReason,
} from './layout.js';
import { ADDR16_BYTES } from './addr16.js';
import { hookKey, slotKey, type Allocation } from './node.js';
import { emitParse, PARSE_LABELS } from './parse.js';
import { RuleEmitter, type RuleNumbers } from './rules.js';
import { emitTableDecision, TABLE_LABELS } from './table-code.js';

/** bpf_map_update_elem flag: insert only (include/uapi/linux/bpf.h). */
const BPF_NOEXIST = 1;

const FAIL_LABELS: Record<FailClosedReason, string> = {
  'ipv6-headers': PARSE_LABELS.ipv6Headers,
  'ipv6-mapped': PARSE_LABELS.ipv6Mapped,
  fragment: PARSE_LABELS.fragment,
  malformed: PARSE_LABELS.malformed,
  invalid: CT_LABELS.invalid,
};

/** Kernel name of a policy program: `sy_i_`/`sy_e_` and a hash of the endpoint (15 chars max). */
export function programName(endpoint: string, direction: Direction): string {
  return `sy_${direction === 'ingress' ? 'i' : 'e'}_${createHash('sha256').update(endpoint).digest('hex').slice(0, 8)}`;
}

function numbersFor(rs: RuleSet, alloc: Allocation): RuleNumbers {
  const need = (table: Record<string, number>, key: string, what: string): number => {
    const n = table[key];
    if (n === undefined) throw new Error(`no ${what} allocated for ${key}`);
    return n;
  };
  const slot = (rule: string): number =>
    need(alloc.slots, slotKey({ endpoint: rs.endpoint, direction: rs.direction, rule }), 'counter slot');
  return {
    set: (id) => need(alloc.sets, id, 'set index'),
    portSet: (id) => need(alloc.portSets, id, 'IP-port set index'),
    slot,
    defaultSlot: slot(defaultRuleId(rs.endpoint, rs.direction)),
  };
}

/** r1 = slot, r2 = bytes: adds one packet to a per-CPU counter (no atomics needed per CPU). */
function emitCountSub(asm: Assembler): void {
  asm
    .label(SUBPROGRAMS.count)
    .comment('subprogram count(slot r1, bytes r2): one packet more in the per-CPU counter of the slot')
    .mov64(R6, R2)
    .stx('w', R10, -4, R1)
    .mapLookup(MAP.counters, -4)
    .jeq(R0, 0, 'count_out');
  emitCountPacket(asm, R6);
  asm.label('count_out').exitWith(0);
}

/** Copies the 16-byte address at `from` (a pointer into the caller's frame) to r10 + `to`, through `via`. */
function emitCopyAddress(asm: Assembler, to: number, from: Register, via: Register): void {
  for (let w = 0; w < ADDR16_BYTES; w += 4) asm.copy('w', R10, to + w, from, w, via);
}

/** r1 = set index, r2 = pointer to the address (16 bytes): 1 when the address is in the set (longest prefix of the node trie). */
function emitInSetSub(asm: Assembler): void {
  const key = -setLpmKey.size;
  const o = setLpmKey.offsets;
  asm
    .label(SUBPROGRAMS.inSet)
    .comment('subprogram in_set(set r1, address at r2): 1 when the node trie has the address in the set')
    .st('w', R10, key + o.prefixlen, SET_LOOKUP_PREFIXLEN)
    .stx('w', R10, key + o.set, R1);
  emitCopyAddress(asm, key + o.addr, R2, R3);
  emitLookupAnswer(asm, MAP.ipSets, key, 'in_set_no');
}

/** The answer of a membership subprogram: 1 when the key at `key` is in `map`, else 0. */
function emitLookupAnswer(asm: Assembler, map: string, key: number, miss: string): void {
  asm.mapLookup(map, key).jeq(R0, 0, miss).exitWith(1).label(miss).exitWith(0);
}

/** r1 = set index, r2 = pointer to the address (16 bytes), r3 = port (host order): 1 when (address, port) is a member. */
function emitInPortSetSub(asm: Assembler): void {
  const key = -portSetKey.size;
  const o = portSetKey.offsets;
  asm
    .label(SUBPROGRAMS.inPortSet)
    .comment('subprogram in_portset(set r1, address at r2, port r3): 1 when (address, port) is in the set')
    .stx('w', R10, key + o.set, R1);
  emitCopyAddress(asm, key + o.addr, R2, R4);
  asm.stx('h', R10, key + o.port, R3).st('h', R10, key + o.pad, 0);
  emitLookupAnswer(asm, MAP.portSets, key, 'in_portset_no');
}

/** errno of a BPF_NOEXIST insert that lost the race against another CPU's insert of the same key. */
const EEXIST = 17;

/**
 * r1 = slot of the deciding rule, r2 = the policy program's frame pointer (its conntrack key, the
 * time and the TCP flags are read from FRAME there), r3 = ctx, r4 = verdict (FLOW_VERDICT), r5 =
 * what to add to `connections` (FLOW_CONNECTIONS): one packet more in the flow aggregate of
 * (hook, protocol, verdict, addresses, destination port, slot).
 *
 * The aggregate is looked up and, this CPU's copy being this CPU's alone, added to with plain
 * stores. A missing aggregate (new, or drained by the agent since) is inserted with BPF_NOEXIST;
 * when another CPU inserted the same key in the meantime (EEXIST) the packet is added to that
 * one; any other failure (the map is full) is counted in `flows_lost`.
 */
function emitFlowSub(asm: Assembler): void {
  const key = -flowKey.size;
  const value = key - flowValue.size;
  const lostKey = value - 4;
  const f = flowKey.offsets;
  const v = flowValue.offsets;
  const k = FRAME.key;
  const ct = ctKey.offsets;
  asm
    .label(SUBPROGRAMS.flow)
    .comment(
      'subprogram flow(slot r1, frame r2, ctx r3, verdict r4, connections r5): one packet more in its flow aggregate',
    )
    .mov64(R6, R2)
    .mov64(R7, R3)
    .stx('w', R10, key + f.slot, R1)
    .stx('b', R10, key + f.verdict, R4)
    .st('b', R10, key + f.pad, 0)
    .st('h', R10, key + f.pad2, 0)
    .copy('w', R10, key + f.ifindex, R7, SKB.ifindex, R1)
    .copy('b', R10, key + f.dir, R6, k + ct.dir, R1);
  for (let w = 0; w < ADDR16_BYTES; w += 4)
    asm
      .copy('w', R10, key + f.saddr + w, R6, k + ct.saddr + w, R1)
      .copy('w', R10, key + f.daddr + w, R6, k + ct.daddr + w, R1);
  asm
    .ldxb(R1, R6, k + ct.proto)
    .stx('b', R10, key + f.proto, R1)
    .comment('the destination port of TCP, UDP and SCTP; 0 for the rest (the ICMP echo id is no port)')
    .mov64(R2, 0)
    .jeq(R1, IPPROTO.TCP, 'flow_ported')
    .jeq(R1, IPPROTO.UDP, 'flow_ported')
    .jne(R1, IPPROTO.SCTP, 'flow_port')
    .label('flow_ported')
    .ldxh(R2, R6, k + ct.dport)
    .label('flow_port')
    .stx('h', R10, key + f.dport, R2)
    .comment('connections (r8): as asked, or 1 for a packet that opens one (TCP: SYN without ACK or RST)')
    .mov64(R8, R5)
    .jne(R8, FLOW_CONNECTIONS.ifOpening, 'flow_len')
    .mov64(R8, 1)
    .jne(R1, IPPROTO.TCP, 'flow_len')
    .ldxw(R2, R6, FRAME.l4info)
    .and64(R2, TCP_FLAG.SYN | TCP_FLAG.ACK | TCP_FLAG.RST)
    .mov64(R8, 0)
    .jne(R2, TCP_FLAG.SYN, 'flow_len')
    .mov64(R8, 1)
    .label('flow_len')
    .ldxw(R9, R7, SKB.len)
    .mapLookup(MAP.flows, key)
    .jne(R0, 0, 'flow_add')
    .comment('a new aggregate: this packet alone (other CPUs start from zero)')
    .st('dw', R10, value + v.packets, 1)
    .stx('dw', R10, value + v.bytes, R9)
    .stx('dw', R10, value + v.connections, R8)
    .ldxdw(R1, R6, FRAME.now)
    .stx('dw', R10, value + v.first, R1)
    .stx('dw', R10, value + v.last, R1)
    .mapUpdate(MAP.flows, key, value, BPF_NOEXIST)
    .jeq(R0, 0, 'flow_out')
    .jne(R0, -EEXIST, 'flow_lost')
    .comment('another CPU inserted it first: add to it')
    .mapLookup(MAP.flows, key)
    .jeq(R0, 0, 'flow_lost')
    .label('flow_add')
    .comment("add to this CPU's copy; the first packet this CPU counts sets its first-seen")
    .addToU64(R0, v.packets, 1, R1)
    .addToU64(R0, v.bytes, R9, R1)
    .addToU64(R0, v.connections, R8, R1)
    .ldxdw(R1, R6, FRAME.now)
    .stx('dw', R0, v.last, R1)
    .ldxdw(R2, R0, v.first)
    .jne(R2, 0, 'flow_out')
    .stx('dw', R0, v.first, R1)
    .exitWith(0)
    .label('flow_lost')
    .comment('the map is full (the agent is behind, or more aggregates than it holds): count it lost')
    .st('w', R10, lostKey, 0)
    .mapLookup(MAP.flowsLost, lostKey)
    .jeq(R0, 0, 'flow_out')
    .addToU64(R0, 0, 1, R1)
    .label('flow_out')
    .exitWith(0);
}

/**
 * The flow aggregate of a decision, with the deciding rule's slot in r1, when the node's config
 * turns flow aggregates on (read straight from the config array, no helper call); then on to
 * `done`. FRAME.now must hold the time.
 */
function emitFlowRecord(asm: Assembler, verdict: number, connections: number, done: string): void {
  emitIfFlowsOn(asm, done);
  emitFlowCall(asm, verdict, connections);
}

const SUBPROGRAM_EMITTERS: Record<Subprogram, (asm: Assembler) => void> = {
  [SUBPROGRAMS.count]: emitCountSub,
  [SUBPROGRAMS.inSet]: emitInSetSub,
  [SUBPROGRAMS.inPortSet]: emitInPortSetSub,
  [SUBPROGRAMS.flow]: emitFlowSub,
};

export interface GeneratedProgram {
  name: string;
  endpoint: string;
  direction: Direction;
  program: AssembledProgram;
  /** The maps it refers to (symbolic names). */
  maps: readonly string[];
}

/**
 * The exits parse and conntrack (and in table mode the table lookup) jump to: non-IP passes,
 * each fail-closed reason counts and drops.
 */
function emitFailClosedExits(asm: Assembler, rs: RuleSet, numbers: RuleNumbers, tabled: boolean): void {
  asm.label(PARSE_LABELS.nonIp).comment('not IP (ARP): pass').exitWith(TCX.NEXT);
  asm
    .label(PARSE_LABELS.neighbour)
    .comment('IPv6 neighbour discovery (as ARP for IPv4): pass')
    .exitWith(TCX.NEXT);
  const exits: [string, string][] = FAIL_CLOSED.map((reason) => [reason, FAIL_LABELS[reason]]);
  if (tabled) exits.push([TABLE_FAIL_CLOSED, TABLE_LABELS.fail]);
  for (const [reason, label] of exits) {
    const slot = numbers.slot(failClosedRuleId(rs.endpoint, rs.direction, reason));
    asm.label(label).comment(`fail closed (${reason}): count in slot ${slot}, then drop`);
    asm.mov64(R1, slot).ldxw(R2, R6, SKB.len).callLocal(SUBPROGRAMS.count);
    asm.mov64(R1, slot).ja('fail_closed');
  }
  asm.label('fail_closed');
  emitIfFlowsOn(asm, 'fail_shot');
  // Parsing may have failed before conntrack read the time.
  asm.mov64(R7, R1).call('ktime_get_ns').stx('dw', R10, FRAME.now, R0).mov64(R1, R7);
  emitFlowCall(asm, FLOW_VERDICT.deny, FLOW_CONNECTIONS.none);
  asm.label('fail_shot').exitWith(TCX.SHOT);
}

/** The allow and deny tails the rules jump to, both with the deciding rule's slot in r1. */
function emitVerdictTails(asm: Assembler, rules: RuleEmitter): void {
  if (rules.place('allow')) {
    asm
      .comment('allow: record the connection in conntrack (with the slot), its aggregate, pass')
      .stx('w', R10, FRAME.slot, R1);
    emitConntrackCreate(asm, () => {
      asm.ldxw(R1, R10, FRAME.slot).jeq(R1, 0, CT_LABELS.pass);
      emitFlowRecord(asm, FLOW_VERDICT.allow, FLOW_CONNECTIONS.one, CT_LABELS.pass);
    });
  }
  if (rules.place('deny')) {
    asm.comment('deny: the aggregate, drop');
    emitFlowRecord(asm, FLOW_VERDICT.deny, FLOW_CONNECTIONS.ifOpening, 'deny_shot');
    asm.label('deny_shot').exitWith(TCX.SHOT);
  }
}

/**
 * The policy program of one rule set, with numbers from `alloc`. Pure. A rule set with a table
 * index in `alloc.tables` is decided by its table (the program then depends on no rule); any
 * other walks its rules.
 */
export function policyProgram(rs: RuleSet, alloc: Allocation): GeneratedProgram {
  const asm = new Assembler();
  const numbers = numbersFor(rs, alloc);
  const tableIndex = alloc.tables?.[hookKey(rs.endpoint, rs.direction)];
  emitParse(asm, rs.direction);
  emitConntrackLookup(asm, rs.direction);

  // The exits parse and conntrack jump to come before the rules, so those jumps stay short
  // whatever the number of rules.
  emitFailClosedExits(asm, rs, numbers, tableIndex !== undefined);

  asm.label(CT_LABELS.policy);

  const rules = new RuleEmitter(asm);
  if (rs.direction === 'ingress') {
    // From the node's own stack (skb_iif 0), not forwarded: the node reaches its pods, as in
    // netfilter, where OUTPUT is not policed. The entry still lets the pod's replies back. r1 = 0
    // is the allow tail's slot: no flow event.
    asm
      .comment("from the node's own stack (not forwarded): allow")
      .ldxw(R1, R6, SKB.ingressIfindex)
      .jeq(R1, 0, rules.far('allow'));
  }
  if (tableIndex !== undefined) emitTableDecision(asm, rules, tableIndex);
  else {
    rules.globalTier(rs, numbers);
    rules.kubernetesTier(rs, numbers);
  }
  emitVerdictTails(asm, rules);

  rules.calls.add(SUBPROGRAMS.count);
  rules.calls.add(SUBPROGRAMS.flow);
  for (const sub of Object.values(SUBPROGRAMS)) if (rules.calls.has(sub)) SUBPROGRAM_EMITTERS[sub](asm);

  const program = asm.assemble();
  return {
    name: programName(rs.endpoint, rs.direction),
    endpoint: rs.endpoint,
    direction: rs.direction,
    program,
    maps: program.mapNames,
  };
}

/** Identity of generated code (map references by name), to tell whether a hook needs a reload. */
export function programHash(program: AssembledProgram | readonly Instruction[]): string {
  const h = createHash('sha256');
  for (const i of 'instructions' in program ? program.instructions : program)
    h.update(`${i.opcode},${i.dst},${i.src},${i.offset},${i.imm},${i.imm2 ?? ''},${i.mapRef?.name ?? ''};`);
  return h.digest('hex').slice(0, 16);
}
