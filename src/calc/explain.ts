/** Why a connection is allowed or denied, in words and as data (`switchyard explain`). */
import type { IR, PolicyRef, Protocol, Rule } from '../ir/types.js';
import { policyLabel } from '../ir/types.js';
import type { Model } from '../model/types.js';
import { parseAddress } from '../util/ip.js';
import { withRuleSetsOf } from './build.js';
import { Oracle, type SideVerdict } from './evaluate.js';
import type { Explanation, RuleRef, SideExplanation } from './explanation.js';

export type { ExplainPeer, Explanation, RuleRef, SideExplanation } from './explanation.js';

function sourceOf(model: Model, p: PolicyRef): string | undefined {
  const found =
    p.kind === 'NetworkPolicy'
      ? model.networkPolicies.find((n) => n.namespace === p.namespace && n.name === p.name)
      : model.globalPolicies.find((g) => g.name === p.name);
  return found ? `${found.source.file}:${found.source.line}` : undefined;
}

function ruleRef(model: Model, r: Rule): RuleRef {
  const source = sourceOf(model, r.policy);
  return {
    id: r.id,
    policy: policyLabel(r.policy),
    ruleIndex: r.ruleIndex,
    action: r.action,
    ...(source ? { source } : {}),
  };
}

function sideText(s: SideVerdict, ref?: RuleRef): string {
  const dir = s.direction === 'egress' ? 'egress from' : 'ingress to';
  const where = ref ? `${ref.policy} ${s.direction} rule ${ref.ruleIndex}` : '';
  switch (s.reason) {
    case 'global-rule':
      return `${dir} ${s.endpoint}: ${s.allowed ? 'allowed' : 'denied'} by ${where} (action ${ref?.action})`;
    case 'kubernetes-rule':
      return `${dir} ${s.endpoint}: allowed by ${where}`;
    case 'kubernetes-default-deny':
      return `${dir} ${s.endpoint}: denied: selected by ${s.ruleSet.kubernetesPolicies.map(policyLabel).join(', ')} and no rule allows it (default deny)`;
    case 'no-policy':
      return s.passedBy
        ? `${dir} ${s.endpoint}: allowed: passed to the Kubernetes tier, where no NetworkPolicy selects it`
        : `${dir} ${s.endpoint}: allowed: no policy selects it for ${s.direction}`;
  }
}

function explainSide(model: Model, s: SideVerdict): SideExplanation {
  const rule = s.rule ? ruleRef(model, s.rule) : undefined;
  return {
    endpoint: s.endpoint,
    direction: s.direction,
    allowed: s.allowed,
    reason: s.reason,
    globalPolicies: s.ruleSet.globalPolicies.map(policyLabel),
    networkPolicies: s.ruleSet.kubernetesPolicies.map(policyLabel),
    ...(rule ? { rule } : {}),
    ...(s.passedBy ? { passedBy: ruleRef(model, s.passedBy) } : {}),
    logged: s.logged.map((r) => ruleRef(model, r)),
    text: sideText(s, rule),
  };
}

/** Resolves `ns/pod` or an address to an address; throws with a helpful message otherwise. */
export function resolveEndpointOrAddress(ir: IR, given: string): string {
  if (parseAddress(given)) return given;
  const ep = ir.endpoints.find((e) => e.id === given);
  if (!ep) {
    throw new Error(
      `'${given}' is neither an address nor a pod (pods: ${ir.endpoints.map((e) => e.id).join(', ') || 'none'})`,
    );
  }
  const addr = ep.addresses[0];
  if (!addr) throw new Error(`pod ${given} has no address`);
  return addr;
}

export function explain(
  model: Model,
  ir: IR,
  q: { from: string; to: string; protocol: Protocol; port?: number },
): Explanation {
  const src = resolveEndpointOrAddress(ir, q.from);
  const dst = resolveEndpointOrAddress(ir, q.to);
  // An agent's IR holds only its node's rule sets: those of the pods asked about come from the model.
  const involved = ir.endpoints.filter((e) => e.addresses.includes(src) || e.addresses.includes(dst));
  const oracle = new Oracle(
    withRuleSetsOf(
      model,
      ir,
      involved.map((e) => e.id),
    ),
  );
  const v = oracle.evaluate({
    src,
    dst,
    protocol: q.protocol,
    ...(q.port !== undefined ? { dport: q.port } : {}),
  });
  const end = (given: string, address: string, id?: string) => {
    const ep = id ? oracle.endpointById(id) : undefined;
    return { given, address, ...(ep ? { endpoint: ep.id, node: ep.node } : {}) };
  };
  const egress = v.egress ? explainSide(model, v.egress) : undefined;
  const ingress = v.ingress ? explainSide(model, v.ingress) : undefined;
  const what = `${q.protocol}${q.port !== undefined ? ` port ${q.port}` : ''} ${q.from} → ${q.to}`;
  let summary: string;
  switch (v.decidedAt) {
    case 'same-pod':
      summary = `${what}: allowed (a pod talking to itself never leaves its network namespace)`;
      break;
    case 'prefilter':
      summary = v.prefilterReply
        ? `${what}: denied: Prefilter ${v.prefilter} drops the replies from ${dst} where they enter ${oracle.endpointById(v.srcEndpoint ?? '')?.node ?? 'the node'}`
        : `${what}: denied by Prefilter ${v.prefilter} before any policy`;
      break;
    default:
      summary = `${what}: ${v.allowed ? 'allowed' : 'denied'}`;
  }
  return {
    from: end(q.from, src, v.srcEndpoint),
    to: end(q.to, dst, v.dstEndpoint),
    protocol: q.protocol,
    ...(q.port !== undefined ? { port: q.port } : {}),
    allowed: v.allowed,
    decidedAt: v.decidedAt,
    ...(v.prefilter ? { prefilter: v.prefilter } : {}),
    ...(v.prefilterReply ? { prefilterReply: true } : {}),
    ...(egress ? { egress } : {}),
    ...(ingress ? { ingress } : {}),
    summary,
  };
}
