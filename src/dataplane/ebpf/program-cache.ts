/**
 * Generated policy programs kept from one apply to the next, per hook. A program is a pure
 * function of its rule set and the numbers it uses (counter slots, set indices, table index), so
 * a rule set that is the same object as last time (or equal to it) with the same numbers needs
 * neither generating nor hashing again: at 10k endpoints that is most of the JavaScript an
 * update spends on a node's hundreds of programs.
 */
import { isDeepStrictEqual } from 'node:util';
import { referencedSets } from '../../ir/slice.js';
import type { RuleSet } from '../../ir/types.js';
import { hookKey, slotKeysOf, type Allocation } from './node.js';
import { programHash, policyProgram, type GeneratedProgram } from './program.js';

export interface CachedProgram {
  ruleSet: RuleSet;
  /** The numbers the program was generated with (programNumbers). */
  numbers: string;
  generated: GeneratedProgram;
  hash: string;
}

/** The sets a rule set names, kept per rule set object (see slotKeysOf). */
const setsByRuleSet = new WeakMap<RuleSet, ReturnType<typeof referencedSets>>();

function setsOf(rs: RuleSet): ReturnType<typeof referencedSets> {
  let sets = setsByRuleSet.get(rs);
  if (!sets) setsByRuleSet.set(rs, (sets = referencedSets([rs])));
  return sets;
}

/** Every number `policyProgram(rs, alloc)` reads, as one string. */
export function programNumbers(rs: RuleSet, alloc: Allocation): string {
  const { ipSets, ipPortSets } = setsOf(rs);
  return [
    slotKeysOf(rs)
      .map((key) => alloc.slots[key])
      .join(','),
    [...ipSets].map((id) => alloc.sets[id]).join(','),
    [...ipPortSets].map((id) => alloc.portSets[id]).join(','),
    alloc.tables?.[hookKey(rs.endpoint, rs.direction)] ?? '-',
  ].join('|');
}

export class ProgramCache {
  private readonly byHook = new Map<string, CachedProgram>();

  /** The hook's program: the cached one when its rule set and numbers are unchanged, else generated. */
  program(rs: RuleSet, alloc: Allocation): { cached: boolean; entry: CachedProgram } {
    const key = hookKey(rs.endpoint, rs.direction);
    const numbers = programNumbers(rs, alloc);
    const old = this.byHook.get(key);
    if (old && old.numbers === numbers && (old.ruleSet === rs || isDeepStrictEqual(old.ruleSet, rs))) {
      // The same object next time skips the comparison.
      old.ruleSet = rs;
      return { cached: true, entry: old };
    }
    const generated = policyProgram(rs, alloc);
    return {
      cached: false,
      entry: { ruleSet: rs, numbers, generated, hash: programHash(generated.program) },
    };
  }

  /** Keeps exactly these programs (the node's hooks after a successful apply). */
  keep(entries: readonly CachedProgram[]): void {
    this.byHook.clear();
    for (const e of entries) this.byHook.set(hookKey(e.generated.endpoint, e.generated.direction), e);
  }
}
