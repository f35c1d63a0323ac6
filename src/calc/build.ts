/**
 * Model + allocations → IR: the whole calculation, pure and deterministic (input order never
 * matters). It allocates nothing: every pod and service needs its allocation (see allocate.ts).
 */
import { irForNode } from '../ir/slice.js';
import type { IR, Prefilter } from '../ir/types.js';
import type { Model } from '../model/types.js';
import type { BuildOptions } from './api.js';
import { nodeExternalAddress, nodeFabricAddress } from './addresses.js';
import type { Allocations } from './allocate.js';
import { withDecisionTables } from './decision-table.js';
import { buildEndpoints } from './endpoints.js';
import { buildRuleSets } from './policy.js';
import { buildServices } from './services.js';
import { setId, SetRegistry } from './sets.js';

export function buildIR(model: Model, allocations: Allocations, opts: BuildOptions = {}): IR {
  const nodes = allocations.nodes;
  const endpoints = buildEndpoints(model, allocations);
  const sets = new SetRegistry(endpoints);
  const node = opts.node;
  const ruleSets = buildRuleSets(
    model,
    node === undefined ? endpoints : endpoints.filter((e) => e.node === node),
    sets,
  );
  const prefilters = buildPrefilters(model, nodes, sets, node);
  const ir: IR = {
    version: 1,
    nodes: nodes.map((name, i) => ({
      name,
      address: nodeFabricAddress(i),
      externalAddress: nodeExternalAddress(i),
    })),
    endpoints,
    ipSets: sets.allIpSets(),
    ipPortSets: sets.allPortSets(),
    ruleSets,
    services: buildServices(model, endpoints, allocations, opts.readyPods),
    prefilters,
  };
  // A rule can resolve to nothing (a named port no local pod has) after its set was made: slicing
  // keeps exactly the sets the node's rules and prefilters reference, as irForNode does.
  const sliced = node === undefined ? ir : irForNode(ir, node);
  return opts.policyMode === 'table'
    ? withDecisionTables(
        sliced,
        opts.maxTableEntries === undefined ? {} : { maxEntries: opts.maxTableEntries },
      )
    : sliced;
}

function buildPrefilters(
  model: Model,
  nodes: readonly string[],
  sets: SetRegistry,
  node: string | undefined,
): Prefilter[] {
  return [...model.prefilters]
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .flatMap((p) => {
      const on = p.nodes ? nodes.filter((n) => p.nodes?.includes(n)) : [...nodes];
      if (node !== undefined && !on.includes(node)) return [];
      return [
        {
          name: p.name,
          nodes: on,
          set: sets.cidrSet(setId(`prefilter:${p.name}`, 'sy-pf-'), `prefilter ${p.name}`, p.cidrs),
        },
      ];
    });
}

/**
 * `ir` with the rule sets of `endpointIds` and every prefilter, computed from `model` when `ir` is
 * a node's slice without them (an agent's IR, see BuildOptions.node): what the evaluator needs to
 * decide traffic of any endpoint. Returns `ir` itself when nothing is missing.
 */
export function withRuleSetsOf(model: Model, ir: IR, endpointIds: readonly string[]): IR {
  const have = new Set(ir.ruleSets.map((rs) => rs.endpoint));
  const wanted = new Set(endpointIds.filter((id) => !have.has(id)));
  const missing = ir.endpoints.filter((e) => wanted.has(e.id));
  const prefiltersComplete = ir.prefilters.length >= model.prefilters.length;
  if (missing.length === 0 && prefiltersComplete) return ir;
  const sets = new SetRegistry(ir.endpoints);
  const ruleSets = [...ir.ruleSets, ...buildRuleSets(model, missing, sets)];
  const prefilters = prefiltersComplete
    ? ir.prefilters
    : buildPrefilters(
        model,
        ir.nodes.map((n) => n.name),
        sets,
        undefined,
      );
  const known = new Set(ir.ipSets.map((s) => s.id));
  const knownPorts = new Set(ir.ipPortSets.map((s) => s.id));
  return {
    ...ir,
    ruleSets,
    prefilters,
    ipSets: [...ir.ipSets, ...sets.allIpSets().filter((s) => !known.has(s.id))],
    ipPortSets: [...ir.ipPortSets, ...sets.allPortSets().filter((s) => !knownPorts.has(s.id))],
  };
}
