/** Rule ids (IR ids and the synthetic ones counters and flows use) → the policy and action behind them. */
import { defaultRuleId, prefilterOfRule } from '../ir/rule-ids.js';
import { policyLabel, type IR, type PolicyRef, type Rule } from '../ir/types.js';
import type { RuleDescription } from './metrics.js';

const DEFAULT = /^(.+)\/(ingress|egress)\/default$/;
const FAIL_CLOSED = /\/(ingress|egress)\/fail-closed\/[^/]+$/;

export class RuleCatalog {
  private readonly rules = new Map<string, Rule>();
  private readonly defaults = new Map<string, 'allow' | 'deny'>();

  constructor(ir: IR | undefined) {
    for (const rs of ir?.ruleSets ?? []) {
      for (const r of [...rs.globalRules, ...rs.kubernetesRules]) this.rules.set(r.id, r);
      this.defaults.set(defaultRuleId(rs.endpoint, rs.direction), rs.kubernetesDefault);
    }
  }

  /** Label of the policy a rule belongs to; undefined for defaults, fail-closed drops and prefilters. */
  policyOf(id: string): string | undefined {
    const r = this.rules.get(id);
    return r ? policyLabel(r.policy) : undefined;
  }

  /** Kind, name and action of a rule, as metric labels (no spaces: the kind is a label of its own). */
  describe(id: string): RuleDescription {
    const r = this.rules.get(id);
    if (r) return { kind: r.policy.kind, policy: policyName(r.policy), action: r.action };
    const prefilter = prefilterOfRule(id);
    if (prefilter !== undefined) return { kind: 'Prefilter', policy: prefilter, action: 'deny' };
    if (FAIL_CLOSED.test(id)) return { kind: 'fail_closed', policy: '', action: 'deny' };
    const d = DEFAULT.exec(id);
    if (d) return { kind: 'default', policy: '', action: this.defaults.get(id) ?? 'deny' };
    return { kind: '', policy: '', action: '' };
  }
}

/** `namespace/name` of a NetworkPolicy, `name` of a GlobalPolicy. */
function policyName(p: PolicyRef): string {
  return p.kind === 'NetworkPolicy' ? `${p.namespace ?? ''}/${p.name}` : p.name;
}
