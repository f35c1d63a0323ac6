/**
 * IR sets → ipsets, and the `ipset restore` scripts that load them. An IR set becomes a hash:net
 * (IpSet) or hash:ip,port (IpPortSet) of family inet, plus an inet6 twin when it has IPv6 members.
 * The IPv4 set always exists, even empty, so a label change that fills it only rewrites the set.
 */
import { referencedSets } from '../../ir/slice.js';
import type { IpPortSet, IpSet, IR } from '../../ir/types.js';
import type { TaggedRule } from '../netfilter/aggregates.js';
import {
  FLOW_SET_HASHSIZE,
  FLOW_SET_TIMEOUT_S,
  ipsetName,
  parseFlowSetName,
  tmpSetName,
  type Family,
} from './names.js';
import type { SetDelta } from './diff.js';
import type { ChainSpec, SetSpec, TablePlan } from './plan.js';

function familyOf(address: string): Family {
  return address.includes(':') ? 6 : 4;
}

/** hash:net cannot store a zero-length prefix: the whole space is its two halves. */
export function netEntries(cidr: string): string[] {
  if (cidr === '0.0.0.0/0') return ['0.0.0.0/1', '128.0.0.0/1'];
  if (cidr === '::/0') return ['::/1', '8000::/1'];
  return [cidr];
}

/**
 * The IR's sets that the rendered rules use: those of rule sets that are walked (a rule set with
 * a decision table has its own sets, see render-table.ts) and of prefilters.
 */
export function renderSets(nodeIr: IR): SetSpec[] {
  const used = referencedSets(nodeIr.ruleSets.filter((rs) => !rs.table));
  for (const p of nodeIr.prefilters) used.ipSets.add(p.set);
  const out: SetSpec[] = [];
  for (const s of nodeIr.ipSets) if (used.ipSets.has(s.id)) out.push(...memoSpecs(s, ipSetSpecs));
  for (const s of nodeIr.ipPortSets) if (used.ipPortSets.has(s.id)) out.push(...memoSpecs(s, ipPortSetSpecs));
  const names = new Set<string>();
  for (const s of out) {
    if (names.has(s.name)) throw new Error(`two IR sets map to ipset ${s.name}`);
    names.add(s.name);
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * The ipsets of each IR set: the incremental calculation hands an unchanged set on as the same
 * object, so its specs (members included) are the same objects from plan to plan and the diff
 * compares them by reference. Shared: never changed.
 */
const renderedSets = new WeakMap<IpSet | IpPortSet, SetSpec[]>();

function memoSpecs<S extends IpSet | IpPortSet>(s: S, render: (s: S) => SetSpec[]): SetSpec[] {
  let specs = renderedSets.get(s);
  if (!specs) renderedSets.set(s, (specs = render(s)));
  return specs;
}

function ipSetSpecs(s: IpSet): SetSpec[] {
  const out: SetSpec[] = [];
  for (const family of [4, 6] as const) {
    const members = s.cidrs.filter((c) => familyOf(c) === family).flatMap(netEntries);
    if (family === 6 && members.length === 0) continue;
    out.push({
      name: ipsetName(s.id, family),
      irId: s.id,
      type: 'hash:net',
      family,
      members,
      description: s.description,
    });
  }
  return out;
}

function ipPortSetSpecs(s: IpPortSet): SetSpec[] {
  const out: SetSpec[] = [];
  const proto = s.protocol.toLowerCase();
  for (const family of [4, 6] as const) {
    const members = s.members
      .filter((m) => familyOf(m.address) === family)
      .map((m) => `${m.address},${proto}:${m.port}`);
    if (family === 6 && members.length === 0) continue;
    out.push({
      name: ipsetName(s.id, family),
      irId: s.id,
      type: 'hash:ip,port',
      family,
      members,
      description: s.description,
    });
  }
  return out;
}

/** ipset's default maxelem is 65536; prefilter lists may hold up to a million entries. */
function maxElem(count: number): number {
  let n = 65536;
  while (n < count) n *= 2;
  return n;
}

/** Sized up front: growing a hash set rehashes it, which dominates loading a large deny-list. */
function hashSize(count: number): number {
  let n = 1024;
  while (n * 4 < count) n *= 2;
  return n;
}

export function createLine(spec: SetSpec, name: string): string {
  const family = `family ${spec.family === 4 ? 'inet' : 'inet6'}`;
  if (spec.flow)
    return `create ${name} ${spec.type} ${family} hashsize ${FLOW_SET_HASHSIZE} maxelem ${spec.flow.maxelem} timeout ${spec.flow.timeoutS} counters`;
  const n = spec.members.length;
  return `create ${name} ${spec.type} ${family} hashsize ${hashSize(n)} maxelem ${maxElem(n)}`;
}

export function sameSetContent(a: SetSpec, b: SetSpec): boolean {
  return (
    a.type === b.type &&
    a.family === b.family &&
    a.flow?.timeoutS === b.flow?.timeoutS &&
    a.flow?.maxelem === b.flow?.maxelem &&
    a.members.length === b.members.length &&
    a.members.every((m, i) => m === b.members[i])
  );
}

/**
 * Whether the kernel's set of `a` can hold `b`'s members as it is: same type and family, and the
 * same maxelem (a set changed member by member keeps the maxelem it was built with, so a change of
 * size class rebuilds it).
 */
export function sameSetShape(a: SetSpec, b: SetSpec): boolean {
  return (
    a.type === b.type && a.family === b.family && maxElem(a.members.length) === maxElem(b.members.length)
  );
}

/**
 * Member changes in place, one line each, set by set: additions before deletions, so an address
 * that is a member before and after (say, under a prefix that is split or merged) stays matched
 * throughout. `-exist`: a member already there (or already gone) is not an error.
 */
export function deltaScript(deltas: readonly SetDelta[]): string {
  const lines: string[] = [];
  for (const d of deltas) {
    for (const m of d.add) lines.push(`add -exist ${d.set.name} ${m}`);
    for (const m of d.del) lines.push(`del -exist ${d.set.name} ${m}`);
  }
  return lines.length ? lines.join('\n') + '\n' : '';
}

/** The lines that take back the first `done` lines of deltaScript(deltas), last first. */
export function undoDeltaScript(deltas: readonly SetDelta[], done: number): string {
  const lines = deltaScript(deltas)
    .split('\n')
    .filter((l) => l !== '')
    .slice(0, done);
  return lines
    .reverse()
    .map((l) => (l.startsWith('add ') ? `del ${l.slice(4)}` : `add ${l.slice(4)}`))
    .map((l) => `${l}\n`)
    .join('');
}

/**
 * A decision-table or flow set the kernel does not have yet is built complete under its own name:
 * no rule names it before the iptables step that follows. Every other changed set goes through
 * `-tmp`.
 */
export function builtInPlace(s: SetSpec, missing: ReadonlySet<string>): boolean {
  return (s.versioned === true || s.flow !== undefined) && missing.has(s.name);
}

/**
 * The flow sets the rendered rules name (rule-text.ts), found in the rules themselves so that
 * exactly those exist; `tags` (asked only for a chain not seen before) describes a decision set's
 * rule for `compile` output.
 */
export function flowSetSpecs(
  tables: readonly TablePlan[],
  tags: () => ReadonlyMap<number, TaggedRule>,
  maxelem: number,
): SetSpec[] {
  const byName = new Map<string, SetSpec>();
  for (const t of tables) for (const s of tableFlowSets(t, tags, maxelem)) byName.set(s.name, s);
  return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** A table handed on unchanged (the services' nat table) is not walked chain by chain again. */
const tableFlowSetSpecs = new WeakMap<TablePlan, { maxelem: number; specs: SetSpec[] }>();

function tableFlowSets(
  table: TablePlan,
  tags: () => ReadonlyMap<number, TaggedRule>,
  maxelem: number,
): SetSpec[] {
  const hit = tableFlowSetSpecs.get(table);
  if (hit?.maxelem === maxelem) return hit.specs;
  const specs = table.chains.flatMap((c) => chainFlowSets(c, tags, maxelem));
  tableFlowSetSpecs.set(table, { maxelem, specs });
  return specs;
}

/**
 * The flow sets each chain names: chains are handed on unchanged from plan to plan as the same
 * objects (memoEndpointChains, servicePlan), so only a new chain's rules are searched.
 */
const chainFlowSetSpecs = new WeakMap<ChainSpec, { maxelem: number; specs: SetSpec[] }>();

/** One shared answer for the chains that name no flow set (the services' ~30k at 10k services). */
let noFlowSetsMemo: { maxelem: number; specs: SetSpec[] } | undefined;

function noFlowSets(maxelem: number): { maxelem: number; specs: SetSpec[] } {
  if (noFlowSetsMemo?.maxelem !== maxelem) noFlowSetsMemo = { maxelem, specs: [] };
  return noFlowSetsMemo;
}

function chainFlowSets(
  chain: ChainSpec,
  tags: () => ReadonlyMap<number, TaggedRule>,
  maxelem: number,
): SetSpec[] {
  if (chain.namesNoFlowSet) return [];
  const hit = chainFlowSetSpecs.get(chain);
  if (hit?.maxelem === maxelem) return hit.specs;
  const names = new Set<string>();
  for (const r of chain.rules)
    for (const m of r.matchAll(/--(?:match|add)-set (sy-flow\S+)/g)) names.add(m[1] as string);
  if (names.size === 0) {
    chainFlowSetSpecs.set(chain, noFlowSets(maxelem));
    return [];
  }
  const specs = [...names].map((name): SetSpec => {
    const parsed = parseFlowSetName(name);
    if (!parsed) throw new Error(`rules name flow set ${name}, which is not a flow set name`);
    const tagged = parsed.tag !== undefined ? tags().get(parsed.tag) : undefined;
    return {
      name,
      irId: 'flows',
      type: 'hash:ip,port,ip',
      family: parsed.family,
      members: [],
      description:
        parsed.tag === undefined
          ? 'flows: established traffic per source, destination and port'
          : `flows: ${tagged ? `${tagged.verdict} by ${tagged.rule}` : `rule tag ${name.slice(-8)}`}`,
      flow: { timeoutS: FLOW_SET_TIMEOUT_S, maxelem },
    };
  });
  chainFlowSetSpecs.set(chain, { maxelem, specs });
  return specs;
}

/**
 * Phase 1: every changed set is built complete under its temporary name; sets the kernel does not
 * have yet are created empty under their real name so phase 2 can swap into them (decision-table
 * sets are built in place). Nothing that rules reference changes in this phase.
 */
export function fillScript(
  changed: readonly SetSpec[],
  missing: ReadonlySet<string>,
  leftovers: readonly string[],
): string {
  const lines: string[] = leftovers.map((n) => `destroy ${n}`);
  for (const s of changed) {
    const target = builtInPlace(s, missing) ? s.name : tmpSetName(s.name);
    lines.push(createLine(s, target));
    for (const m of s.members) lines.push(`add ${target} ${m}`);
    if (missing.has(s.name) && target !== s.name) lines.push(createLine(s, s.name));
  }
  return lines.length ? lines.join('\n') + '\n' : '';
}

/** The changed sets phase 2 swaps (all but those built in place). */
export function swappedSets(changed: readonly SetSpec[], missing: ReadonlySet<string>): SetSpec[] {
  return changed.filter((s) => !builtInPlace(s, missing));
}

/** Phase 2: each swap is atomic per set; after it the temporary name holds the old members. */
export function swapScript(swapped: readonly SetSpec[]): string {
  return swapped.map((s) => `swap ${tmpSetName(s.name)} ${s.name}\n`).join('');
}

export function destroyScript(names: readonly string[]): string {
  return names.map((n) => `destroy ${n}\n`).join('');
}
