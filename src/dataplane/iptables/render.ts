/**
 * One node's plan, and its text for `switchyard compile`: the scripts a first apply on an empty
 * node namespace runs, in the order it runs them (IPv4 and IPv6 tables run side by side). Later
 * applies run the same scripts restricted to what changed, and keep the old members of a changed
 * set until the rules are in (see apply.ts).
 */
import { irForNode } from '../../ir/slice.js';
import type { IR } from '../../ir/types.js';
import { tool } from './kernel.js';
import { tmpSetName } from './names.js';
import type { NodePlan } from './plan.js';
import { destroyScript, fillScript, renderSets, swappedSets, swapScript } from './render-sets.js';
import { renderTables, tableLayouts, type RenderOptions } from './render-rules.js';
import { restoreScript } from './script.js';
import type { IptablesMode } from './kernel.js';

export function planForNode(ir: IR, node: string, options: RenderOptions = {}): NodePlan {
  const nodeIr = irForNode(ir, node);
  const layouts = tableLayouts(nodeIr, node, options);
  const sets = renderSets(nodeIr);
  const tableSets = [...layouts.values()].flatMap((l) => l.sets);
  return {
    node,
    sets: [...sets, ...tableSets].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    tables: renderTables(nodeIr, node, sets, options, layouts),
  };
}

export function planText(plan: NodePlan, mode: IptablesMode): string {
  const out: string[] = [];
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
