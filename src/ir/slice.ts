/**
 * One node's share of the IR: the rule sets of its endpoints and exactly the sets those rules and
 * the node's prefilters name. Endpoints, nodes and services stay whole: they are cluster-wide
 * (peer sets, service backends, explain). calc builds it, the agent compares it to decide whether
 * a change costs this node kernel work, and each backend installs it.
 */
import type { IR, RuleSet } from './types.js';

/** Ids of the IP sets and IP-port sets that `ruleSets` reference. */
export function referencedSets(ruleSets: readonly RuleSet[]): {
  ipSets: Set<string>;
  ipPortSets: Set<string>;
} {
  const ipSets = new Set<string>();
  const ipPortSets = new Set<string>();
  for (const rs of ruleSets) {
    for (const r of rs.globalRules) {
      if (r.peerSet !== undefined) ipSets.add(r.peerSet);
      if (r.peerPortSet !== undefined) ipPortSets.add(r.peerPortSet);
    }
    for (const r of rs.kubernetesRules) {
      if (r.peerSet !== undefined) ipSets.add(r.peerSet);
      if (r.peerPortSet !== undefined) ipPortSets.add(r.peerPortSet);
    }
  }
  return { ipSets, ipPortSets };
}

/** Ids of the endpoints placed on `node`. */
export function localEndpointIds(ir: IR, node: string): Set<string> {
  return new Set(ir.endpoints.filter((e) => e.node === node).map((e) => e.id));
}

/** The slice of the IR one node installs: its endpoints' rule sets and what they reference. */
export function irForNode(ir: IR, node: string): IR {
  const local = localEndpointIds(ir, node);
  const ruleSets = ir.ruleSets.filter((rs) => local.has(rs.endpoint));
  const prefilters = ir.prefilters.filter((p) => p.nodes.includes(node));
  const { ipSets, ipPortSets } = referencedSets(ruleSets);
  for (const p of prefilters) ipSets.add(p.set);
  return {
    ...ir,
    ruleSets,
    prefilters,
    ipSets: ir.ipSets.filter((s) => ipSets.has(s.id)),
    ipPortSets: ir.ipPortSets.filter((s) => ipPortSets.has(s.id)),
  };
}
