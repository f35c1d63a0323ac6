/**
 * `explain` for traffic from outside the cluster: `--from outside:NAME` (or an address) `--to
 * nodeport/NODE:PORT` or `lb/IP:PORT`. The service part says which backends are eligible through
 * which node and what source they see (see outside.ts); each backend then carries the policy
 * verdict of the translated packet, as explain through a cluster IP does.
 */
import type { IR, Protocol } from '../ir/types.js';
import type { Model } from '../model/types.js';
import { parseAddress } from '../util/ip.js';
import { allocateAddresses, OUTSIDE_RANGE } from './addresses.js';
import { withRuleSetsOf } from './build.js';
import { Oracle, type SideVerdict } from './evaluate.js';
import type {
  ExternalEntryExplanation,
  Explanation,
  ServiceBackendExplanation,
  ServiceExplanation,
  SideExplanation,
} from './explanation.js';
import { entryText, evaluateExternal, type ExternalEntry, type ExternalVerdict } from './outside.js';

/** How `explain` names a client outside the cluster: `outside:NAME` or `outside:ADDRESS`. */
export const OUTSIDE_PREFIX = 'outside:';

/** Every lab's default outside client, and the address a fresh lab gives it (the range's first). */
export const DEFAULT_OUTSIDE_CLIENT = 'client';

/**
 * The address of `outside:NAME|ADDRESS`; undefined for a source that is not `outside:`. Names come
 * from `clients` (a lab's outside clients); without them only the default client is known.
 */
export function resolveOutside(
  given: string,
  clients?: Readonly<Record<string, string>>,
): string | undefined {
  if (!given.startsWith(OUTSIDE_PREFIX)) return undefined;
  const name = given.slice(OUTSIDE_PREFIX.length);
  if (parseAddress(name)) return name;
  const known = clients ?? {
    [DEFAULT_OUTSIDE_CLIENT]: allocateAddresses(OUTSIDE_RANGE, 1, new Set())[0] as string,
  };
  const address = known[name];
  if (address === undefined) {
    const names = Object.keys(known).map((n) => `${OUTSIDE_PREFIX}${n}`);
    throw new Error(
      `there is no outside client '${name}' (outside clients: ${names.join(', ') || 'none'}; ` +
        `or give an address: ${OUTSIDE_PREFIX}ADDRESS)`,
    );
  }
  return address;
}

function entryExplanation(ir: IR, v: ExternalVerdict): ExternalEntryExplanation {
  const e = v.entry;
  const node = e.kind === 'nodeport' ? v.entryNodes[0] : undefined;
  const address =
    e.kind === 'lb' ? e.address : (ir.nodes.find((n) => n.name === node)?.externalAddress ?? e.node);
  return {
    kind: e.kind,
    given: entryText(e),
    address,
    port: e.port,
    ...(node !== undefined ? { node } : {}),
    externalTrafficPolicy: v.table?.externalTrafficPolicy ?? 'Cluster',
    entryNodes: v.entryNodes,
    unservedNodes: v.unservedNodes,
    ...(v.prefilter ? { prefilter: v.prefilter } : {}),
  };
}

function pathText(b: ServiceBackendExplanation): string {
  const via = `${b.endpoint} via ${b.entryNode ?? '?'}`;
  const own = b.sourceKind === 'client' ? `${via}, client address kept` : `${via}, source ${b.source} (SNAT)`;
  return b.otherSource ? `${own}${otherSourceText(b.otherSource, b.allowed)}` : own;
}

/** The other dataplane convention for a backend on the entry node, and its verdict when that differs. */
export function otherSourceText(
  o: NonNullable<ServiceBackendExplanation['otherSource']>,
  allowed: boolean,
): string {
  const who =
    o.sourceKind === 'client'
      ? `the eBPF backend keeps the client's address ${o.source}`
      : `netfilter backends masquerade to ${o.source}`;
  return ` [backend on the entry node: ${who}${o.allowed === allowed ? '' : `, and then ${o.allowed ? 'allows' : 'denies'} it`}]`;
}

/** The verdict in words: which backends, through which node, and what failed. */
function externalVerdict(s: ServiceExplanation, x: ExternalEntryExplanation): string {
  const port = `${x.given} (${s.name} port ${s.port}/${s.protocol}, externalTrafficPolicy ${x.externalTrafficPolicy})`;
  if (x.prefilter)
    return `denied: Prefilter ${x.prefilter.name} drops the client where it enters ${x.prefilter.node}, before ${port}`;
  if (s.problem === 'port-not-defined')
    return x.kind === 'nodeport'
      ? `refused: no service has node port ${x.port}/${s.protocol}, so nothing answers on ${x.address}:${x.port}`
      : `refused: no service has load-balancer address ${x.address} with port ${x.port}/${s.protocol}`;
  if (s.problem === 'no-endpoints') return `refused: ${port} has no endpoints`;
  if (s.problem === 'no-local-endpoints')
    return `dropped: ${x.unservedNodes.join(', ')} has no endpoint of its own for ${port}`;
  const allowed = s.backends.filter((b) => b.allowed);
  const denied = s.backends.filter((b) => !b.allowed).map(pathText);
  // Every path alike: one phrase for all of them, not one per entry node and backend.
  const pods = new Set(s.backends.map((b) => b.endpoint)).size;
  const all = `all ${pods} backends through ${x.entryNodes.join(', ')} (${
    x.externalTrafficPolicy === 'Local' ? 'client address kept' : 'source masqueraded to the entry node'
  })`;
  if (denied.length === 0)
    return `allowed to ${s.backends.length > 2 ? all : allowed.map(pathText).join('; ')}`;
  if (allowed.length === 0) return `denied to ${s.backends.length > 2 ? all : denied.join('; ')}`;
  return `allowed to ${allowed.length} of ${s.backends.length} paths; denied to ${denied.join('; ')} (connections there fail)`;
}

export interface ExternalQuery {
  /** As given (`outside:client`, an address). */
  from: string;
  /** The client's address. */
  client: string;
  entry: ExternalEntry;
  protocol: Protocol;
}

/**
 * Explains a connection from outside through a node port or load-balancer address. `side` turns
 * an evaluator side into its explanation (explain.ts owns the wording).
 */
export function explainExternal(
  model: Model,
  ir: IR,
  q: ExternalQuery,
  side: (s: SideVerdict) => SideExplanation,
): Explanation {
  if (q.protocol === 'ICMP')
    throw new Error(
      `${entryText(q.entry)} translates TCP, UDP and SCTP ports: give --protocol TCP, UDP or SCTP`,
    );
  // An agent's IR holds only its node's rule sets: every backend's comes from the model.
  const ruleIr = withRuleSetsOf(
    model,
    ir,
    ir.endpoints.map((e) => e.id),
  );
  const v = evaluateExternal(ruleIr, q.client, q.entry, q.protocol, new Oracle(ruleIr));
  const backends = v.paths.map((p): ServiceBackendExplanation => {
    const { verdict } = p;
    const allowed = verdict.allowed && p.serves;
    return {
      endpoint: p.backend.endpoint,
      address: p.backend.address,
      targetPort: p.backend.port,
      ...(p.backend.node ? { node: p.backend.node } : {}),
      entryNode: p.entryNode,
      source: p.source,
      sourceKind: p.sourceKind,
      ...(p.otherSource
        ? {
            otherSource: {
              source: p.otherSource.source,
              sourceKind: p.otherSource.sourceKind,
              allowed: p.otherSource.verdict.allowed && p.otherSource.serves,
            },
          }
        : {}),
      allowed,
      decidedAt: verdict.decidedAt,
      ...(verdict.prefilter ? { prefilter: verdict.prefilter } : {}),
      ...(verdict.egress ? { egress: side(verdict.egress) } : {}),
      ...(verdict.ingress ? { ingress: side(verdict.ingress) } : {}),
      summary: `${p.source} → ${p.backend.address}:${p.backend.port}: ${
        !verdict.allowed ? 'denied' : p.serves ? 'allowed' : 'allowed, but nothing listens there'
      }`,
    };
  });
  const table = v.table;
  const service = table
    ? model.services.find((s) => `${s.namespace}/${s.name}` === table.service)
    : undefined;
  const spec = service?.ports.find((p) => p.port === table?.port && p.protocol === table.protocol);
  const external = entryExplanation(ir, v);
  const explained: ServiceExplanation = {
    name: table?.service ?? '',
    address: table?.address ?? '',
    port: table?.port ?? q.entry.port,
    protocol: q.protocol as ServiceExplanation['protocol'],
    ...(spec?.name ? { portName: spec.name } : {}),
    ...(spec ? { targetPort: spec.targetPort } : {}),
    ports: service ? service.ports.map((p) => `${p.port}/${p.protocol}${p.name ? ` (${p.name})` : ''}`) : [],
    backends,
    ...(v.problem ? { problem: v.problem } : {}),
    skipped: [],
    ...(table?.affinity.mode === 'ClientIP' ? { affinityTimeoutSeconds: table.affinity.timeoutSeconds } : {}),
    external,
  };
  const shown = backends.find((b) => !b.allowed) ?? backends[0];
  const decidedAt = v.prefilter ? 'prefilter' : v.problem ? 'service' : (shown?.decidedAt ?? 'allowed');
  return {
    from: { given: q.from, address: q.client },
    to: { given: entryText(q.entry), address: external.address },
    protocol: q.protocol,
    port: q.entry.port,
    allowed: !v.prefilter && !v.problem && backends.every((b) => b.allowed),
    decidedAt,
    ...(v.prefilter
      ? { prefilter: v.prefilter.name }
      : shown?.prefilter
        ? { prefilter: shown.prefilter }
        : {}),
    ...(shown?.egress ? { egress: shown.egress } : {}),
    ...(shown?.ingress ? { ingress: shown.ingress } : {}),
    service: explained,
    summary: `${q.protocol} ${q.from} (${q.client}) → ${entryText(q.entry)}: ${externalVerdict(explained, external)}`,
  };
}
