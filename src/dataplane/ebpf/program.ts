/**
 * A whole policy program for one endpoint and direction:
 *
 *   parse → conntrack (established, reply, related: pass) → fail-closed exits
 *   → [ingress: node-originated: allow] → global tier → Kubernetes tier → default
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
import type { Direction, RuleSet } from '../../ir/types.js';
import { CT_LABELS, emitConntrackCreate, emitConntrackLookup } from './ct-code.js';
import {
  EVENT_VERDICT,
  FAIL_CLOSED,
  flowEvent,
  FRAME,
  MAP,
  NODE_CONFIG_FLAG,
  nodeConfig,
  setLpmKey,
  SKB,
  TCX,
  ctKey,
  type FailClosedReason,
} from './layout.js';
import { defaultRuleId, failClosedRuleId, slotKey, type Allocation } from './node.js';
import { emitParse, PARSE_LABELS } from './parse.js';
import { RuleEmitter, SUBPROGRAMS, type RuleNumbers, type Subprogram } from './rules.js';

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
    .mov64(R6, R2)
    .stx('w', R10, -4, R1)
    .ldMap(R1, MAP.counters)
    .mov64(R2, R10)
    .add64(R2, -4)
    .call('map_lookup_elem')
    .jeq(R0, 0, 'count_out')
    .ldxdw(R1, R0, 0)
    .add64(R1, 1)
    .stx('dw', R0, 0, R1)
    .ldxdw(R1, R0, 8)
    .add64(R1, R6)
    .stx('dw', R0, 8, R1)
    .label('count_out')
    .exitWith(0);
}

/** r1 = set index, r2 = address: 1 when the address is in the set (longest prefix of the node trie). */
function emitInSetSub(asm: Assembler): void {
  const key = -12;
  const o = setLpmKey.offsets;
  asm
    .label(SUBPROGRAMS.inSet)
    .st('w', R10, key + o.prefixlen, 64)
    .stx('w', R10, key + o.set, R1)
    .stx('w', R10, key + o.addr, R2)
    .ldMap(R1, MAP.ipSets)
    .mov64(R2, R10)
    .add64(R2, key)
    .call('map_lookup_elem')
    .jeq(R0, 0, 'in_set_no')
    .exitWith(1)
    .label('in_set_no')
    .exitWith(0);
}

/** r1 = set index, r2 = address, r3 = port (host order): 1 when (address, port) is a member. */
function emitInPortSetSub(asm: Assembler): void {
  const key = -12;
  asm
    .label(SUBPROGRAMS.inPortSet)
    .stx('w', R10, key, R1)
    .stx('w', R10, key + 4, R2)
    .stx('h', R10, key + 8, R3)
    .st('h', R10, key + 10, 0)
    .ldMap(R1, MAP.portSets)
    .mov64(R2, R10)
    .add64(R2, key)
    .call('map_lookup_elem')
    .jeq(R0, 0, 'in_portset_no')
    .exitWith(1)
    .label('in_portset_no')
    .exitWith(0);
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
    .mov64(R6, R1)
    .mov64(R7, R2)
    .mov64(R8, R3)
    .mov64(R9, R4)
    .call('ktime_get_ns')
    .stx('dw', R10, ev + e.ts, R0)
    .stx('w', R10, ev + e.slot, R6)
    .ldxw(R1, R8, SKB.len)
    .stx('w', R10, ev + e.len, R1)
    .ldxw(R1, R8, SKB.ifindex)
    .stx('w', R10, ev + e.ifindex, R1)
    .ldxw(R1, R7, k.saddr)
    .stx('w', R10, ev + e.saddr, R1)
    .ldxw(R1, R7, k.daddr)
    .stx('w', R10, ev + e.daddr, R1)
    .ldxh(R1, R7, k.sport)
    .stx('h', R10, ev + e.sport, R1)
    .ldxh(R1, R7, k.dport)
    .stx('h', R10, ev + e.dport, R1)
    .ldxb(R1, R7, k.proto)
    .stx('b', R10, ev + e.proto, R1)
    .ldxb(R1, R7, k.dir)
    .stx('b', R10, ev + e.dir, R1)
    .stx('h', R10, ev + e.verdict, R9)
    .ldMap(R1, MAP.events)
    .mov64(R2, R10)
    .add64(R2, ev)
    .mov64(R3, flowEvent.size)
    // No wakeup per record: the reader drains on a short timer, so a connection flood costs
    // no extra context switches.
    .mov64(R4, BPF_RB_NO_WAKEUP)
    .call('ringbuf_output')
    .jeq(R0, 0, 'event_out')
    .st('w', R10, lostKey, 0)
    .ldMap(R1, MAP.eventsLost)
    .mov64(R2, R10)
    .add64(R2, lostKey)
    .call('map_lookup_elem')
    .jeq(R0, 0, 'event_out')
    .ldxdw(R1, R0, 0)
    .add64(R1, 1)
    .stx('dw', R0, 0, R1)
    .label('event_out')
    .exitWith(0);
}

/**
 * r1 = slot of the deciding rule: the flow event of `verdict` when the node's config turns flow
 * events on (read straight from the config array, no helper call), then on to `done`.
 */
function emitFlowEvent(asm: Assembler, verdict: number, done: string): void {
  asm
    .ldMapValue(R2, MAP.config, nodeConfig.offsets.flags)
    .ldxw(R2, R2, 0)
    .and64(R2, NODE_CONFIG_FLAG.flowEvents)
    .jeq(R2, 0, done)
    .mov64(R2, R10)
    .add64(R2, FRAME.key)
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

/** The policy program of one rule set, with numbers from `alloc`. Pure. */
export function policyProgram(rs: RuleSet, alloc: Allocation): GeneratedProgram {
  const asm = new Assembler();
  const numbers = numbersFor(rs, alloc);
  emitParse(asm, rs.direction);
  emitConntrackLookup(asm, rs.direction);

  // The exits parse and conntrack jump to come before the rules, so those jumps stay short
  // whatever the number of rules.
  asm.label(PARSE_LABELS.nonIp).exitWith(TCX.NEXT);
  for (const reason of FAIL_CLOSED) {
    const slot = numbers.slot(failClosedRuleId(rs.endpoint, rs.direction, reason));
    asm.label(FAIL_LABELS[reason]);
    asm.mov64(R1, slot).ldxw(R2, R6, SKB.len).callLocal(SUBPROGRAMS.count);
    asm.mov64(R1, slot).ja('fail_closed');
  }
  asm.label('fail_closed');
  emitFlowEvent(asm, EVENT_VERDICT.deny, 'fail_shot');
  asm.label('fail_shot').exitWith(TCX.SHOT);

  asm.label(CT_LABELS.policy);

  const rules = new RuleEmitter(asm);
  if (rs.direction === 'ingress') {
    // From the node's own stack (skb_iif 0), not forwarded: the node reaches its pods, as in
    // netfilter, where OUTPUT is not policed. The entry still lets the pod's replies back. r1 = 0
    // is the allow tail's slot: no flow event.
    asm.ldxw(R1, R6, SKB.ingressIfindex).jeq(R1, 0, rules.far('allow'));
  }
  rules.globalTier(rs, numbers);
  rules.kubernetesTier(rs, numbers);
  // Both tails start with the deciding rule's slot in r1.
  if (rules.place('allow')) {
    asm.stx('w', R10, FRAME.slot, R1);
    emitConntrackCreate(asm, () => {
      asm.ldxw(R1, R10, FRAME.slot).jeq(R1, 0, CT_LABELS.pass);
      emitFlowEvent(asm, EVENT_VERDICT.allow, CT_LABELS.pass);
    });
  }
  if (rules.place('deny')) {
    emitFlowEvent(asm, EVENT_VERDICT.deny, 'deny_shot');
    asm.label('deny_shot').exitWith(TCX.SHOT);
  }

  rules.calls.add(SUBPROGRAMS.count);
  rules.calls.add(SUBPROGRAMS.event);
  rules.calls.add(SUBPROGRAMS.count);
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
