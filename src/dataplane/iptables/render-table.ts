/**
 * A rule set's decision table (table mode) → ipsets and a tree of small chains, so that a new
 * connection costs a number of rules that grows with log2(classes) + log2(port ranges) of the
 * table, never with the number of rules:
 *
 *   1. peer → class: the table's classes are numbered per family (0 = under no prefix) and each
 *      bit b of that number is an ipset `hash:net` holding the prefixes whose number has bit b
 *      set. A binary trie of chains tests one bit per level (`-m set --match-set <bit b> src|dst`)
 *      and ends in the class's chain. (ipset's `--map-set … --map-mark` would read the class in one
 *      lookup, but the kernel only allows it in the mangle table: the class would then be written
 *      in one iptables transaction and read in another, and an update could pair a new class
 *      number with the old tree. Everything here lives in the filter table, swapped in one commit.)
 *   2. class → protocol: `-p tcp|udp|sctp|icmp -g …`, the rest goes to the class's `other` entry;
 *   3. protocol → port range: a balanced binary search over the class's ranges
 *      (`--dport first:last -g <upper half>`, else the lower half);
 *   4. the entry's chain ("outcome"): the Log rules that fire on the way (NFLOG under their ids),
 *      the Pass rule that handed the packet on (counted only), then the deciding rule exactly as
 *      the walk renders it (flow log, comment = rule id, `-g SY-ALLOW` or `-j DROP`).
 *
 * Chains are named after a digest of their own rules (`SY-FWT-<endpoint>-<digest>`): equal
 * subtrees are one chain, and an update rewrites only the chains whose rules changed; an outcome
 * whose rule did not change keeps its counters. Sets are named after a digest of their members
 * (the generation): a changed set is a new set, so the set a rule names never changes under it.
 */
import {
  PORT_PROTOCOLS,
  type DecisionTable,
  type PeerClass,
  type PortEntry,
  type PortProtocol,
  type TableEntry,
} from '../../ir/decision-table.js';
import { defaultRuleId } from '../../ir/rule-ids.js';
import type { Direction, RuleSet } from '../../ir/types.js';
import { parseCidr } from '../../util/ip.js';
import {
  DEFAULT_ALLOW_COMMENT,
  DEFAULT_DENY_COMMENT,
  digestOf,
  tableChain,
  tableSetName,
  type Family,
} from './names.js';
import type { ChainSpec, SetSpec } from './plan.js';
import { netEntries } from './render-sets.js';
import { comment, decision, GOTO_ALLOW, logTarget, protocolMatch } from './rule-text.js';

/** What an endpoint chain needs to run its table in one family. */
export interface TableLayout {
  /** Where the endpoint chain goes once conntrack let a new connection through. */
  root: string;
  chains: ChainSpec[];
  /** The class-bit sets (none when every address of the family gets the same answer). */
  sets: SetSpec[];
}

/** A rule set that carries a table. */
export type TableRuleSet = RuleSet & { table: DecisionTable };

/**
 * Hash-consing of chains within one endpoint, direction and family: equal rules, one chain. A
 * chain that would only `-g` elsewhere is that elsewhere.
 */
class Chains {
  private readonly byRules = new Map<string, string>();
  private readonly taken = new Map<string, string>();
  readonly list: ChainSpec[] = [];

  constructor(
    private readonly endpoint: string,
    private readonly direction: Direction,
  ) {}

  chain(rules: string[]): string {
    const only = rules.length === 1 ? /^-g (\S+)$/.exec(rules[0] as string)?.[1] : undefined;
    if (only) return only;
    const text = rules.join('\n');
    const known = this.byRules.get(text);
    if (known) return known;
    // A digest collision (32 bits) gets another digest: names stay unique, and deterministic.
    let name = tableChain(this.endpoint, this.direction, digestOf(text));
    for (let salt = 1; this.taken.has(name); salt++)
      name = tableChain(this.endpoint, this.direction, digestOf(`${salt}\n${text}`));
    this.taken.set(name, text);
    this.byRules.set(text, name);
    this.list.push({ name, rules });
    return name;
  }
}

interface Context {
  rs: TableRuleSet;
  family: Family;
  flowLogs: boolean;
  chains: Chains;
}

/** The entry's own chain: Log rules, the Pass rule's count, then the decision as the walk makes it. */
function outcome(ctx: Context, entry: TableEntry): string {
  const rules = entry.logged.map((id) => `${comment(id)} ${logTarget(id)}`);
  // The walk counts the Pass rule that matched (its RETURN carries the rule's comment).
  if (entry.passedBy !== undefined) rules.push(comment(entry.passedBy));
  const isDefault = entry.rule === defaultRuleId(ctx.rs.endpoint, ctx.rs.direction);
  const commentId = !isDefault
    ? entry.rule
    : entry.verdict === 'deny'
      ? DEFAULT_DENY_COMMENT
      : DEFAULT_ALLOW_COMMENT;
  const target = entry.verdict === 'allow' ? GOTO_ALLOW : '-j DROP';
  rules.push(...decision(ctx.flowLogs, '', commentId, entry.verdict, entry.rule, target));
  return ctx.chains.chain(rules);
}

function portMatch(protocol: PortProtocol, first: number, last: number): string {
  const proto = protocol.toLowerCase();
  return `-p ${proto} -m ${proto} --dport ${first === last ? `${first}` : `${first}:${last}`}`;
}

/** Binary search over sorted, disjoint ranges covering every port: one range test per level. */
function portTree(ctx: Context, protocol: PortProtocol, entries: readonly PortEntry[]): string {
  // Neighbours that render the same outcome are one range (their entries differed only in what
  // this rendering does not show, if anything).
  const ranges: { first: number; last: number; target: string }[] = [];
  for (const e of entries) {
    const target = outcome(ctx, e);
    const prev = ranges[ranges.length - 1];
    if (prev && prev.target === target && prev.last + 1 === e.first) prev.last = e.last;
    else ranges.push({ first: e.first, last: e.last, target });
  }
  const node = (lo: number, hi: number): string => {
    if (lo === hi) return (ranges[lo] as (typeof ranges)[number]).target;
    const mid = (lo + hi + 1) >> 1;
    const upper = portMatch(
      protocol,
      (ranges[mid] as (typeof ranges)[number]).first,
      (ranges[hi] as (typeof ranges)[number]).last,
    );
    return ctx.chains.chain([`${upper} -g ${node(mid, hi)}`, `-g ${node(lo, mid - 1)}`]);
  };
  return node(0, ranges.length - 1);
}

/** A class's chain: dispatch on the protocol; anything else is the class's `other` entry. */
function classChain(ctx: Context, cls: PeerClass): string {
  const other = outcome(ctx, cls.other);
  const rules: string[] = [];
  for (const p of PORT_PROTOCOLS) {
    const target = portTree(ctx, p, cls.ports[p]);
    if (target !== other) rules.push(`${protocolMatch(p, ctx.family)} -g ${target}`);
  }
  const icmp = outcome(ctx, cls.icmp);
  if (icmp !== other) rules.push(`${protocolMatch('ICMP', ctx.family)} -g ${icmp}`);
  rules.push(`-g ${other}`);
  return ctx.chains.chain(rules);
}

/** Bits needed to number `n` values 0…n-1. */
function bitsFor(n: number): number {
  let bits = 0;
  while (1 << bits < n) bits++;
  return bits;
}

/**
 * The table of one rule set in one family. Classes whose chains come out equal (and every class
 * without a prefix in this family) share a number; number 0 is what an address under no prefix
 * gets, so it is the one no set holds.
 */
export function renderTableLayout(rs: TableRuleSet, family: Family, flowLogs: boolean): TableLayout {
  const chains = new Chains(rs.endpoint, rs.direction);
  const ctx: Context = { rs, family, flowLogs, chains };
  const prefixes = rs.table.prefixes.filter((p) => parseCidr(p.cidr)?.family === family);
  const rest = rs.table.classes[0];
  if (!rest) throw new Error(`decision table of ${rs.endpoint} ${rs.direction} has no class 0`);
  const leaves = [classChain(ctx, rest)];
  const numberOf = new Map<number, number>([[0, 0]]);
  const classIds = [...new Set(prefixes.map((p) => p.classId))].sort((a, b) => a - b);
  for (const id of classIds) {
    const cls = rs.table.classes[id];
    if (!cls) throw new Error(`decision table of ${rs.endpoint} ${rs.direction} lacks class ${id}`);
    const leaf = classChain(ctx, cls);
    let n = leaves.indexOf(leaf);
    if (n < 0) n = leaves.push(leaf) - 1;
    numberOf.set(id, n);
  }
  const bits = bitsFor(leaves.length);
  const remote = rs.direction === 'ingress' ? 'src' : 'dst';
  const sets: SetSpec[] = [];
  const setOfBit: string[] = [];
  for (let b = 0; b < bits; b++) {
    const members = prefixes
      .filter((p) => ((numberOf.get(p.classId) ?? 0) >> b) & 1)
      .flatMap((p) => netEntries(p.cidr));
    const name = tableSetName(rs.endpoint, rs.direction, family, b, members);
    setOfBit.push(name);
    sets.push({
      name,
      irId: `${rs.endpoint}/${rs.direction}`,
      type: 'hash:net',
      family,
      members,
      description: `decision table of ${rs.endpoint} (${rs.direction}), IPv${family} class bit ${b}`,
      versioned: true,
    });
  }
  // A trie over the class numbers, highest bit first; `numbers` are those still possible.
  const trie = (numbers: number[], bit: number): string => {
    if (numbers.length === 1) return leaves[numbers[0] as number] as string;
    const ones = numbers.filter((n) => (n >> bit) & 1);
    const zeros = numbers.filter((n) => !((n >> bit) & 1));
    if (ones.length === 0) return trie(zeros, bit - 1);
    if (zeros.length === 0) return trie(ones, bit - 1);
    return chains.chain([
      `-m set --match-set ${setOfBit[bit] as string} ${remote} -g ${trie(ones, bit - 1)}`,
      `-g ${trie(zeros, bit - 1)}`,
    ]);
  };
  const root = trie(
    leaves.map((_, i) => i),
    bits - 1,
  );
  // Sets no rule names (their bit never splits a subtree) are not created.
  const used = new Set(chains.list.flatMap((c) => c.rules.map((r) => /--match-set (\S+)/.exec(r)?.[1])));
  return { root, chains: chains.list, sets: sets.filter((s) => used.has(s.name)) };
}
