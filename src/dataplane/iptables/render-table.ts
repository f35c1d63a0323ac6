/**
 * A rule set's decision table (table mode) → ipsets and a tree of small chains, so that a new
 * connection costs a number of rules that grows with log(classes) + log(port ranges) of the
 * table, never with the number of rules, in a tree shallow enough for nf_tables (every jump and
 * goto counts toward its 16 levels, see depth.ts):
 *
 *   1. peer → class: the table's classes are numbered per family (0 = under no prefix) and
 *      written in base CLASS_RADIX; for each digit position and non-zero digit value an ipset
 *      `hash:net` holds the prefixes whose number has that digit there. A trie of chains reads one
 *      digit per level (up to CLASS_RADIX - 1 `-m set --match-set <level, digit> src|dst` rules,
 *      digit 0 by default) and ends in the class's chain. (ipset's `--map-set … --map-mark` would
 *      read the class in one lookup, but the kernel only allows it in the mangle table: the class
 *      would then be written in one iptables transaction and read in another, and an update could
 *      pair a new class number with the old tree. Everything here lives in the filter table,
 *      swapped in one commit.)
 *   2. class → protocol and port range, in the class's own chain: per protocol the first level of
 *      a PORT_RADIX-ary search over the class's ranges (`-p tcp -m tcp --dport first:last -g …`,
 *      `-p tcp -g <last part>`), then ICMP, and the class's `other` entry for the rest; deeper
 *      levels of the search are chains of up to PORT_RADIX - 1 range tests and a default;
 *   3. the entry's chain ("outcome"): the Log rules that fire on the way (counted, and aggregated
 *      in their flow sets), the Pass rule that handed the packet on (counted only), then the
 *      deciding rule exactly as the walk renders it (flow set, comment = rule id, `-g SY-ALLOW`
 *      or `-j DROP`).
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
import { comment, decision, GOTO_ALLOW, logRules, protocolMatch, type FlowSets } from './rule-text.js';

/**
 * Digit values per level of the class trie: a level costs up to CLASS_RADIX - 1 set lookups and
 * one chain level. 4 keeps the lookups near the binary trie's (12 instead of 8 for 201 classes)
 * at half its depth; docs/iptables.md has the measurements behind it.
 */
export const CLASS_RADIX = 4;
/** Parts per level of the port search: up to PORT_RADIX - 1 range tests (cheap, native in nft). */
export const PORT_RADIX = 4;

/** What an endpoint chain needs to run its table in one family. */
export interface TableLayout {
  /** Where the endpoint chain goes once conntrack let a new connection through. */
  root: string;
  chains: ChainSpec[];
  /** The class-digit sets (none when every address of the family gets the same answer). */
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
  flows: FlowSets | undefined;
  chains: Chains;
}

/** The entry's own chain: Log rules, the Pass rule's count, then the decision as the walk makes it. */
function outcome(ctx: Context, entry: TableEntry): string {
  const rules = entry.logged.flatMap((id) => logRules(ctx.flows, '', id));
  // The walk counts the Pass rule that matched (its RETURN carries the rule's comment).
  if (entry.passedBy !== undefined) rules.push(comment(entry.passedBy));
  const isDefault = entry.rule === defaultRuleId(ctx.rs.endpoint, ctx.rs.direction);
  const commentId = !isDefault
    ? entry.rule
    : entry.verdict === 'deny'
      ? DEFAULT_DENY_COMMENT
      : DEFAULT_ALLOW_COMMENT;
  const target = entry.verdict === 'allow' ? GOTO_ALLOW : '-j DROP';
  rules.push(...decision(ctx.flows, '', commentId, entry.verdict, entry.rule, target));
  return ctx.chains.chain(rules);
}

function portMatch(protocol: PortProtocol, first: number, last: number): string {
  const proto = protocol.toLowerCase();
  return `-p ${proto} -m ${proto} --dport ${first === last ? `${first}` : `${first}:${last}`}`;
}

/** `items` cut into at most `parts` runs of (nearly) equal length, in order. */
function split<T>(items: readonly T[], parts: number): T[][] {
  const n = Math.min(parts, items.length);
  return Array.from({ length: n }, (_, i) =>
    items.slice(Math.floor((i * items.length) / n), Math.floor(((i + 1) * items.length) / n)),
  );
}

interface PortRange {
  first: number;
  last: number;
  target: string;
}

/**
 * One level of the search over sorted, disjoint ranges covering every port: a range test per
 * part but the last, which is the default (`-p <protocol> -g …`: within its protocol, the ranges
 * left). Returns the level's rules; a single range is just a goto its outcome.
 */
function portLevel(ctx: Context, protocol: PortProtocol, ranges: readonly PortRange[]): string[] {
  if (ranges.length === 1) return [`-g ${(ranges[0] as PortRange).target}`];
  const parts = split(ranges, PORT_RADIX);
  const below = (part: PortRange[]): string => ctx.chains.chain(portLevel(ctx, protocol, part));
  const rules = parts.slice(0, -1).map((part) => {
    const first = (part[0] as PortRange).first;
    const last = (part[part.length - 1] as PortRange).last;
    return `${portMatch(protocol, first, last)} -g ${below(part)}`;
  });
  rules.push(`${protocolMatch(protocol, ctx.family)} -g ${below(parts[parts.length - 1] as PortRange[])}`);
  return rules;
}

/** A protocol's ranges with their outcomes, neighbours that render the same outcome joined. */
function portRanges(ctx: Context, entries: readonly PortEntry[]): PortRange[] {
  const ranges: PortRange[] = [];
  for (const e of entries) {
    const target = outcome(ctx, e);
    const prev = ranges[ranges.length - 1];
    if (prev && prev.target === target && prev.last + 1 === e.first) prev.last = e.last;
    else ranges.push({ first: e.first, last: e.last, target });
  }
  return ranges;
}

/**
 * A class's chain: per protocol the first level of its port search (no level of its own for the
 * protocol: that would cost nf_tables depth for one comparison), ICMP, and the class's `other`
 * entry for every other protocol. Protocols that decide like `other` everywhere are left out.
 */
function classChain(ctx: Context, cls: PeerClass): string {
  const other = outcome(ctx, cls.other);
  const rules: string[] = [];
  for (const p of PORT_PROTOCOLS) {
    const ranges = portRanges(ctx, cls.ports[p]);
    if (ranges.length === 1 && (ranges[0] as PortRange).target === other) continue;
    const level = portLevel(ctx, p, ranges);
    // A single outcome for every port comes back as a bare goto: it needs the protocol here.
    rules.push(...level.map((r) => (r.startsWith('-g ') ? `${protocolMatch(p, ctx.family)} ${r}` : r)));
  }
  const icmp = outcome(ctx, cls.icmp);
  if (icmp !== other) rules.push(`${protocolMatch('ICMP', ctx.family)} -g ${icmp}`);
  rules.push(`-g ${other}`);
  return ctx.chains.chain(rules);
}

/** Digit positions needed to write the numbers 0…n-1 in base CLASS_RADIX. */
function levelsFor(n: number): number {
  let levels = 0;
  for (let span = 1; span < n; span *= CLASS_RADIX) levels++;
  return levels;
}

function digit(n: number, level: number): number {
  return Math.floor(n / CLASS_RADIX ** level) % CLASS_RADIX;
}

/**
 * The table of one rule set in one family. Classes whose chains come out equal (and every class
 * without a prefix in this family) share a number; number 0 is what an address under no prefix
 * gets, so its digits are all 0, the one digit no set holds.
 */
export function renderTableLayout(
  rs: TableRuleSet,
  family: Family,
  flows: FlowSets | undefined,
): TableLayout {
  const chains = new Chains(rs.endpoint, rs.direction);
  const ctx: Context = { rs, family, flows, chains };
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
  const remote = rs.direction === 'ingress' ? 'src' : 'dst';
  const sets = new Map<string, SetSpec>();
  /** The set of the prefixes whose number has `value` at digit `level` (made when first named). */
  const setOf = (level: number, value: number): string => {
    const members = prefixes
      .filter((p) => digit(numberOf.get(p.classId) ?? 0, level) === value)
      .flatMap((p) => netEntries(p.cidr));
    const name = tableSetName(rs.endpoint, rs.direction, family, level, value, members);
    sets.set(name, {
      name,
      irId: `${rs.endpoint}/${rs.direction}`,
      type: 'hash:net',
      family,
      members,
      description: `decision table of ${rs.endpoint} (${rs.direction}), IPv${family} class digit ${level} = ${value}`,
      versioned: true,
    });
    return name;
  };
  // A trie over the class numbers, most significant digit first; `numbers` are those still
  // possible. A digit value no number left has is not tested; the last value left is the default.
  const trie = (numbers: number[], level: number): string => {
    if (numbers.length === 1) return leaves[numbers[0] as number] as string;
    const byDigit = new Map<number, number[]>();
    for (const n of numbers) byDigit.set(digit(n, level), [...(byDigit.get(digit(n, level)) ?? []), n]);
    // Digit 0 (in no set) is the default whenever it is possible: it needs no lookup.
    const values = [...byDigit.keys()].sort((a, b) => (a === 0 ? 1 : b === 0 ? -1 : a - b));
    const fallthrough = values.pop() as number;
    return chains.chain([
      ...values.map(
        (v) =>
          `-m set --match-set ${setOf(level, v)} ${remote} -g ${trie(byDigit.get(v) as number[], level - 1)}`,
      ),
      `-g ${trie(byDigit.get(fallthrough) as number[], level - 1)}`,
    ]);
  };
  const root = trie(
    leaves.map((_, i) => i),
    levelsFor(leaves.length) - 1,
  );
  return { root, chains: chains.list, sets: [...sets.values()] };
}
