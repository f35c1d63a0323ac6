/** Policies → one RuleSet per endpoint and direction (tiers and defaults as documented on RuleSet). */
import type { Direction, Endpoint, PolicyRef, Rule, RuleSet } from '../ir/types.js';
import type { GlobalPolicy, Model, NetworkPolicy, PolicyType } from '../model/types.js';
import { selectorMatches } from './selectors.js';
import type { SetResolver } from './sets.js';
import { translateRule } from './rules.js';

const TYPE: Record<Direction, PolicyType> = { ingress: 'Ingress', egress: 'Egress' };

export function globalPolicySelects(gp: GlobalPolicy, ep: Endpoint, direction: Direction): boolean {
  return (
    gp.types.includes(TYPE[direction]) &&
    selectorMatches(gp.selector, ep.labels) &&
    (!gp.namespaceSelector || selectorMatches(gp.namespaceSelector, ep.namespaceLabels))
  );
}

export function networkPolicySelects(np: NetworkPolicy, ep: Endpoint, direction: Direction): boolean {
  return (
    np.namespace === ep.namespace &&
    np.policyTypes.includes(TYPE[direction]) &&
    selectorMatches(np.podSelector, ep.labels)
  );
}

/** Global policies in evaluation order: `order` ascending, then name. */
export function orderedGlobalPolicies(model: Model): GlobalPolicy[] {
  return [...model.globalPolicies].sort(
    (a, b) => a.order - b.order || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
  );
}

function byName<T extends { namespace: string; name: string }>(a: T, b: T): number {
  const ka = `${a.namespace}/${a.name}`;
  const kb = `${b.namespace}/${b.name}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

export function buildRuleSets(model: Model, endpoints: readonly Endpoint[], sets: SetResolver): RuleSet[] {
  const globals = orderedGlobalPolicies(model);
  // A NetworkPolicy only ever selects pods of its own namespace: look at those alone.
  const byNamespace = new Map<string, NetworkPolicy[]>();
  for (const np of [...model.networkPolicies].sort(byName)) {
    const list = byNamespace.get(np.namespace);
    if (list) list.push(np);
    else byNamespace.set(np.namespace, [np]);
  }
  const out: RuleSet[] = [];
  for (const ep of endpoints) {
    const networkPolicies = byNamespace.get(ep.namespace) ?? [];
    for (const direction of ['egress', 'ingress'] as const) {
      const globalRules: Rule[] = [];
      const globalRefs: PolicyRef[] = [];
      for (const gp of globals) {
        if (!globalPolicySelects(gp, ep, direction)) continue;
        const policy: PolicyRef = { kind: 'GlobalPolicy', name: gp.name };
        globalRefs.push(policy);
        gp[direction].forEach((r, ruleIndex) => {
          globalRules.push(
            ...translateRule(
              {
                policy,
                direction,
                ruleIndex,
                action: r.action.toLowerCase() as Rule['action'],
                ...(r.peers ? { peers: r.peers } : {}),
                ...(r.ports ? { ports: r.ports } : {}),
                ...(r.protocol ? { protocol: r.protocol } : {}),
              },
              ep,
              sets,
            ),
          );
        });
      }
      const kubernetesRules: Rule[] = [];
      const kubernetesRefs: PolicyRef[] = [];
      for (const np of networkPolicies) {
        if (!networkPolicySelects(np, ep, direction)) continue;
        const policy: PolicyRef = { kind: 'NetworkPolicy', namespace: np.namespace, name: np.name };
        kubernetesRefs.push(policy);
        np[direction].forEach((r, ruleIndex) => {
          kubernetesRules.push(
            ...translateRule(
              {
                policy,
                direction,
                ruleIndex,
                action: 'allow',
                policyNamespace: np.namespace,
                ...(r.peers ? { peers: r.peers } : {}),
                ...(r.ports ? { ports: r.ports } : {}),
              },
              ep,
              sets,
            ),
          );
        });
      }
      out.push({
        endpoint: ep.id,
        direction,
        globalRules,
        kubernetesRules,
        kubernetesDefault: kubernetesRefs.length > 0 ? 'deny' : 'allow',
        globalPolicies: globalRefs,
        kubernetesPolicies: kubernetesRefs,
      });
    }
  }
  return out;
}
