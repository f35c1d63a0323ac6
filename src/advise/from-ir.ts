import type { IR } from '../ir/types.js';
import type { WorkloadInput } from './workload.js';

/** Reads a workload's shape from the IR of real manifests: the busiest node, the largest sets. */
export function workloadFromIR(ir: IR): WorkloadInput {
  const perNode = new Map<string, number>();
  for (const e of ir.endpoints) perNode.set(e.node, (perNode.get(e.node) ?? 0) + 1);
  const ruleCounts = ir.ruleSets.map((rs) => rs.globalRules.length + rs.kubernetesRules.length);
  const policyCounts = ir.ruleSets.map((rs) => rs.globalPolicies.length + rs.kubernetesPolicies.length);
  const prefilterSets = new Set(ir.prefilters.map((p) => p.set));
  const setSizes = ir.ipSets.filter((s) => !prefilterSets.has(s.id)).map((s) => s.cidrs.length);
  const prefilterEntries = ir.ipSets
    .filter((s) => prefilterSets.has(s.id))
    .reduce((n, s) => n + s.cidrs.length, 0);
  return {
    endpoints: Math.max(0, ...perNode.values()),
    policiesPerEndpoint: Math.max(0, ...policyCounts),
    rulesPerEndpoint: Math.max(0, ...ruleCounts),
    addressesPerSet: Math.max(0, ...setSizes),
    services: new Set(ir.services.map((s) => s.service)).size,
    externalServices: new Set(
      ir.services
        .filter((s) => s.nodePort !== undefined || (s.loadBalancerIPs?.length ?? 0) > 0)
        .map((s) => s.service),
    ).size,
    prefilterEntries,
    flowLogs: ir.ruleSets.some((rs) => rs.globalRules.some((r) => r.action === 'log')),
  };
}
