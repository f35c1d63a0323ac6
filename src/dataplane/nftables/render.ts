/** NftRuleset → `nft -f` script text. Flat commands, one object per line, so an error's line names the object. */
import { TABLE_REF } from './names.js';
import type { NftChain, NftRuleset, NftSet } from './objects.js';

/** Elements per `add element` line: long enough to load 1M prefilter entries quickly, short enough to read an error. */
export const ELEMENTS_PER_LINE = 256;

export function elementLines(verb: 'add' | 'delete', set: NftSet, elements: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < elements.length; i += ELEMENTS_PER_LINE) {
    out.push(
      `${verb} element ${TABLE_REF} ${set.name} { ${elements.slice(i, i + ELEMENTS_PER_LINE).join(', ')} }`,
    );
  }
  return out;
}

export function declareSet(set: NftSet): string[] {
  return [
    ...(set.note ? [`# ${set.note}`] : []),
    `add ${set.kind} ${TABLE_REF} ${set.name}${set.spec ? ` ${set.spec}` : ''}`,
  ];
}

export function declareChain(chain: NftChain): string {
  return `add chain ${TABLE_REF} ${chain.name}${chain.spec ? ` ${chain.spec}` : ''}`;
}

export function chainRules(chain: NftChain, withNote = true): string[] {
  return [
    ...(withNote && chain.note ? [`# ${chain.note}`] : []),
    ...chain.rules.map((r) => `add rule ${TABLE_REF} ${chain.name} ${r}`),
  ];
}

/**
 * The whole table as one transaction. `add table` + `delete table` makes the delete succeed
 * whether or not the table exists (nft 1.0.6 has no `destroy`), and since nft -f commits all or
 * nothing, the old table stays in force if any later line fails.
 */
export function renderFull(rs: NftRuleset): string {
  const lines: string[] = [
    `# switchyard nftables ruleset for node ${rs.node}: one atomic transaction (nft -f)`,
    `add table ${TABLE_REF}`,
    `delete table ${TABLE_REF}`,
    `add table ${TABLE_REF}`,
    '',
    '# address sets (IR IpSets: disjoint prefixes; IpPortSets: address . port)',
  ];
  for (const set of rs.sets) lines.push(...declareSet(set), ...elementLines('add', set, set.elements));
  lines.push('', '# chains (declared first so every jump, goto and verdict map element resolves)');
  for (const chain of rs.chains.filter((c) => !c.base)) lines.push(declareChain(chain));
  lines.push('', '# verdict maps (dispatch by interface; decision tables), before the rules that name them');
  for (const map of rs.maps) lines.push(...declareSet(map), ...elementLines('add', map, map.elements));
  lines.push('', '# rules');
  for (const chain of rs.chains.filter((c) => !c.base)) lines.push(...chainRules(chain));
  lines.push('', '# hooks');
  for (const chain of rs.chains.filter((c) => c.base))
    lines.push(...(chain.note ? [`# ${chain.note}`] : []), declareChain(chain), ...chainRules(chain, false));
  return lines.join('\n') + '\n';
}
