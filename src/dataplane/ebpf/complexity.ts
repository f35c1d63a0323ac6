/**
 * How much work the verifier will do on a walk-mode policy program, predicted from the generated
 * code and its rule set without loading it, so an endpoint over the kernel's limit is refused in
 * milliseconds (by `compile`, `lab apply`, and apply before anything is loaded) instead of after
 * minutes of verification.
 *
 * The verifier tracks the protocol (r9) and the destination port (r8) exactly, so the rule walk
 * is explored once per distinct (protocol, port range) a path can have at each rule: a rule's
 * port checks split the ranges of the paths reaching it (below, inside, above), a set lookup after
 * them lets the "inside" part go on to the next rule when it misses, and paths the verifier has
 * seen at a rule's end before are pruned. With distinct ports per rule the number of paths grows
 * with every rule and the work with the square of the rule count: what stops a walk at a few
 * hundred rules. The model walks those paths (counting instructions), plus BASE_PER_SLOT per
 * instruction of the program for everything else. Checked against Linux 6.18 on 1- and 3-port
 * rules of spaced ports from 0 to 450 rules: the prediction is 4% under to 5% over (2–4% under
 * near the limit); test/kernel/ebpf-complexity.test.ts checks that it brackets the real limit.
 * Table-mode programs are constant-size: never over.
 */
import { instructionSlots, type AssembledProgram } from '../../bpf/index.js';
import type { IR, PortRange, Rule, RuleSet } from '../../ir/types.js';
import { IPPROTO, PROTOCOL_NUMBERS } from './layout.js';
import { hookKey, nodeView, type Allocation, type NodeView } from './node.js';
import { policyProgram } from './program.js';
import { allocateWithTables } from './tables.js';

/** BPF_COMPLEXITY_LIMIT_INSNS: the verifier gives up after processing this many instructions. */
export const VERIFIER_PROCESSED_LIMIT = 1_000_000;

/**
 * Processed instructions per instruction slot of a program without narrowed paths (2.5: fitted on
 * Linux 6.18 with the rules' share below; 5.5 before the parser was shaped for pruning, parse.ts).
 */
const BASE_PER_SLOT = 2.5;
/** Instructions of a set lookup call (the subprogram's body, verified at every call). */
const SET_CALL = 12;
/** Instructions of a matched rule besides its lookups: count, decide. */
const MATCHED = 6;
/** Processed instructions per instruction the path walk counts in the rules (fitted, as BASE_PER_SLOT). */
const PER_WALKED = 1.2;
/**
 * Times the verifier walks the rules. Once: every parser path (both families, every protocol) is
 * pruned at `parsed` against the first one, whose state covers them all (parse.ts). Before that
 * shape it was twice, once per address family (the real limit was 481 one-port rules then).
 */
const PARSED_FAMILIES = 1;

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

/** Protocol of a path the verifier has not narrowed (neither TCP, UDP, SCTP nor ICMP). */
const ANY = -1;

/** A path as the verifier tracks it through the rules: the protocol (r9) and the port range (r8). */
interface PathState {
  protocol: number;
  lo: number;
  hi: number;
}

/**
 * The paths that reach the rules, any port each (the verifier sees r9 and r8 as parsing left them
 * on its first path, parse.ts): a TCP SYN, an ICMP packet that is no error, and any protocol
 * (conntrack's checks, ct-code.ts).
 */
function parsedPaths(): PathState[] {
  return [IPPROTO.TCP, IPPROTO.ICMP, ANY].map((protocol) => ({ protocol, lo: 0, hi: 0xffff }));
}

/** The protocols a port rule checks, in the order rules.ts checks them. */
const PORT_PROTOCOLS: readonly number[] = [IPPROTO.TCP, IPPROTO.UDP, IPPROTO.SCTP];

/** A path, made as a literal (not a spread of another: see walkedRules). */
function pathOf(protocol: number, lo: number, hi: number): PathState {
  return { protocol, lo, hi };
}

/** One rule's checks on one path: the paths that leave for the next rule, and the instructions spent. */
function walkRule(path: PathState, rule: Rule, leave: PathState[]): number {
  let cost = 0;
  let live: PathState[] = [path];
  // The protocol checks (rules.ts: one jne, or jeq TCP / jeq UDP / jne SCTP for port rules).
  const wanted =
    rule.protocol !== undefined
      ? [PROTOCOL_NUMBERS[rule.protocol]]
      : rule.ports !== undefined || rule.peerPortSet !== undefined
        ? PORT_PROTOCOLS
        : undefined;
  if (wanted) {
    const at = wanted.indexOf(path.protocol);
    cost += at < 0 ? wanted.length : at + 1;
    if (path.protocol === ANY) {
      leave.push(path);
      live = wanted.map((protocol) => pathOf(protocol, path.lo, path.hi));
    } else if (at < 0) {
      leave.push(path);
      return cost;
    }
  }
  // The port checks split each path's range: jlt first / jle last per range, jgt last on the last.
  let matched = live;
  if (rule.ports !== undefined) {
    matched = [];
    const ranges = sortedRanges(rule);
    for (const state of live) {
      let rest: PathState | undefined = state;
      for (let k = 0; k < ranges.length && rest; k++) {
        const r = ranges[k] as PortRange;
        if (r.first > 0) {
          cost++;
          if (rest.lo < r.first) leave.push(pathOf(rest.protocol, rest.lo, Math.min(rest.hi, r.first - 1)));
          rest = rest.hi >= r.first ? pathOf(rest.protocol, Math.max(rest.lo, r.first), rest.hi) : undefined;
          if (!rest) break;
        }
        cost++;
        if (rest.lo <= r.last) matched.push(pathOf(rest.protocol, rest.lo, Math.min(rest.hi, r.last)));
        const above: PathState | undefined =
          rest.hi > r.last ? pathOf(rest.protocol, Math.max(rest.lo, r.last + 1), rest.hi) : undefined;
        if (above && k === ranges.length - 1) leave.push(above);
        rest = above;
      }
    }
  }
  // Matched: a set lookup lets the path go on when it misses; the match itself ends in a tail.
  const lookups = (rule.peerSet !== undefined ? 1 : 0) + (rule.peerPortSet !== undefined ? 1 : 0);
  const goesOn = lookups > 0 || rule.action === 'log';
  for (const state of matched) {
    cost += lookups * SET_CALL + MATCHED;
    if (goesOn) leave.push(state);
  }
  return cost;
}

/** One number per (protocol, range): protocol + 1 < 2^9, lo and hi < 2^16, so exact below 2^53. */
function pathKey(p: PathState): number {
  return ((p.protocol + 1) * 0x10000 + p.lo) * 0x10000 + p.hi;
}

/**
 * The verifier's walk through the rules, path by path: each rule splits the paths' port ranges,
 * and a path the verifier has not seen at a rule's end (same protocol, same range) is walked on.
 * Stops counting past `budget`: the answer is "over" by then, and a 10,000-rule policy is not
 * walked 10,000² times to say so.
 *
 * It walks up to rules² paths, on the agent's thread before a load: a 440-rule policy took ~100
 * ms per program once the agent runs without the optimizing compiler (agent/memory.ts), and the
 * agent's API waited that long. So the loop allocates only the paths themselves: literals, not
 * spreads; indexes, not iterators; numbers as keys, not strings.
 */
function walkedRules(rules: readonly Rule[], budget: number): number {
  let paths = parsedPaths();
  let total = 0;
  for (const rule of rules) {
    const leave: PathState[] = [];
    for (const path of paths) total += walkRule(path, rule, leave);
    if (total > budget) return total;
    const seen = new Map<number, PathState>();
    for (const p of leave) seen.set(pathKey(p), p);
    paths = [...seen.values()];
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
  const perFamily = PER_WALKED * PARSED_FAMILIES;
  const walked = tabled ? 0 : walkedRules(rules, (VERIFIER_PROCESSED_LIMIT - base) / perFamily);
  const processed = Math.round(base + perFamily * walked);
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
