/**
 * One node's plan, and its text for `switchyard compile`: the scripts a first apply on an empty
 * node namespace runs, in the order it runs them (IPv4 and IPv6 tables run side by side). Later
 * applies run the same scripts restricted to what changed, and keep the old members of a changed
 * set until the rules are in (see apply.ts).
 */
import { irForNode } from '../../ir/slice.js';
import type { IR, RuleSet } from '../../ir/types.js';
import { ruleTags } from '../netfilter/aggregates.js';
import { chainDepths, deepestThrough, LEVEL_MARGIN, MAX_LEVEL, NFT_MAX_LEVEL } from './depth.js';
import { tool } from './kernel.js';
import { endpointChain, FLOW_SET_MAXELEM, tmpSetName } from './names.js';
import type { NodePlan, TableFallback } from './plan.js';
import {
  destroyScript,
  fillScript,
  flowSetSpecs,
  renderSets,
  swappedSets,
  swapScript,
} from './render-sets.js';
import { renderTables, tableLayouts, type RenderOptions } from './render-rules.js';
import { restoreScript } from './script.js';
import type { IptablesMode } from './kernel.js';

/**
 * The node's plan. A decision table whose chains would nest deeper than nf_tables allows (see
 * depth.ts) is walked instead, for that endpoint and direction in both families: the walk decides
 * the same, only at its linear cost, where the table could not be committed at all.
 */
export function planForNode(ir: IR, node: string, options: RenderOptions = {}): NodePlan {
  const nodeIr = irForNode(ir, node);
  const first = renderPlan(nodeIr, node, options);
  const fallbacks = tooDeep(nodeIr, first, options.maxLevel ?? MAX_LEVEL);
  if (fallbacks.length === 0) return { ...first, fallbacks };
  const walked = new Set(fallbacks.map((f) => `${f.endpoint}|${f.direction}`));
  const ruleSets = nodeIr.ruleSets.map((rs) =>
    walked.has(`${rs.endpoint}|${rs.direction}`) ? withoutTable(rs) : rs,
  );
  const plan = renderPlan({ ...nodeIr, ruleSets }, node, options);
  for (const t of plan.tables) {
    const { deepest } = chainDepths(t);
    if (deepest > MAX_LEVEL)
      throw new Error(
        `the ${t.table} table's chains nest ${deepest} levels deep even without decision tables`,
      );
  }
  return { ...plan, fallbacks };
}

function withoutTable(rs: RuleSet): RuleSet {
  const { table: _table, ...rest } = rs;
  return rest;
}

function renderPlan(nodeIr: IR, node: string, options: RenderOptions): Omit<NodePlan, 'fallbacks'> {
  const layouts = tableLayouts(nodeIr, node, options);
  const sets = renderSets(nodeIr);
  const tableSets = [...layouts.values()].flatMap((l) => l.sets);
  const tables = renderTables(nodeIr, node, sets, options, layouts);
  let tags: ReturnType<typeof ruleTags> | undefined;
  const flowSets = flowSetSpecs(
    tables,
    () => (tags ??= ruleTags(nodeIr)),
    options.flowSetMaxElem ?? FLOW_SET_MAXELEM,
  );
  return {
    node,
    sets: [...sets, ...tableSets, ...flowSets].sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
    ),
    tables,
  };
}

/** Local rule sets whose table, as rendered in `plan`, reaches deeper than `maxLevel`. */
function tooDeep(nodeIr: IR, plan: Omit<NodePlan, 'fallbacks'>, maxLevel: number): TableFallback[] {
  const local = new Set(nodeIr.endpoints.filter((e) => e.node === plan.node).map((e) => e.id));
  const tabled = nodeIr.ruleSets.filter((rs) => rs.table && local.has(rs.endpoint));
  if (tabled.length === 0) return [];
  const out: TableFallback[] = [];
  const depths = plan.tables.filter((t) => t.table === 'filter').map((t) => ({ t, d: chainDepths(t) }));
  for (const rs of tabled) {
    const main = endpointChain(rs.endpoint, rs.direction, 'main');
    const deep = depths
      .map(({ t, d }) => ({ family: t.family, level: deepestThrough(d, main) ?? 0 }))
      .filter((x) => x.level > maxLevel);
    if (deep.length === 0) continue;
    const worst = deep.reduce((a, b) => (b.level > a.level ? b : a));
    out.push({
      endpoint: rs.endpoint,
      direction: rs.direction,
      reason:
        `its table's chains would nest ${worst.level} levels deep in IPv${worst.family} ` +
        `(nf_tables allows ${NFT_MAX_LEVEL}, this backend ${maxLevel}${maxLevel === MAX_LEVEL ? `: ${LEVEL_MARGIN} spare` : ''})`,
    });
  }
  return out;
}

export function planText(plan: NodePlan, mode: IptablesMode): string {
  const out: string[] = [];
  for (const f of plan.fallbacks)
    out.push(`# ${f.endpoint} ${f.direction}: walks its rules instead of its table (${f.reason})`);
  const setNames = new Set(plan.sets.map((s) => s.name));
  if (plan.sets.length) {
    out.push('# ipset restore  (build each set under a temporary name, swap it in, drop the old members)');
    for (const s of plan.sets) out.push(`# ${s.name}: ${s.description}`);
    const swapped = swappedSets(plan.sets, setNames);
    out.push(fillScript(plan.sets, setNames, []).trimEnd());
    if (swapped.length) {
      out.push(swapScript(swapped).trimEnd());
      out.push(destroyScript(swapped.map((s) => tmpSetName(s.name))).trimEnd());
    }
  }
  for (const t of plan.tables) {
    out.push(`# ${tool(mode, t.family, 'restore')} --noflush -w 10`);
    out.push(
      restoreScript(t.table, {
        write: t.chains,
        deleteChains: [],
        insertJumps: t.jumps,
        deleteJumps: [],
      }).trimEnd(),
    );
  }
  return out.join('\n') + '\n';
}
