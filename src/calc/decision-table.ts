/**
 * The decision table: one endpoint's ordered rules for one direction, resolved ahead of time into
 * (peer class × protocol × destination-port range) → verdict. A backend can then answer with one
 * prefix lookup and one port lookup instead of walking the rules, in constant time whatever the
 * policy size. Backend-neutral and exact: `lookup` equals `Oracle.evaluateSide` for every packet
 * (proven by test/unit/calc-decision-table.test.ts), so the Oracle stays the one definition.
 *
 * Construction, in short: every set CIDR and peerPortSet member address a rule uses cuts the
 * address space into atoms whose members no rule can tell apart; each atom's row (its entries
 * per protocol and port range) is computed by walking the rules once per port segment; atoms with
 * identical rows share a class, so the table grows with the distinct behaviours, not the sets.
 */
import {
  MAX_PORT,
  MAX_TABLE_ENTRIES,
  PORT_PROTOCOLS,
  tableSize,
  type DecisionTable,
  type PeerClass,
  type PeerPrefix,
  type PortEntry,
  type PortProtocol,
  type TableEntry,
  type TableOverflow,
} from '../ir/decision-table.js';
import { defaultRuleId } from '../ir/rule-ids.js';
import type { IR, IpPortSet, IpSet, PortRange, Protocol, Rule, RuleSet } from '../ir/types.js';
import {
  addressRangeToCidrs,
  familyBits,
  formatCidr,
  parseAddress,
  parseCidr,
  type Address,
  type Family,
} from '../util/ip.js';

/**
 * Either the table, or how large it would have been: past `maxEntries` the caller keeps the
 * rule walk (a table that does not fit the backend's map is worse than no table).
 */
export type DecisionTableBuild = { ok: true; table: DecisionTable } | { ok: false; overflow: TableOverflow };

export interface DecisionTableOptions {
  /** Default MAX_TABLE_ENTRIES. */
  maxEntries?: number;
}

/** An interval of one family's address space with its signature (what rules can see of it). */
interface Atom {
  family: Family;
  start: bigint;
  end: bigint;
  signature: Signature;
}

/** The referenced sets containing an atom, and its address when it is a peerPortSet member. */
interface Signature {
  key: string;
  sets: ReadonlySet<string>;
  member?: string;
}

/** What building needs of the IR: the rule set, and its port sets by member address. */
interface Context {
  ruleSet: RuleSet;
  /** peerPortSet id → canonical member address → ports. */
  memberPorts: Map<string, Map<string, number[]>>;
}

/** Ports of a rule at one atom and protocol: every port, or only these ranges. */
type PortConstraint = 'any' | PortRange[];

/**
 * The table of one endpoint and direction, or its size when it exceeds `maxEntries`: the check
 * runs on the merged table, since merging is what keeps real policies far below the bound.
 */
export function buildDecisionTable(
  ir: IR,
  ruleSet: RuleSet,
  opts: DecisionTableOptions = {},
): DecisionTableBuild {
  const maxEntries = opts.maxEntries ?? MAX_TABLE_ENTRIES;
  const rules = [...ruleSet.globalRules, ...ruleSet.kubernetesRules];
  const portSets = referencedPortSets(ir, rules);
  const ctx: Context = { ruleSet, memberPorts: memberPortsOf(portSets) };
  const atoms = [4, 6].flatMap((f) => atomsOf(f as Family, spansOf(ir, rules, portSets, f as Family)));
  const { classes, classOfAtom } = classify(ctx, atoms);
  const table: DecisionTable = {
    endpoint: ruleSet.endpoint,
    direction: ruleSet.direction,
    prefixes: prefixesOf(atoms, classOfAtom),
    classes,
  };
  const size = tableSize(table);
  return size.entries > maxEntries ? { ok: false, overflow: { ...size, maxEntries } } : { ok: true, table };
}

/**
 * `ir` with a decision table on every rule set that fits `maxEntries` (and the overflow on those
 * that do not, which keep the rule walk). Rule sets whose rules differ only in their ids share
 * one construction (see withDecisionTable), renamed for each.
 */
export function withDecisionTables(ir: IR, opts: DecisionTableOptions = {}): IR {
  const built: TableBuilds = new Map();
  const ruleSets = ir.ruleSets.map((rs) => withDecisionTable(ir, rs, opts, built));
  return { ...ir, policyMode: 'table', ruleSets };
}

/**
 * Tables built so far, by the shape of the rules (ids and origins left out): rule sets that differ
 * only in which policies their rules come from (the same policy in every namespace, say) share one
 * construction.
 */
export type TableBuilds = Map<string, { build: DecisionTableBuild; ruleSet: RuleSet }>;

/** `rs` with its table (or its overflow), reusing a construction in `built` for the same rules. */
export function withDecisionTable(
  ir: IR,
  rs: RuleSet,
  opts: DecisionTableOptions,
  built: TableBuilds,
): RuleSet {
  const { table: _table, tableOverflow: _overflow, ...walk } = rs;
  const key = JSON.stringify([
    rs.direction,
    rs.kubernetesDefault,
    rs.globalRules.map(ruleShape),
    rs.kubernetesRules.map(ruleShape),
  ]);
  let known = built.get(key);
  if (!known) {
    known = { build: buildDecisionTable(ir, walk, opts), ruleSet: walk };
    built.set(key, known);
  }
  const { build } = known;
  if (!build.ok) return { ...walk, tableOverflow: build.overflow };
  const table = known.ruleSet === walk ? build.table : relabelled(build.table, known.ruleSet, walk);
  return { ...walk, table };
}

/** What a table reads of a rule: everything but its id and origin. */
function ruleShape(rule: Rule): Omit<Rule, 'id' | 'policy' | 'ruleIndex'> {
  const { id: _id, policy: _policy, ruleIndex: _index, ...shape } = rule;
  return shape;
}

/**
 * `table` as built for `from`, for a rule set `to` with rules of the same shape: each rule id (and
 * the default's) becomes the one at the same place in `to`. Ids are distinct within a rule set, so
 * the renaming is one-to-one and every comparison construction made still holds: the result is
 * the table construction would make for `to`.
 */
function relabelled(table: DecisionTable, from: RuleSet, to: RuleSet): DecisionTable {
  const rename = new Map<string, string>([
    [defaultRuleId(from.endpoint, from.direction), defaultRuleId(to.endpoint, to.direction)],
  ]);
  const toRules = [...to.globalRules, ...to.kubernetesRules];
  [...from.globalRules, ...from.kubernetesRules].forEach((r, i) => rename.set(r.id, toRules[i]?.id ?? r.id));
  const id = (rule: string): string => rename.get(rule) ?? rule;
  // `...e` first keeps the keys in construction order: the same JSON as a table built for `to`.
  const entry = <E extends TableEntry>(e: E): E => ({
    ...e,
    rule: id(e.rule),
    logged: e.logged.map(id),
    ...(e.passedBy === undefined ? {} : { passedBy: id(e.passedBy) }),
  });
  return {
    endpoint: to.endpoint,
    direction: table.direction,
    prefixes: table.prefixes,
    classes: table.classes.map((c) => ({
      ...c,
      icmp: entry(c.icmp),
      other: entry(c.other),
      ports: Object.fromEntries(PORT_PROTOCOLS.map((p) => [p, c.ports[p].map(entry)])) as PeerClass['ports'],
    })),
  };
}

function referencedPortSets(ir: IR, rules: readonly Rule[]): IpPortSet[] {
  const ids = new Set(rules.flatMap((r) => (r.peerPortSet === undefined ? [] : [r.peerPortSet])));
  // An unknown port set has no members, as in the Oracle.
  return ir.ipPortSets.filter((s) => ids.has(s.id));
}

/** Member addresses in canonical form, so lookups by any spelling of an address agree. */
function memberPortsOf(portSets: readonly IpPortSet[]): Map<string, Map<string, number[]>> {
  const out = new Map<string, Map<string, number[]>>();
  for (const s of portSets) {
    const byAddress = new Map<string, number[]>();
    for (const m of s.members) {
      const a = parseAddress(m.address);
      if (!a) continue; // never equal to a valid remote address: matches nothing, as in the Oracle
      const key = addressKey(a);
      byAddress.set(key, [...(byAddress.get(key) ?? []), m.port]);
    }
    out.set(s.id, byAddress);
  }
  return out;
}

function addressKey(a: Address): string {
  return `${a.family}:${a.value.toString(16)}`;
}

/** An inclusive interval that carries one signature key (`s:<set>` or `m:<address>`). */
interface Span {
  start: bigint;
  end: bigint;
  key: string;
}

/** Every interval of `family` a rule can tell apart from its neighbours. */
function spansOf(ir: IR, rules: readonly Rule[], portSets: readonly IpPortSet[], family: Family): Span[] {
  const setIds = new Set(rules.flatMap((r) => (r.peerSet === undefined ? [] : [r.peerSet])));
  const sets = setsById(ir);
  const spans: Span[] = [];
  for (const id of setIds) {
    const set = sets.get(id);
    if (!set) throw new Error(`IR references unknown set ${id}`);
    for (const r of rangesOf(set))
      if (r.family === family) spans.push({ start: r.start, end: r.end, key: `s:${id}` });
  }
  for (const m of portSets.flatMap((s) => s.members)) {
    const a = parseAddress(m.address);
    if (a?.family === family) spans.push({ start: a.value, end: a.value, key: `m:${addressKey(a)}` });
  }
  return spans;
}

/** Every table of an IR reads the same sets: index them once per IR, parse each once. */
const setIndex = new WeakMap<IR, Map<string, IpSet>>();
const setRanges = new WeakMap<IpSet, { family: Family; start: bigint; end: bigint }[]>();

function setsById(ir: IR): Map<string, IpSet> {
  let index = setIndex.get(ir);
  if (!index) setIndex.set(ir, (index = new Map(ir.ipSets.map((s) => [s.id, s]))));
  return index;
}

function rangesOf(set: IpSet): { family: Family; start: bigint; end: bigint }[] {
  const known = setRanges.get(set);
  if (known) return known;
  const ranges = set.cidrs.map((text) => {
    const c = parseCidr(text);
    if (!c) throw new Error(`set ${set.id} holds an invalid CIDR '${text}'`);
    return {
      family: c.family,
      start: c.base,
      end: c.base + (1n << BigInt(familyBits(c.family) - c.prefix)) - 1n,
    };
  });
  setRanges.set(set, ranges);
  return ranges;
}

/**
 * Sweeps the spans' edges into atoms: maximal intervals inside which the same sets and the same
 * member address hold, so one representative decides for every address of the atom.
 */
function atomsOf(family: Family, spans: readonly Span[]): Atom[] {
  const top = 1n << BigInt(familyBits(family));
  const events = new Map<bigint, { key: string; delta: number }[]>([[0n, []]]);
  const at = (p: bigint): { key: string; delta: number }[] =>
    events.get(p) ?? (events.set(p, []).get(p) as { key: string; delta: number }[]);
  for (const s of spans) {
    at(s.start).push({ key: s.key, delta: 1 });
    at(s.end + 1n).push({ key: s.key, delta: -1 });
  }
  const points = [...events.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const active = new Map<string, number>();
  const atoms: Atom[] = [];
  for (const [i, p] of points.entries()) {
    for (const e of events.get(p) ?? []) active.set(e.key, (active.get(e.key) ?? 0) + e.delta);
    if (p >= top) break;
    const end = (points[i + 1] ?? top) - 1n;
    atoms.push({ family, start: p, end, signature: signatureOf(active) });
  }
  return atoms;
}

function signatureOf(active: ReadonlyMap<string, number>): Signature {
  const keys = [...active].filter(([, n]) => n > 0).map(([k]) => k);
  keys.sort();
  const member = keys.find((k) => k.startsWith('m:'))?.slice(2);
  const sets = new Set(keys.filter((k) => k.startsWith('s:')).map((k) => k.slice(2)));
  return { key: keys.join(','), sets, ...(member === undefined ? {} : { member }) };
}

/**
 * Rows per signature, then classes per distinct row: class 0 is the row of addresses in no set,
 * and any atom that behaves exactly like them joins it (and needs no prefix at all).
 */
function classify(ctx: Context, atoms: readonly Atom[]): { classes: PeerClass[]; classOfAtom: number[] } {
  const classes: PeerClass[] = [];
  const idByRow = new Map<string, number>();
  // Many atoms share a signature (every member of the same sets): decide and compare its row once.
  const idBySignature = new Map<string, number>();
  const classOf = (sig: Signature): number => {
    const known = idBySignature.get(sig.key);
    if (known !== undefined) return known;
    const row = rowFor(ctx, sig);
    const rowKey = JSON.stringify(row);
    let id = idByRow.get(rowKey);
    if (id === undefined) {
      id = classes.length;
      classes.push({ id, ...row });
      idByRow.set(rowKey, id);
    }
    idBySignature.set(sig.key, id);
    return id;
  };
  classOf({ key: '', sets: new Set() }); // the rest is class 0
  const classOfAtom = atoms.map((atom) => classOf(atom.signature));
  return { classes, classOfAtom };
}

/** Adjacent atoms of one class merge before splitting into CIDRs: fewer, larger prefixes. */
function prefixesOf(atoms: readonly Atom[], classOfAtom: readonly number[]): PeerPrefix[] {
  const runs: { family: Family; start: bigint; end: bigint; classId: number }[] = [];
  for (const [i, atom] of atoms.entries()) {
    const classId = classOfAtom[i] as number;
    const last = runs[runs.length - 1];
    if (last && last.family === atom.family && last.classId === classId && last.end + 1n === atom.start)
      last.end = atom.end;
    else runs.push({ family: atom.family, start: atom.start, end: atom.end, classId });
  }
  return runs
    .filter((r) => r.classId !== 0)
    .flatMap((r) =>
      addressRangeToCidrs(r.family, r.start, r.end).map((c) => ({ cidr: formatCidr(c), classId: r.classId })),
    );
}

function rowFor(ctx: Context, sig: Signature): Omit<PeerClass, 'id'> {
  const ports = Object.fromEntries(PORT_PROTOCOLS.map((p) => [p, portEntries(ctx, sig, p)])) as Record<
    PortProtocol,
    PortEntry[]
  >;
  // Every rule applicable to ICMP has no port constraint (ports and port sets never match it).
  const icmp = decide(ctx.ruleSet, (r) => applicable(ctx, r, sig, 'ICMP') !== undefined);
  // Any other IP protocol (GRE, ESP, …): only rules that name no protocol, port or port set.
  const other = decide(
    ctx.ruleSet,
    (r) =>
      r.protocol === undefined &&
      r.ports === undefined &&
      r.peerPortSet === undefined &&
      (r.peerSet === undefined || sig.sets.has(r.peerSet)),
  );
  return { ports, icmp, other };
}

/**
 * Cuts 0–65535 at every edge of an applicable rule's ports, decides each segment by its first
 * port (no rule can tell a segment's ports apart), and merges neighbours that decide alike.
 */
function portEntries(ctx: Context, sig: Signature, protocol: PortProtocol): PortEntry[] {
  const all = [...ctx.ruleSet.globalRules, ...ctx.ruleSet.kubernetesRules];
  const applicableRules = new Map<Rule, PortConstraint>();
  const edges = new Set<number>([0]);
  for (const rule of all) {
    const ports = applicable(ctx, rule, sig, protocol);
    if (ports === undefined) continue;
    applicableRules.set(rule, ports);
    if (ports === 'any') continue;
    for (const r of ports) {
      edges.add(r.first);
      if (r.last < MAX_PORT) edges.add(r.last + 1);
    }
  }
  const starts = [...edges].sort((a, b) => a - b);
  const out: PortEntry[] = [];
  for (const [i, first] of starts.entries()) {
    const last = (starts[i + 1] ?? MAX_PORT + 1) - 1;
    const entry = decide(ctx.ruleSet, (rule) => {
      const ports = applicableRules.get(rule);
      return ports === 'any' || (ports?.some((r) => first >= r.first && first <= r.last) ?? false);
    });
    const prev = out[out.length - 1];
    if (prev && sameEntry(prev, entry)) prev.last = last;
    else out.push({ first, last, ...entry });
  }
  return out;
}

/**
 * Whether `rule` can match packets of `protocol` from the atom, and on which ports; undefined when
 * it never does. Mirrors `Oracle.ruleMatches` field by field.
 */
function applicable(
  ctx: Context,
  rule: Rule,
  sig: Signature,
  protocol: Protocol,
): PortConstraint | undefined {
  if (rule.protocol !== undefined && rule.protocol !== protocol) return undefined;
  if (rule.peerSet !== undefined && !sig.sets.has(rule.peerSet)) return undefined;
  let ports: PortConstraint = 'any';
  if (rule.ports !== undefined) {
    if (protocol === 'ICMP') return undefined;
    ports = rule.ports;
  }
  if (rule.peerPortSet !== undefined) {
    // The IR gives port sets a port protocol always; an ICMP packet has no port to match.
    if (protocol === 'ICMP' || sig.member === undefined) return undefined;
    const memberPorts = ctx.memberPorts.get(rule.peerPortSet)?.get(sig.member) ?? [];
    const within = ports;
    const hits = memberPorts.filter(
      (p) => within === 'any' || within.some((r) => p >= r.first && p <= r.last),
    );
    ports = hits.map((p) => ({ first: p, last: p }));
  }
  return ports !== 'any' && ports.length === 0 ? undefined : ports;
}

/** The rule walk of `Oracle.evaluateSide`, with matching decided by `matches`. */
function decide(ruleSet: RuleSet, matches: (rule: Rule) => boolean): TableEntry {
  const logged: string[] = [];
  let passedBy: string | undefined;
  for (const rule of ruleSet.globalRules) {
    if (!matches(rule)) continue;
    if (rule.action === 'log') logged.push(rule.id);
    else if (rule.action === 'pass') {
      passedBy = rule.id;
      break;
    } else
      return {
        verdict: rule.action === 'allow' ? 'allow' : 'deny',
        rule: rule.id,
        reason: 'global-rule',
        logged,
      };
  }
  const passed = passedBy === undefined ? {} : { passedBy };
  const allowing = ruleSet.kubernetesRules.find(matches);
  if (allowing) return { verdict: 'allow', rule: allowing.id, reason: 'kubernetes-rule', logged, ...passed };
  const rule = defaultRuleId(ruleSet.endpoint, ruleSet.direction);
  return ruleSet.kubernetesDefault === 'deny'
    ? { verdict: 'deny', rule, reason: 'kubernetes-default-deny', logged, ...passed }
    : { verdict: 'allow', rule, reason: 'no-policy', logged, ...passed };
}

function sameEntry(a: TableEntry, b: TableEntry): boolean {
  return (
    a.verdict === b.verdict &&
    a.rule === b.rule &&
    a.reason === b.reason &&
    a.passedBy === b.passedBy &&
    a.logged.length === b.logged.length &&
    a.logged.every((id, i) => id === b.logged[i])
  );
}
