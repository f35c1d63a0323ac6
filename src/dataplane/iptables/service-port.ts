/**
 * One service port as one node renders it (the layout is render-services.ts's): its nat chains,
 * and its parts of the shared chains (SY-SERVICES, SY-NODEPORTS, SY-SVC-REJECT). Only the chains'
 * names are kept; the rules are rendered from the port's IR table each time they are read. A
 * plan holds every service port's chains between applies, and an apply reads the rules of the
 * few it writes (a service change: that service's), so the text of the others, 12 MiB at 10k
 * services, would only be held (docs/agent.md). The IR table is never changed in place (the
 * incremental calculation hands a changed service on as a new object), so its rules render the
 * same every time.
 */
import type { ServiceBackend, ServicePortTable } from '../../ir/types.js';
import { exact, flat } from '../../util/intern.js';
import { hostPort } from '../../util/ip.js';
import { picksLocal, portView, type PortView } from '../netfilter/service-view.js';
import {
  commentText,
  MASQ_MARK,
  quote,
  serviceChain,
  serviceEndpointChain,
  serviceExternalChain,
  serviceLocalChain,
  type Family,
} from './names.js';
import type { ChainSpec } from './plan.js';

const MARK_MASQ = `-j MARK --or-mark ${MASQ_MARK}`;
const FROM_NODE = '-m addrtype --src-type LOCAL';

export function comment(text: string): string {
  return `-m comment --comment ${quote(commentText(text))}`;
}

function familyOf(t: ServicePortTable): Family {
  return t.family ?? 4;
}

export function hostMatch(address: string): string {
  return `${address}/${address.includes(':') ? 128 : 32}`;
}

/** `recent`'s key: the whole client address of the table's family. */
function recentMask(t: ServicePortTable): string {
  return familyOf(t) === 6 ? 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff' : '255.255.255.255';
}

function portOf(t: ServicePortTable, port: number): string {
  const proto = t.protocol.toLowerCase();
  return `-p ${proto} -m ${proto} --dport ${port}`;
}

function portMatch(t: ServicePortTable, address = t.address, port = t.port): string {
  return `-d ${hostMatch(address)} ${portOf(t, port)}`;
}

/** kube-proxy's probabilities: 1/(n-i) for backend i of n, printed with its precision. */
export function probability(i: number, n: number): string {
  return (1 / (n - i)).toFixed(10);
}

function sepChain(t: ServicePortTable, b: ServiceBackend): string {
  return serviceEndpointChain(t.id, b.endpoint, b.address, b.port);
}

/**
 * A chain that picks one of `list` (SY-SVC over every backend, SY-SVL over this node's): traffic
 * from the node itself is marked for masquerade first, then affinity, then the random pick.
 */
function pickRules(t: ServicePortTable, list: readonly ServiceBackend[]): string[] {
  const rules: string[] = [`${FROM_NODE} ${comment(`${t.id} from the node itself`)} ${MARK_MASQ}`];
  if (t.affinity.mode === 'ClientIP') {
    for (const b of list) {
      const sep = sepChain(t, b);
      rules.push(
        `${comment(`${t.id} -> ${b.endpoint}`)} -m recent --name ${sep} --rcheck --seconds ${t.affinity.timeoutSeconds} --reap --mask ${recentMask(t)} --rsource -j ${sep}`,
      );
    }
  }
  list.forEach((b, i) => {
    const pick =
      i < list.length - 1 ? ` -m statistic --mode random --probability ${probability(i, list.length)}` : '';
    rules.push(`${comment(`${t.id} -> ${b.endpoint}`)}${pick} -j ${sepChain(t, b)}`);
  });
  return rules;
}

function endpointRules(t: ServicePortTable, b: ServiceBackend): string[] {
  const sep = sepChain(t, b);
  const proto = t.protocol.toLowerCase();
  const set =
    t.affinity.mode === 'ClientIP' ? ` -m recent --name ${sep} --set --mask ${recentMask(t)} --rsource` : '';
  return [
    `-s ${hostMatch(b.address)} ${comment(`${t.id} hairpin: ${b.endpoint} reaches itself`)} ${MARK_MASQ}`,
    `${comment(`${t.id} -> ${b.endpoint}`)} -p ${proto}${set} -j DNAT --to-destination ${hostPort(b.address, b.port)}`,
  ];
}

/** SY-EXT: the externalTrafficPolicy of traffic from outside. */
function externalRules(v: PortView): string[] {
  const t = v.table;
  if (t.externalTrafficPolicy !== 'Local')
    return [
      `${comment(`${t.id} from outside: masquerade (externalTrafficPolicy Cluster)`)} ${MARK_MASQ}`,
      `-j ${serviceChain(t.id)}`,
    ];
  const rules = [
    `${FROM_NODE} ${comment(`${t.id} from the node itself: every backend`)} -j ${serviceChain(t.id)}`,
  ];
  // No backend here: nothing translates, and the filter table drops it (SY-SVC-REJECT).
  if (v.local.length > 0)
    rules.push(
      `${comment(`${t.id} from outside: this node's backends, client address kept (externalTrafficPolicy Local)`)} -j ${serviceLocalChain(t.id)}`,
    );
  return rules;
}

/**
 * TCP gets a reset: a local client's connect() still holds its socket when the answer comes, and
 * Linux drops ICMP errors for a locked socket where it queues a RST.
 */
export function reject(protocol: ServicePortTable['protocol'], family: Family): string {
  const unreachable = family === 6 ? 'icmp6-port-unreachable' : 'icmp-port-unreachable';
  return `-j REJECT --reject-with ${protocol === 'TCP' ? 'tcp-reset' : unreachable}`;
}

/** A port's pick chain over every backend, over this node's, its chain for traffic from outside, or one backend's. */
type PortChainOf = 'svc' | 'svl' | 'ext' | ServiceBackend;

/**
 * One nat chain of a service port; its rules are rendered from the port each time they are read.
 * Three fields (30,000 of these at 10k services): a backend's chain is told by its backend.
 */
class PortChain implements ChainSpec {
  constructor(
    readonly name: string,
    private readonly port: ServicePort,
    private readonly of: PortChainOf,
  ) {}

  get rules(): string[] {
    const t = this.port.table;
    if (typeof this.of !== 'string') return endpointRules(t, this.of);
    const v = this.port.view();
    if (this.of === 'ext') return externalRules(v);
    return pickRules(t, this.of === 'svc' ? v.all : v.local);
  }

  get namesNoFlowSet(): true {
    return true;
  }
}

// Shared by the many ports that have none (an empty array is 32 bytes each).
const NONE: readonly string[] = Object.freeze([]);
const NO_CHAINS: readonly ChainSpec[] = Object.freeze([]);

/** A service port as rendered for one node and external address (the node ports' address). */
export class ServicePort {
  /** Its nat chains (none without backends), in the order the nat table lists them. */
  readonly chains: readonly ChainSpec[];
  /** Its load-balancer addresses in this family, sorted. */
  readonly loadBalancerIPs: readonly string[];
  /** Whether it has a node port entry in SY-NODEPORTS. */
  readonly hasNodePort: boolean;

  constructor(
    readonly table: ServicePortTable,
    readonly node: string,
    readonly external: string | undefined,
  ) {
    const v = this.view();
    this.loadBalancerIPs = v.loadBalancerIPs.length ? v.loadBalancerIPs : NONE;
    this.hasNodePort = v.all.length > 0 && v.nodePort !== undefined;
    this.chains = v.all.length > 0 ? this.natChains(v) : NO_CHAINS;
  }

  view(): PortView {
    return portView(this.table, this.node, this.external);
  }

  private natChains(v: PortView): ChainSpec[] {
    const t = v.table;
    const chains = [new PortChain(flat(serviceChain(t.id)), this, 'svc')];
    if (picksLocal(v)) chains.push(new PortChain(flat(serviceLocalChain(t.id)), this, 'svl'));
    if (v.exposed) chains.push(new PortChain(flat(serviceExternalChain(t.id)), this, 'ext'));
    for (const b of v.all) chains.push(new PortChain(flat(sepChain(t, b)), this, b));
    // Of exactly its length: grown by push, a list of three keeps room for seventeen.
    return exact(chains);
  }

  /** Its entries in SY-SERVICES: the cluster IP, then each load-balancer address. */
  dispatch(): string[] {
    const v = this.view();
    if (v.all.length === 0) return [];
    const t = v.table;
    const out: string[] = [];
    if (v.internal.length > 0) {
      const target = t.internalTrafficPolicy === 'Local' ? serviceLocalChain(t.id) : serviceChain(t.id);
      out.push(`${portMatch(t)} ${comment(t.id)} -j ${target}`);
    }
    if (v.exposed)
      for (const ip of v.loadBalancerIPs)
        out.push(
          `${portMatch(t, ip, t.port)} ${comment(`${t.id} load balancer ${ip}`)} -j ${serviceExternalChain(t.id)}`,
        );
    return out;
  }

  /** Its entry in SY-NODEPORTS. */
  nodePorts(): string[] {
    const v = this.view();
    if (!this.hasNodePort || v.nodePort === undefined) return [];
    const t = v.table;
    return [`${portOf(t, v.nodePort)} ${comment(`${t.id} node port`)} -j ${serviceExternalChain(t.id)}`];
  }

  /** Its filter rules: rejects without backends, drops under Local without a local one. */
  filter(): string[] {
    const v = this.view();
    const t = v.table;
    const rules: string[] = [];
    const outside = [
      ...v.loadBalancerIPs.map((ip) => portMatch(t, ip, t.port)),
      ...(v.nodePort !== undefined && this.external !== undefined
        ? [portMatch(t, this.external, v.nodePort)]
        : []),
    ];
    if (v.all.length === 0) {
      const why = comment(`${t.id} has no endpoints`);
      for (const m of [portMatch(t), ...outside])
        rules.push(`${m} ${why} ${reject(t.protocol, familyOf(t))}`);
      return rules;
    }
    const drop = comment(`${t.id} has no local endpoints`);
    if (v.internal.length === 0) rules.push(`${portMatch(t)} ${drop} -j DROP`);
    if (v.external.length === 0) for (const m of outside) rules.push(`${m} ${drop} -j DROP`);
    return rules;
  }
}
