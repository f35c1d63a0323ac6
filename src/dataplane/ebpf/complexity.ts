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
import type { IR, Rule, RuleSet } from '../../ir/types.js';
import { hookKey, nodeView, type Allocation, type NodeView } from './node.js';
import { policyProgram } from './program.js';
import { allocateWithTables } from './tables.js';

/** BPF_COMPLEXITY_LIMIT_INSNS: the verifier gives up after processing this many instructions. */
export const VERIFIER_PROCESSED_LIMIT = 1_000_000;

/** Processed instructions per instruction slot of a program without narrowed paths (measured 5.1–5.6). */
const BASE_PER_SLOT = 5.5;
/**
 * Processed instructions a narrowed path spends on a later rule whose checks it decides: measured
 * 2.0 (200 to 900 rules within 1.5%); a little more, so that a prediction errs toward refusing.
 */
const RESOLVED_RULE = 2.05;

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
  if (rule.peerSet !== undefined) n += 4 + 8;
  if (rule.peerPortSet !== undefined) n += 5 + 10;
  return n;
}

/** Whether a narrowed path decides this rule's checks without entering it. */
function resolvable(rule: Rule): boolean {
  return rule.protocol !== undefined || rule.ports !== undefined;
}

/** The port/protocol a rule narrows a path to before a set lookup, or undefined when it does not. */
function narrowing(rule: Rule): string | undefined {
  if (rule.peerSet === undefined && rule.peerPortSet === undefined) return undefined;
  if (rule.ports === undefined && rule.protocol === undefined) return undefined;
  return JSON.stringify([rule.protocol ?? '', rule.ports ?? []]);
}

/** The quadratic part: each new narrowing walks every later rule. */
function narrowedPaths(rules: readonly Rule[]): number {
  const seen = new Set<string>();
  // Cost of the rules after position i, summed from the end.
  const after = new Array<number>(rules.length + 1).fill(0);
  for (let i = rules.length - 1; i >= 0; i--) {
    const r = rules[i] as Rule;
    after[i] = (after[i + 1] ?? 0) + (resolvable(r) ? RESOLVED_RULE : ruleSlots(r));
  }
  let total = 0;
  rules.forEach((r, i) => {
    const key = narrowing(r);
    if (key === undefined || seen.has(key)) return;
    seen.add(key);
    total += after[i + 1] ?? 0;
  });
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
  const processed = Math.round(BASE_PER_SLOT * slots + (tabled ? 0 : narrowedPaths(rules)));
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
    `the ${e.direction} program of ${e.endpoint} (${e.rules} rules, walk mode) would make the verifier ` +
    `process about ${k(e.processed)} instructions, over the kernel's limit of ${k(e.limit)}: ` +
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
