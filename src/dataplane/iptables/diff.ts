/**
 * What an apply has to write: the new plan against the previous one (content, chain by chain and
 * set by set) and against the kernel (existence: a chain or set the kernel lacks is written even
 * if the previous plan had it; anything of ours the new plan lacks is deleted).
 */
import { SET_PREFIX, TMP_SUFFIX } from './names.js';
import type { KernelState, KernelTable } from './kernel.js';
import type { ChainRules, ChainSpec, NodePlan, SetSpec, TableName, TablePlan } from './plan.js';
import { sameChainRules, tableKey } from './plan.js';
import { sameSetContent, sameSetShape } from './render-sets.js';
import { isEmptyChange, type TableChange } from './script.js';
import type { Family } from './names.js';

export interface TableDiff {
  key: string;
  family: Family;
  table: TableName;
  change: TableChange;
}

/** A set the kernel has in the same shape: only the members that changed are added and deleted. */
export interface SetDelta {
  set: SetSpec;
  add: string[];
  del: string[];
}

export interface PlanDiff {
  /** Sets whose members are (re)loaded: built complete and swapped in. */
  sets: SetSpec[];
  /** Sets changed in place, member by member (no chain needs to be rewritten for them). */
  deltas: SetDelta[];
  /** Of those, the ones the kernel does not have yet. */
  missingSets: Set<string>;
  /** Ours in the kernel but not in the plan: destroyed after the rules stop using them. */
  obsoleteSets: string[];
  /** Temporary sets left by an interrupted apply. */
  leftoverTmpSets: string[];
  tables: TableDiff[];
}

/** Unchanged chains and sets are handed on as the same objects (the render memos): compared by reference first. */
function sameRules(a: ChainSpec | undefined, b: ChainSpec): boolean {
  return a !== undefined && sameChainRules(a, b);
}

/**
 * The members `next` adds to and deletes from `prev`, when the kernel's set can take them in place:
 * same type, family and size class (maxelem), not a flow or decision-table set, and a change no
 * longer than a rebuild would be. Undefined when it must be rebuilt.
 */
export function setDelta(prev: SetSpec, next: SetSpec): SetDelta | undefined {
  if (next.flow || next.versioned || prev.flow || prev.versioned || !sameSetShape(prev, next))
    return undefined;
  const before = new Set(prev.members);
  const after = new Set(next.members);
  const add = next.members.filter((m) => !before.has(m));
  const del = prev.members.filter((m) => !after.has(m));
  // A rebuild writes every member plus three lines (create, swap, destroy).
  if (add.length + del.length > next.members.length + 3) return undefined;
  return { set: next, add, del };
}

export function diffPlan(next: NodePlan, previous: NodePlan | undefined, kernel: KernelState): PlanDiff {
  const prevSets = new Map((previous?.sets ?? []).map((s) => [s.name, s]));
  const nextNames = new Set(next.sets.map((s) => s.name));
  const deltas: SetDelta[] = [];
  const sets = next.sets.filter((s) => {
    const prev = prevSets.get(s.name);
    if (prev === s && kernel.sets.has(s.name)) return false;
    if (prev && !s.flow && kernel.sets.has(s.name) && !sameSetContent(prev, s)) {
      const delta = setDelta(prev, s);
      if (delta) {
        deltas.push(delta);
        return false;
      }
    }
    // A flow set's elements are the kernel's counters: only a missing set, or one whose
    // parameters changed (then swapped for an empty one), is written.
    if (s.flow) return !kernel.sets.has(s.name) || (prev !== undefined && !sameSetContent(prev, s));
    return !prev || !kernel.sets.has(s.name) || !sameSetContent(prev, s);
  });
  const ours = [...kernel.sets].filter((n) => n.startsWith(SET_PREFIX));
  const leftoverTmpSets = ours.filter((n) => n.endsWith(TMP_SUFFIX));
  const obsoleteSets = ours.filter((n) => !n.endsWith(TMP_SUFFIX) && !nextNames.has(n));

  const prevTables = new Map((previous?.tables ?? []).map((t) => [tableKey(t.family, t.table), t]));
  const nextTables = new Map(next.tables.map((t) => [tableKey(t.family, t.table), t]));
  // IPv4 before IPv6, raw before filter: only for a stable, readable order; tables are independent.
  const rank = (k: string): number => (k.startsWith('ip6') ? 2 : 0) + (k.endsWith('/raw') ? 0 : 1);
  const keys = [...new Set([...nextTables.keys(), ...kernel.tables.keys()])].sort(
    (a, b) => rank(a) - rank(b),
  );
  const tables: TableDiff[] = [];
  for (const key of keys) {
    const plan = nextTables.get(key);
    const saved = kernel.tables.get(key);
    // The same table plan as before (the services' nat table while they stay put), on a kernel
    // known to hold exactly it: nothing to write, without comparing its tens of thousands of rules.
    if (
      plan &&
      plan === prevTables.get(key) &&
      saved &&
      savedTables.get(plan) === saved &&
      saved.chains.size === plan.chains.length
    )
      continue;
    const family = (plan?.family ?? saved?.family) as Family;
    const table = (plan?.table ?? saved?.table) as TableName;
    const prevChains = new Map((prevTables.get(key)?.chains ?? []).map((c) => [c.name, c]));
    const nextChainNames = new Set((plan?.chains ?? []).map((c) => c.name));
    const write = (plan?.chains ?? []).filter(
      (c) => !saved?.chains.has(c.name) || !sameRules(prevChains.get(c.name), c),
    );
    const deleteChains = [...(saved?.chains.keys() ?? [])].filter((n) => !nextChainNames.has(n));
    const wanted = new Set((plan?.jumps ?? []).map((j) => `${j.builtin} ${targetOf(j.rule)}`));
    const present = new Set<string>();
    const deleteJumps: TableChange['deleteJumps'] = [];
    for (const j of saved?.jumps ?? []) {
      const id = `${j.builtin} ${j.target}`;
      // A duplicate (say, from a hand-run command) goes too: one entry point per hook.
      if (!wanted.has(id) || present.has(id)) deleteJumps.push({ builtin: j.builtin, rule: j.rule });
      else present.add(id);
    }
    const insertJumps = (plan?.jumps ?? []).filter((j) => !present.has(`${j.builtin} ${targetOf(j.rule)}`));
    const change: TableChange = { write, deleteChains, insertJumps, deleteJumps };
    if (!isEmptyChange(change)) tables.push({ key, family, table, change });
  }
  return {
    sets,
    deltas,
    missingSets: new Set(sets.filter((s) => !kernel.sets.has(s.name)).map((s) => s.name)),
    obsoleteSets,
    leftoverTmpSets,
    tables,
  };
}

/**
 * What the kernel holds of ours once `plan` is applied, in the form readKernelState reads: the
 * backend's shadow of a node, so the next apply neither runs iptables-save nor lists the sets.
 * Rules are as we wrote them (valid iptables-restore input, as the saved ones are).
 */
export function kernelStateAfter(plan: NodePlan): KernelState {
  return {
    sets: new Set(plan.sets.map((s) => s.name)),
    tables: new Map(plan.tables.map((t) => [tableKey(t.family, t.table), savedTable(t)])),
  };
}

/**
 * What the kernel holds of each table plan once applied, by plan: a plan that hands an unchanged
 * table on as the same object gets the same kernel table back, so diffPlan can tell a table the
 * kernel holds exactly as planned without comparing its rules. Each chain is the plan's own
 * (never changed; the services' render their rules when read). Shared: a caller that edits a
 * KernelState copies it first.
 */
const savedTables = new WeakMap<TablePlan, KernelTable>();

function savedTable(t: TablePlan): KernelTable {
  let saved = savedTables.get(t);
  if (saved) return saved;
  saved = {
    family: t.family,
    table: t.table,
    chains: new PlannedChains(t.chains),
    jumps: t.jumps.map((j) => ({ ...j, target: targetOf(j.rule) })),
  };
  savedTables.set(t, saved);
  return saved;
}

/**
 * A planned table's chains by name, the map made when first asked: the shadow holds every table
 * it applied, and the next apply asks only a table it cannot skip whole (at 10k services the nat
 * table's map of 30,000 chains, 0.9 MiB, was held between applies for the next service change).
 * Its size is the plan's chain count (a plan names each chain once), which the skip compares.
 */
class PlannedChains implements ReadonlyMap<string, ChainRules> {
  private map: Map<string, ChainRules> | undefined;

  constructor(private readonly chains: readonly ChainSpec[]) {}

  private get byName(): Map<string, ChainRules> {
    return (this.map ??= new Map(this.chains.map((c) => [c.name, c])));
  }

  get size(): number {
    return this.chains.length;
  }

  get(name: string): ChainRules | undefined {
    return this.byName.get(name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  forEach(visit: (value: ChainRules, key: string, map: ReadonlyMap<string, ChainRules>) => void): void {
    for (const [name, chain] of this.byName) visit(chain, name, this);
  }

  keys(): MapIterator<string> {
    return this.byName.keys();
  }

  values(): MapIterator<ChainRules> {
    return this.byName.values();
  }

  entries(): MapIterator<[string, ChainRules]> {
    return this.byName.entries();
  }

  [Symbol.iterator](): MapIterator<[string, ChainRules]> {
    return this.byName.entries();
  }
}

function targetOf(rule: string): string {
  return / -[jg] (\S+)$/.exec(` ${rule}`)?.[1] ?? rule;
}
