/**
 * How much work the verifier will do on a walk-mode policy program, predicted from the generated
 * code and its rule set without loading it, so an endpoint over the kernel's limit is refused in
 * milliseconds (by `compile`, and by apply before anything is loaded) instead of after minutes of
 * verification.
 *
 * The model, fitted on Linux 6.18 and checked against it near the limit by
 * test/kernel/ebpf-complexity.test.ts:
 *   - every program is explored along a few paths (IP versions, conntrack, the tails): about
 *     BASE_PER_SLOT processed instructions per instruction slot;
 *   - a rule that narrows the destination port (or protocol) to values no earlier rule narrowed it
 *     to, and then calls a set lookup, leaves a path whose port is known: the verifier cannot prune
 *     it against the others and walks it through every later rule. A later rule with a protocol or
 *     port check costs that path about RESOLVED_RULE instructions (its checks are decided), one
 *     without them its whole code. That is the quadratic part: N such rules cost about N²
 *     instructions, which is what stops a walk at a few hundred rules with distinct ports.
 * Table mode programs are constant-size and never over the limit.
 */
import { instructionSlots, type AssembledProgram } from '../../bpf/index.js';
import type { IR, PortRange, Rule, RuleSet } from '../../ir/types.js';
import { IPPROTO, PROTOCOL_NUMBERS } from './layout.js';
import { hookKey, nodeView, type Allocation, type NodeView } from './node.js';
import { policyProgram } from './program.js';
import { allocateWithTables } from './tables.js';

/** BPF_COMPLEXITY_LIMIT_INSNS: the verifier gives up after processing this many instructions. */
export const VERIFIER_PROCESSED_LIMIT = 1_000_000;

/** Processed instructions per instruction slot of a program without narrowed paths (measured 5.1–5.6). */
const BASE_PER_SLOT = 5.5;
/** Instructions of a set lookup call (the subprogram's body, verified at every call). */
const SET_CALL = 12;
/**
 * A port check a narrowed path passes costs it more than one it is stopped by (measured: ports in
 * shuffled order cost 3.3 per later rule where the checks alone are 2.5).
 */
const PASSED_CHECK = 1.6;

export interface VerifierEstimate {
  endpoint: string;
  direction: RuleSet['direction'];
  /** Rules the program walks (both tiers). */
  rules: number;
  /** Instruction slots of the generated program. */
  slots: number;
  /** Predicted instructions the verifier processes. */
  processed: number;
  limit: number;
}

/** Instruction slots a rule's code takes when a narrowed path cannot decide its checks. */
function ruleSlots(rule: Rule): number {
  let n = 5; // count + decide
  if (rule.protocol !== undefined) n += 1;
  else if (rule.ports !== undefined || rule.peerPortSet !== undefined) n += 3;
  n += 2 * (rule.ports?.length ?? 0);
  if (rule.peerSet !== undefined) n += 4 + SET_CALL;
  if (rule.peerPortSet !== undefined) n += 5 + SET_CALL;
  return n;
}

const sorted = new WeakMap<Rule, readonly PortRange[]>();

/** The rule's port ranges in the order rules.ts checks them. */
function sortedRanges(rule: Rule): readonly PortRange[] {
  let ranges = sorted.get(rule);
  if (!ranges) {
    ranges = [...(rule.ports ?? [])].sort((a, b) => a.first - b.first);
    sorted.set(rule, ranges);
  }
  return ranges;
}

/** A path whose protocol and destination port the verifier knows (the port as a range). */
interface Narrowed {
  protocol: number;
  first: number;
  last: number;
}

/** What a narrowed path does at a rule: how many instructions it spends there, whether it goes on. */
function walkRule(path: Narrowed, rule: Rule): { cost: number; goesOn: boolean } {
  let cost = 0;
  const skip = { goesOn: true };
  // The protocol checks (rules.ts: one jne, or jeq TCP / jeq UDP / jne SCTP for port rules).
  if (rule.protocol !== undefined) {
    cost++;
    if (PROTOCOL_NUMBERS[rule.protocol] !== path.protocol) return { cost, ...skip };
  } else if (rule.ports !== undefined || rule.peerPortSet !== undefined) {
    const order = [IPPROTO.TCP, IPPROTO.UDP, IPPROTO.SCTP];
    const at = order.indexOf(path.protocol as (typeof order)[number]);
    cost += at < 0 ? 3 : at + 1;
    if (at < 0) return { cost, ...skip };
  }
  // The port checks: jlt first / jle last per range, jgt last on the last one.
  const ranges = sortedRanges(rule);
  for (const [k, r] of ranges.entries()) {
    if (r.first > 0) {
      cost++;
      if (path.last < r.first) return { cost, ...skip };
      if (path.first < r.first) return { cost: cost + ruleSlots(rule), ...skip };
    }
    cost += 1 + PASSED_CHECK;
    if (path.first > r.last) {
      if (k === ranges.length - 1) return { cost, ...skip };
      continue;
    }
    if (path.last > r.last) return { cost: cost + ruleSlots(rule), ...skip };
    break;
  }
  // The port matched (or the rule has none): a set lookup lets the path go on when it misses; a
  // rule without one decides, and the path ends in a tail (explored once, pruned after).
  const lookups = (rule.peerSet !== undefined ? 1 : 0) + (rule.peerPortSet !== undefined ? 1 : 0);
  if (lookups > 0) return { cost: cost + ruleSlots(rule), goesOn: true };
  return { cost: cost + ruleSlots(rule), goesOn: rule.action === 'log' };
}

/** The paths a rule narrows before a set lookup: one per protocol it admits and port range. */
function narrowings(rule: Rule): Narrowed[] {
  if (rule.peerSet === undefined && rule.peerPortSet === undefined) return [];
  if (rule.ports === undefined || rule.ports.length === 0) return [];
  const protocols =
    rule.protocol !== undefined
      ? [PROTOCOL_NUMBERS[rule.protocol]]
      : [IPPROTO.TCP, IPPROTO.UDP, IPPROTO.SCTP];
  return protocols.flatMap((protocol) => rule.ports?.map((r) => ({ protocol, ...r })) ?? []);
}

/**
 * The quadratic part: each path narrowed to values no earlier rule narrowed to walks every later
 * rule. Stops counting past `budget`: the answer is "over" by then, and a 10,000-rule policy is
 * not walked 10,000² times to say so.
 */
function narrowedPaths(rules: readonly Rule[], budget: number): number {
  const seen = new Set<string>();
  let total = 0;
  for (const [i, rule] of rules.entries()) {
    for (const path of narrowings(rule)) {
      const key = `${path.protocol}:${path.first}-${path.last}`;
      if (seen.has(key)) continue;
      seen.add(key);
      for (let j = i + 1; j < rules.length && total <= budget; j++) {
        const step = walkRule(path, rules[j] as Rule);
        total += step.cost;
        if (!step.goesOn) break;
      }
      if (total > budget) return total;
    }
  }
  return total;
}

/**
 * The verifier's predicted work on the program of `rs` (no narrowed paths in table mode);
 * `program` is that program when the caller generated it already.
 */
export function estimateVerifierWork(
  rs: RuleSet,
  alloc: Allocation,
  program: AssembledProgram = policyProgram(rs, alloc).program,
): VerifierEstimate {
  const slots = instructionSlots(program);
  const tabled = alloc.tables?.[hookKey(rs.endpoint, rs.direction)] !== undefined;
  const rules = [...rs.globalRules, ...rs.kubernetesRules];
  const base = BASE_PER_SLOT * slots;
  const processed = Math.round(base + (tabled ? 0 : narrowedPaths(rules, VERIFIER_PROCESSED_LIMIT - base)));
  return {
    endpoint: rs.endpoint,
    direction: rs.direction,
    rules: rules.length,
    slots,
    processed,
    limit: VERIFIER_PROCESSED_LIMIT,
  };
}

/** One line for an endpoint over the limit: who, how far over, and the way out. */
export function describeOverLimit(e: VerifierEstimate): string {
  const k = (n: number): string => (n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : `${Math.round(n / 1000)}k`);
  return (
    `the ${e.direction} program of ${e.endpoint} (${e.rules} rules, walk mode) would take the verifier ` +
    `over the kernel's limit of ${k(e.limit)} processed instructions (predicted: ${e.processed >= e.limit ? 'at least ' : ''}${k(e.processed)}): ` +
    `use --policy-mode table (decision tables are constant-size), or fewer distinct port lists per peer`
  );
}

/** Rule sets of `view` whose programs the verifier would refuse as too complex (none in table mode). */
export function overLimit(view: NodeView, alloc: Allocation): VerifierEstimate[] {
  return view.ruleSets.map((rs) => estimateVerifierWork(rs, alloc)).filter((e) => e.processed > e.limit);
}

/** What `compile` and `lab apply` ask before anything is loaded: one line per endpoint over the limit. */
export function nodeLimitFindings(ir: IR, node: string): string[] {
  const view = nodeView(ir, node);
  return overLimit(view, allocateWithTables(view, undefined).alloc).map(describeOverLimit);
}
