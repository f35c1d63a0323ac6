/**
 * A whole policy program for one endpoint and direction:
 *
 *   parse → conntrack (established, reply, related: pass) → fail-closed exits
 *   → [ingress: node-originated: allow] → global tier → Kubernetes tier → default
 *     (table mode: one decision-table lookup instead, see table-code.ts)
 *   → allow (new conntrack entry, flow event, TCX_NEXT) | deny (flow event, SHOT)
 *
 * followed by the bpf-to-bpf subprograms the rules call (count, set membership, IP-port
 * membership, ring buffer event). Flow events (allow: one per new connection; deny: one per
 * dropped packet, fail-closed drops included) are sent only while the node's config array has
 * NODE_CONFIG_FLAG.flowEvents set; Log rules' events always. The established/reply fast path
 * sends none. Maps are referenced by name; they become fds only
 * when the program is loaded, so generating a program needs no kernel.
 */
import { createHash } from 'node:crypto';
import {
  Assembler,
  R0,
  R1,
  R2,
  R3,
  R4,
  R6,
  R7,
  R8,
  R9,
  R10,
  type AssembledProgram,
  type Instruction,
} from '../../bpf/index.js';
import { defaultRuleId, failClosedRuleId } from '../../ir/rule-ids.js';
import type { Direction, RuleSet } from '../../ir/types.js';
import { CT_LABELS, emitConntrackCreate, emitConntrackLookup } from './ct-code.js';
import { emitCountPacket } from './emit.js';
import {
  EVENT_VERDICT,
  FAIL_CLOSED,
  flowEvent,
  FRAME,
  MAP,
  NODE_CONFIG_FLAG,
  nodeConfig,
  portSetKey,
  setLpmKey,
  SKB,
  TABLE_FAIL_CLOSED,
  TCX,
  ctKey,
  type FailClosedReason,
} from './layout.js';
import { hookKey, slotKey, type Allocation } from './node.js';
import { emitParse, PARSE_LABELS } from './parse.js';
import { RuleEmitter, SUBPROGRAMS, type RuleNumbers, type Subprogram } from './rules.js';
import { emitTableDecision, TABLE_LABELS } from './table-code.js';

/** bpf_ringbuf_output flag (include/uapi/linux/bpf.h). */
const BPF_RB_NO_WAKEUP = 1;

const FAIL_LABELS: Record<FailClosedReason, string> = {
  ipv6: PARSE_LABELS.ipv6,
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

/** r1 = set index, r2 = address: 1 when the address is in the set (longest prefix of the node trie). */
function emitInSetSub(asm: Assembler): void {
  const key = -12;
  const o = setLpmKey.offsets;
  asm
    .label(SUBPROGRAMS.inSet)
    .comment('subprogram in_set(set r1, address r2): 1 when the node trie has the address in the set')
    .st('w', R10, key + o.prefixlen, 64)
    .stx('w', R10, key + o.set, R1)
    .stx('w', R10, key + o.addr, R2);
  emitLookupAnswer(asm, MAP.ipSets, key, 'in_set_no');
}

/** The answer of a membership subprogram: 1 when the key at `key` is in `map`, else 0. */
function emitLookupAnswer(asm: Assembler, map: string, key: number, miss: string): void {
  asm.mapLookup(map, key).jeq(R0, 0, miss).exitWith(1).label(miss).exitWith(0);
}

/** r1 = set index, r2 = address, r3 = port (host order): 1 when (address, port) is a member. */
function emitInPortSetSub(asm: Assembler): void {
  const key = -12;
  const o = portSetKey.offsets;
  asm
    .label(SUBPROGRAMS.inPortSet)
    .comment('subprogram in_portset(set r1, address r2, port r3): 1 when (address, port) is in the set')
    .stx('w', R10, key + o.set, R1)
    .stx('w', R10, key + o.addr, R2)
    .stx('h', R10, key + o.port, R3)
    .st('h', R10, key + o.pad, 0);
  emitLookupAnswer(asm, MAP.portSets, key, 'in_portset_no');
}

/**
 * r1 = slot, r2 = conntrack key (caller's stack), r3 = ctx, r4 = verdict (EVENT_VERDICT): one
 * ring buffer record (flowEvent). When the ring buffer is full (the reader is behind), the record
 * is counted in the per-CPU `events_lost` array instead.
 */
function emitEventSub(asm: Assembler): void {
  const ev = -40;
  const lostKey = -44;
  const e = flowEvent.offsets;
  const k = ctKey.offsets;
  asm
    .label(SUBPROGRAMS.event)
    .comment('subprogram event(slot r1, key r2, ctx r3, verdict r4): a flow event into the ring buffer')
    .mov64(R6, R1)
    .mov64(R7, R2)
    .mov64(R8, R3)
    .mov64(R9, R4)
    .call('ktime_get_ns')
    .stx('dw', R10, ev + e.ts, R0)
    .stx('w', R10, ev + e.slot, R6)
    .copy('w', R10, ev + e.len, R8, SKB.len, R1)
    .copy('w', R10, ev + e.ifindex, R8, SKB.ifindex, R1)
    .copy('w', R10, ev + e.saddr, R7, k.saddr, R1)
    .copy('w', R10, ev + e.daddr, R7, k.daddr, R1)
    .copy('h', R10, ev + e.sport, R7, k.sport, R1)
    .copy('h', R10, ev + e.dport, R7, k.dport, R1)
    .copy('b', R10, ev + e.proto, R7, k.proto, R1)
    .copy('b', R10, ev + e.dir, R7, k.dir, R1)
    .stx('h', R10, ev + e.verdict, R9)
    .ldMap(R1, MAP.events)
    .stackAddress(R2, ev)
    .mov64(R3, flowEvent.size)
    // No wakeup per record: the reader drains on a short timer, so a connection flood costs
    // no extra context switches.
    .mov64(R4, BPF_RB_NO_WAKEUP)
    .call('ringbuf_output')
    .jeq(R0, 0, 'event_out')
    .comment('the ring buffer is full (the reader is behind): count the event as lost')
    .st('w', R10, lostKey, 0)
    .mapLookup(MAP.eventsLost, lostKey)
    .jeq(R0, 0, 'event_out')
    .addToU64(R0, 0, 1, R1)
    .label('event_out')
    .exitWith(0);
}

/**
 * r1 = slot of the deciding rule: the flow event of `verdict` when the node's config turns flow
 * events on (read straight from the config array, no helper call), then on to `done`.
 */
function emitFlowEvent(asm: Assembler, verdict: number, done: string): void {
  asm
    .comment('flow events on (node config)? then the event of the deciding rule')
    .ldMapValue(R2, MAP.config, nodeConfig.offsets.flags)
    .ldxw(R2, R2, 0)
    .and64(R2, NODE_CONFIG_FLAG.flowEvents)
    .jeq(R2, 0, done)
    .stackAddress(R2, FRAME.key)
    .mov64(R3, R6)
    .mov64(R4, verdict)
    .callLocal(SUBPROGRAMS.event);
}

const SUBPROGRAM_EMITTERS: Record<Subprogram, (asm: Assembler) => void> = {
  [SUBPROGRAMS.count]: emitCountSub,
  [SUBPROGRAMS.inSet]: emitInSetSub,
  [SUBPROGRAMS.inPortSet]: emitInPortSetSub,
  [SUBPROGRAMS.event]: emitEventSub,
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
  const exits: [string, string][] = FAIL_CLOSED.map((reason) => [reason, FAIL_LABELS[reason]]);
  if (tabled) exits.push([TABLE_FAIL_CLOSED, TABLE_LABELS.fail]);
  for (const [reason, label] of exits) {
    const slot = numbers.slot(failClosedRuleId(rs.endpoint, rs.direction, reason));
    asm.label(label).comment(`fail closed (${reason}): count in slot ${slot}, then drop`);
    asm.mov64(R1, slot).ldxw(R2, R6, SKB.len).callLocal(SUBPROGRAMS.count);
    asm.mov64(R1, slot).ja('fail_closed');
  }
  asm.label('fail_closed');
  emitFlowEvent(asm, EVENT_VERDICT.deny, 'fail_shot');
  asm.label('fail_shot').exitWith(TCX.SHOT);
}

/** The allow and deny tails the rules jump to, both with the deciding rule's slot in r1. */
function emitVerdictTails(asm: Assembler, rules: RuleEmitter): void {
  if (rules.place('allow')) {
    asm.comment('allow: record the connection in conntrack, flow event, pass').stx('w', R10, FRAME.slot, R1);
    emitConntrackCreate(asm, () => {
      asm.ldxw(R1, R10, FRAME.slot).jeq(R1, 0, CT_LABELS.pass);
      emitFlowEvent(asm, EVENT_VERDICT.allow, CT_LABELS.pass);
    });
  }
  if (rules.place('deny')) {
    asm.comment('deny: flow event, drop');
    emitFlowEvent(asm, EVENT_VERDICT.deny, 'deny_shot');
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
  rules.calls.add(SUBPROGRAMS.event);
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
