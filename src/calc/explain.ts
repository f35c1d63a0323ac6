/** Why a connection is allowed or denied, in words and as data (`switchyard explain`). */
import { familyAddress } from './reach.js';
import type { IR, PolicyRef, Protocol, Rule } from '../ir/types.js';
import { policyLabel } from '../ir/types.js';
import type { Model } from '../model/types.js';
import { parseAddress } from '../util/ip.js';
import { withRuleSetsOf } from './build.js';
import { Oracle, type SideVerdict } from './evaluate.js';
import { explainExternal, resolveOutside } from './explain-outside.js';
import { findServiceTarget, parseDestination, type ServiceTarget } from './explain-service.js';
import { internalBackends, parseExternalEntry } from './outside.js';
import type {
  Explanation,
  RuleRef,
  ServiceBackendExplanation,
  ServiceExplanation,
  SideExplanation,
} from './explanation.js';

export type {
  ExplainPeer,
  Explanation,
  ExternalEntryExplanation,
  RuleRef,
  ServiceBackendExplanation,
  ServiceExplanation,
  SideExplanation,
} from './explanation.js';

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
/** An address as given, or the pod's address (of `family` when asked: its IPv4 one by default). */
export function resolveEndpointOrAddress(ir: IR, given: string, family?: 4 | 6): string {
  if (parseAddress(given)) return given;
  const ep = ir.endpoints.find((e) => e.id === given);
  if (!ep) {
    throw new Error(
      `'${given}' is neither an address nor a pod (pods: ${ir.endpoints.map((e) => e.id).join(', ') || 'none'})`,
    );
  }
  const addr = family === undefined ? ep.addresses[0] : familyAddress(ep, family);
  if (!addr) throw new Error(`pod ${given} has no ${family === 6 ? 'IPv6 ' : ''}address`);
  return addr;
}

export interface ExplainQuery {
  /** A pod, an address, or a client outside the cluster: `outside:NAME` or `outside:ADDRESS`. */
  from: string;
  /**
   * A pod, an address, `A.B.C.D:PORT`, a service `svc/NS/NAME[:PORT]` or its cluster IP; from
   * outside also a node port `nodeport/NODE:PORT` or a load-balancer address `lb/IP:PORT`.
   */
  to: string;
  protocol: Protocol;
  port?: number;
  /** A lab's outside clients (name → address) for `outside:NAME`; default: the lab default `client`. */
  outside?: Readonly<Record<string, string>>;
  /** Pods given by name stand for their IPv4 (default) or IPv6 address. */
  family?: 4 | 6;
}

/**
 * The family an address among `from` and `to` implies (the destination's first), so pods named
 * at the other end stand for their address of that family; undefined when both are pods.
 */
export function impliedFamily(from: string, to: string): 4 | 6 | undefined {
  return parseAddress(parseDestination(to).target)?.family ?? parseAddress(from)?.family;
}

/** True when `to` carries its own port (`svc/NS/NAME:PORT`, `A.B.C.D:PORT`, `nodeport/…`, `lb/…`), so none is needed besides. */
export function destinationHasPort(to: string): boolean {
  return parseExternalEntry(to) !== undefined || parseDestination(to).port !== undefined;
}

/**
 * Why a new connection `from` → `to` is allowed or denied. A service destination is followed to
 * each backend pod it translates to, and the policy is explained there (egress of the source,
 * ingress of the backend on its target port).
 */
export function explain(model: Model, ir: IR, query: ExplainQuery): Explanation {
  const client = resolveOutside(query.from, query.outside);
  const entry = parseExternalEntry(query.to);
  if (entry) {
    if (query.port !== undefined && query.port !== entry.port)
      throw new Error(`'${query.to}' names port ${entry.port} but the port asked is ${query.port}: give one`);
    const from = client ?? resolveEndpointOrAddress(ir, query.from, query.family);
    if (ir.endpoints.some((e) => e.addresses.includes(from)))
      throw new Error(
        `${query.to} is for traffic from outside the cluster: from a pod, explain the service's cluster IP (svc/NS/NAME:PORT)`,
      );
    return explainExternal(
      model,
      ir,
      { from: query.from, client: from, entry, protocol: query.protocol },
      (s) => explainSide(model, s),
    );
  }
  const q = client === undefined ? query : { ...query, from: client };
  const dest = parseDestination(q.to);
  if (dest.port !== undefined && q.port !== undefined && dest.port !== q.port)
    throw new Error(`'${q.to}' names port ${dest.port} but the port asked is ${q.port}: give one`);
  const port = dest.port ?? q.port;
  const family = q.family ?? impliedFamily(q.from, q.to);
  const target = findServiceTarget(model, ir, dest, q.protocol, port, family);
  const asked = { ...q, ...(port !== undefined ? { port } : {}), ...(family ? { family } : {}) };
  if (!target) return explainPair(model, ir, { ...asked, to: dest.target }, q.to);
  if (port === undefined || q.protocol === 'ICMP')
    throw new Error(
      `service ${target.service.namespace}/${target.service.name} translates TCP, UDP and SCTP ports: give one (svc/NS/NAME:PORT or --port)`,
    );
  return explainService(model, ir, { ...asked, port }, target);
}

function explainService(
  model: Model,
  ir: IR,
  q: ExplainQuery & { port: number },
  target: ServiceTarget,
): Explanation {
  const name = `${target.service.namespace}/${target.service.name}`;
  const spec = target.service.ports.find((p) => p.port === q.port && p.protocol === q.protocol);
  const src = resolveEndpointOrAddress(ir, q.from, q.family);
  const srcEndpoint = ir.endpoints.find((e) => e.addresses.includes(src));
  const local = target.table?.internalTrafficPolicy === 'Local';
  const eligible = target.table ? internalBackends(target.table, srcEndpoint?.node) : [];
  const backends = eligible.map((b): ServiceBackendExplanation => {
    const x = explainPair(model, ir, {
      from: q.from,
      to: b.endpoint,
      protocol: q.protocol,
      port: b.port,
      family: target.table?.family ?? 4,
    });
    return {
      endpoint: b.endpoint,
      address: b.address,
      targetPort: b.port,
      ...(x.to.node ? { node: x.to.node } : {}),
      allowed: x.allowed,
      decidedAt: x.decidedAt,
      ...(x.prefilter ? { prefilter: x.prefilter } : {}),
      ...(x.egress ? { egress: x.egress } : {}),
      ...(x.ingress ? { ingress: x.ingress } : {}),
      summary: x.summary,
    };
  });
  const problem = !target.table
    ? 'port-not-defined'
    : target.table.backends.length === 0
      ? 'no-endpoints'
      : backends.length === 0
        ? 'no-local-endpoints'
        : undefined;
  const affinity = target.table?.affinity;
  const service: ServiceExplanation = {
    name,
    address: target.address,
    port: q.port,
    protocol: q.protocol,
    ...(spec?.name ? { portName: spec.name } : {}),
    ...(spec ? { targetPort: spec.targetPort } : {}),
    ports: target.ports,
    backends,
    ...(problem ? { problem } : {}),
    skipped: target.skipped,
    ...(affinity?.mode === 'ClientIP' ? { affinityTimeoutSeconds: affinity.timeoutSeconds } : {}),
    ...(local ? { internalTrafficPolicy: 'Local' as const } : {}),
  };
  const what = `${q.protocol} port ${q.port} ${q.from} → ${q.to}`;
  const shown = backends.find((b) => !b.allowed) ?? backends[0];
  const allowedTo = backends.filter((b) => b.allowed);
  return {
    from: {
      given: q.from,
      address: src,
      ...(srcEndpoint ? { endpoint: srcEndpoint.id, node: srcEndpoint.node } : {}),
    },
    to: { given: q.to, address: target.address },
    protocol: q.protocol,
    port: q.port,
    allowed: problem === undefined && allowedTo.length === backends.length,
    decidedAt: problem ? 'service' : (shown?.decidedAt ?? 'allowed'),
    ...(shown?.prefilter ? { prefilter: shown.prefilter } : {}),
    ...(shown?.egress ? { egress: shown.egress } : {}),
    ...(shown?.ingress ? { ingress: shown.ingress } : {}),
    service,
    summary: `${what}: ${serviceVerdict(service, allowedTo.length)}`,
  };
}

/** `allowed to 3 of 3 backends`, `denied: service web/web has no port 81/TCP (ports: 80/TCP (http))`. */
function serviceVerdict(s: ServiceExplanation, allowed: number): string {
  const port = `${s.port}/${s.protocol}`;
  if (s.problem === 'port-not-defined')
    return `denied: service ${s.name} has no port ${port} (ports: ${s.ports.join(', ') || 'none'}), so nothing translates the connection`;
  if (s.problem === 'no-local-endpoints')
    return `denied: service ${s.name} has internalTrafficPolicy Local and no endpoint for port ${port} on the client's node (the node drops it)`;
  if (s.problem === 'no-endpoints') {
    const why = s.skipped.length
      ? `: ${s.skipped.map((p) => `${p.pod} ${p.reason}`).join('; ')}`
      : ' (no ready pod matches its selector)';
    return `denied: service ${s.name} has no endpoints for port ${port}${why}`;
  }
  const n = s.backends.length;
  const plural = n === 1 ? 'backend' : 'backends';
  if (allowed === n) return `allowed to ${n === 1 ? 'its' : `all ${n}`} ${plural}`;
  if (allowed === 0) return `denied to ${n === 1 ? 'its' : `all ${n}`} ${plural}`;
  const denied = s.backends.filter((b) => !b.allowed).map((b) => b.endpoint);
  return `allowed to ${allowed} of ${n} backends, denied to ${denied.join(', ')} (connections to those fail)`;
}

function explainPair(model: Model, ir: IR, q: ExplainQuery, given = q.to): Explanation {
  const src = resolveEndpointOrAddress(ir, q.from, q.family);
  const dst = resolveEndpointOrAddress(ir, q.to, q.family);
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
  const what = `${q.protocol}${q.port !== undefined ? ` port ${q.port}` : ''} ${q.from} → ${given}`;
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
    to: end(given, dst, v.dstEndpoint),
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
