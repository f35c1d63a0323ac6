/**
 * IR service tables → kube-proxy-style NAT, kube-proxy's iptables layout with SY- names, once per
 * family: the IPv4 tables in iptables, the IPv6 tables (`…/IPv6`, whose addresses and backends are
 * all IPv6) in ip6tables with the same chains — `/128` instead of `/32`, `[address]:port` in DNAT,
 * icmp6 rejects. Node ports are served on the node's external address, which is IPv4, so the IPv6
 * nat table has no SY-NODEPORTS:
 *
 *   nat PREROUTING/OUTPUT → SY-SERVICES:
 *     `-d VIP -p P --dport N -j SY-SVC-<port>` (internalTrafficPolicy Local: `-j SY-SVL-<port>`)
 *     `-d LB-IP -p P --dport N -j SY-EXT-<port>` per load-balancer address
 *     `-d <this node's external address> -j SY-NODEPORTS` last (only that address: never another
 *     address of the node, so nothing but the address the IR gives the node answers node ports)
 *   SY-NODEPORTS: `-p P --dport NP -j SY-EXT-<port>`.
 *   SY-EXT-<port> (externalTrafficPolicy): Cluster marks for masquerade (replies come back through
 *   this node) and goes to SY-SVC; Local keeps the client address and goes to SY-SVL (this node's
 *   backends only), except for traffic from the node itself, which is masqueraded and goes to SY-SVC.
 *   SY-SVC-<port> / SY-SVL-<port>: traffic from the node itself is marked for masquerade (its source
 *   is an address of the node no pod routes back to); with ClientIP affinity `-m recent --rcheck
 *   --seconds T` per backend (a client seen within the timeout goes back to its backend), then one
 *   rule per backend with `-m statistic --mode random --probability 1/(n-i)` (the last one
 *   unconditional), which picks each of n backends with probability 1/n.
 *   SY-SEP-<backend>: hairpin (`-s <backend> -j MARK`: a pod reaching itself through its service
 *   must not see its own address as the source, which the kernel drops as martian), affinity's
 *   `-m recent --set`, and DNAT to the backend's address:port.
 *   nat POSTROUTING → SY-POSTROUTING: MASQUERADE what carries MASQ_MARK (the mark is cleared first,
 *   so a packet that passes twice is not masqueraded twice).
 *
 *   filter FORWARD/INPUT/OUTPUT → SY-SVC-REJECT: what NAT did not translate. A service port without
 *   backends (at its VIP, load-balancer addresses and node port) and any other port of a VIP or
 *   load-balancer address are rejected; a Local policy with no backend on this node drops, as
 *   kube-proxy does ("has no local endpoints"). REJECT only exists in the filter table; these packets
 *   were not DNATed, so their destination is still the service's here. They reach the filter table
 *   because the node routes service and load-balancer addresses locally (local-routes.ts).
 *
 * Chains are keyed by service port and backend, so one endpoint change rewrites that service's
 * chains and adds or deletes its SEP chains only.
 */
import type { IR, ServiceBackend, ServicePortTable } from '../../ir/types.js';
import { exact, flat } from '../../util/intern.js';
import { hostPort } from '../../util/ip.js';
import { LastMemo } from '../../util/last-memo.js';
import { externalAddressOf, picksLocal, portView, type PortView } from '../netfilter/service-view.js';
import {
  commentText,
  MASQ_MARK,
  NODEPORTS_CHAIN,
  POSTROUTING_CHAIN,
  quote,
  serviceChain,
  serviceEndpointChain,
  serviceExternalChain,
  serviceLocalChain,
  SERVICES_CHAIN,
  SERVICES_REJECT_CHAIN,
  type Family,
} from './names.js';
import type { ChainSpec, JumpSpec, TablePlan } from './plan.js';

const JUMP_COMMENT = `-m comment --comment ${quote('switchyard')}`;
const MARK_MASQ = `-j MARK --or-mark ${MASQ_MARK}`;
const FROM_NODE = '-m addrtype --src-type LOCAL';

function comment(text: string): string {
  return `-m comment --comment ${quote(commentText(text))}`;
}

/** The service tables of one family (an IPv6 table is marked `family: 6`, see ir/types.ts). */
function tablesOfFamily(tables: readonly ServicePortTable[], family: Family): ServicePortTable[] {
  return tables.filter((t) => (t.family ?? 4) === family);
}

function familyOf(t: ServicePortTable): Family {
  return t.family ?? 4;
}

function hostMatch(address: string): string {
  return `${address}/${address.includes(':') ? 128 : 32}`;
}

/** `recent`'s key: the whole client address of the table's family. */
function recentMask(t: ServicePortTable): string {
  return familyOf(t) === 6 ? 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff' : '255.255.255.255';
}

function byId(tables: readonly ServicePortTable[]): ServicePortTable[] {
  return [...tables].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
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
function pickChain(name: string, t: ServicePortTable, list: readonly ServiceBackend[]): ChainSpec {
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
  return { name, rules };
}

function endpointChainSpec(t: ServicePortTable, b: ServiceBackend): ChainSpec {
  const sep = sepChain(t, b);
  const proto = t.protocol.toLowerCase();
  const set =
    t.affinity.mode === 'ClientIP' ? ` -m recent --name ${sep} --set --mask ${recentMask(t)} --rsource` : '';
  return {
    name: sep,
    rules: [
      `-s ${hostMatch(b.address)} ${comment(`${t.id} hairpin: ${b.endpoint} reaches itself`)} ${MARK_MASQ}`,
      `${comment(`${t.id} -> ${b.endpoint}`)} -p ${proto}${set} -j DNAT --to-destination ${hostPort(b.address, b.port)}`,
    ],
  };
}

/** SY-EXT: the externalTrafficPolicy of traffic from outside. */
function externalChain(v: PortView): ChainSpec {
  const t = v.table;
  const name = serviceExternalChain(t.id);
  if (t.externalTrafficPolicy !== 'Local')
    return {
      name,
      rules: [
        `${comment(`${t.id} from outside: masquerade (externalTrafficPolicy Cluster)`)} ${MARK_MASQ}`,
        `-j ${serviceChain(t.id)}`,
      ],
    };
  const rules = [
    `${FROM_NODE} ${comment(`${t.id} from the node itself: every backend`)} -j ${serviceChain(t.id)}`,
  ];
  // No backend here: nothing translates, and the filter table drops it (serviceRejectChain).
  if (v.local.length > 0)
    rules.push(
      `${comment(`${t.id} from outside: this node's backends, client address kept (externalTrafficPolicy Local)`)} -j ${serviceLocalChain(t.id)}`,
    );
  return { name, rules };
}

/** The chains of one service port with backends, and its entries in SY-SERVICES and SY-NODEPORTS. */
function serviceChains(v: PortView): { chains: ChainSpec[]; dispatch: string[]; nodePorts: string[] } {
  const t = v.table;
  const chains: ChainSpec[] = [pickChain(serviceChain(t.id), t, v.all)];
  if (picksLocal(v)) chains.push(pickChain(serviceLocalChain(t.id), t, v.local));
  const dispatch: string[] = [];
  if (v.internal.length > 0) {
    const target = t.internalTrafficPolicy === 'Local' ? serviceLocalChain(t.id) : serviceChain(t.id);
    dispatch.push(`${portMatch(t)} ${comment(t.id)} -j ${target}`);
  }
  const nodePorts: string[] = [];
  if (v.exposed) {
    const ext = serviceExternalChain(t.id);
    chains.push(externalChain(v));
    for (const ip of v.loadBalancerIPs)
      dispatch.push(`${portMatch(t, ip, t.port)} ${comment(`${t.id} load balancer ${ip}`)} -j ${ext}`);
    if (v.nodePort !== undefined)
      nodePorts.push(`${portOf(t, v.nodePort)} ${comment(`${t.id} node port`)} -j ${ext}`);
  }
  chains.push(...v.all.map((b) => endpointChainSpec(t, b)));
  return { chains, dispatch, nodePorts };
}

/**
 * What one service port renders to on one node: its nat chains and entries, its filter rules and
 * its load-balancer addresses. Every rule is a flat string (`flat`): a rule made by a template
 * literal is a V8 cons string, a tree of its pieces that stays a tree while the plan keeps it (at
 * 10k services the nat table's ~80k rules cost 31 MiB as trees, 13 MiB flat; docs/agent.md).
 */
interface PortRules {
  /** The node and external address they were rendered for. */
  key: string;
  chains: ChainSpec[];
  dispatch: string[];
  nodePorts: string[];
  filter: string[];
  loadBalancerIPs: string[];
}

/**
 * Each service port's rules: the incremental calculation hands an unchanged service table on as
 * the same object, so a service change renders that service's chains only (and flattens only
 * them), and every other chain is handed on as the same object for the diff to compare by
 * reference.
 */
const renderedPorts = new WeakMap<ServicePortTable, PortRules>();

function portRules(t: ServicePortTable, node: string, external: string | undefined): PortRules {
  const key = `${node}\0${external ?? ''}`;
  const hit = renderedPorts.get(t);
  if (hit?.key === key) return hit;
  const v = portView(t, node, external);
  const nat = v.all.length > 0 ? serviceChains(v) : { chains: [], dispatch: [], nodePorts: [] };
  const rules: PortRules = {
    key,
    chains: nat.chains.map((c) => ({ name: flat(c.name), rules: flatAll(c.rules) })),
    dispatch: flatAll(nat.dispatch),
    nodePorts: flatAll(nat.nodePorts),
    filter: flatAll(portFilterRules(v, external)),
    loadBalancerIPs: v.loadBalancerIPs,
  };
  renderedPorts.set(t, rules);
  return rules;
}

function flatAll(rules: readonly string[]): string[] {
  return rules.map(flat);
}

/** The external address node ports are served on in `family`'s table: IPv4 only. */
function externalOf(nodeIr: IR, node: string, family: Family): string | undefined {
  return family === 4 ? externalAddressOf(nodeIr, node) : undefined;
}

/** The nat table of the node in one family, or undefined when no service port of it has a backend. */
export function natTable(nodeIr: IR, node: string, family: Family = 4): TablePlan | undefined {
  // Node ports exist in the IPv4 table only (portView): the external address is IPv4.
  const external = externalOf(nodeIr, node, family);
  const dispatch: string[] = [];
  const nodePorts: string[] = [];
  const chains: ChainSpec[] = [];
  for (const t of byId(tablesOfFamily(nodeIr.services, family))) {
    if (t.backends.length === 0) continue;
    const r = portRules(t, node, external);
    for (const d of r.dispatch) dispatch.push(d);
    for (const n of r.nodePorts) nodePorts.push(n);
    for (const c of r.chains) chains.push(c);
  }
  if (chains.length === 0) return undefined;
  if (external !== undefined && nodePorts.length > 0) {
    dispatch.push(`-d ${hostMatch(external)} ${comment('node ports of this node')} -j ${NODEPORTS_CHAIN}`);
    chains.push({ name: NODEPORTS_CHAIN, rules: exact(nodePorts) });
  }
  chains.push({
    name: POSTROUTING_CHAIN,
    rules: [
      `-m mark ! --mark ${MASQ_MARK}/${MASQ_MARK} -j RETURN`,
      // Cleared so a packet that comes through again (re-routed) is not masqueraded twice.
      `-j MARK --xor-mark ${MASQ_MARK}`,
      `${comment('services: leave with the node address')} -j MASQUERADE --random-fully`,
    ],
  });
  const jumps: JumpSpec[] = [
    ...(['PREROUTING', 'OUTPUT'] as const).map((builtin) => ({
      builtin,
      rule: `${JUMP_COMMENT} -j ${SERVICES_CHAIN}`,
    })),
    { builtin: 'POSTROUTING', rule: `${JUMP_COMMENT} -j ${POSTROUTING_CHAIN}` },
  ];
  return {
    family,
    table: 'nat',
    chains: [{ name: SERVICES_CHAIN, rules: exact(dispatch) }, ...chains],
    jumps,
  };
}

/**
 * TCP gets a reset: a local client's connect() still holds its socket when the answer comes, and
 * Linux drops ICMP errors for a locked socket where it queues a RST.
 */
function reject(protocol: ServicePortTable['protocol'], family: Family): string {
  const unreachable = family === 6 ? 'icmp6-port-unreachable' : 'icmp-port-unreachable';
  return `-j REJECT --reject-with ${protocol === 'TCP' ? 'tcp-reset' : unreachable}`;
}

/** Filter rules of one service port: rejects without backends, drops under Local without a local one. */
function portFilterRules(v: PortView, external: string | undefined): string[] {
  const t = v.table;
  const rules: string[] = [];
  const outside = [
    ...v.loadBalancerIPs.map((ip) => portMatch(t, ip, t.port)),
    ...(v.nodePort !== undefined && external !== undefined ? [portMatch(t, external, v.nodePort)] : []),
  ];
  if (v.all.length === 0) {
    const why = comment(`${t.id} has no endpoints`);
    for (const m of [portMatch(t), ...outside]) rules.push(`${m} ${why} ${reject(t.protocol, familyOf(t))}`);
    return rules;
  }
  const drop = comment(`${t.id} has no local endpoints`);
  if (v.internal.length === 0) rules.push(`${portMatch(t)} ${drop} -j DROP`);
  if (v.external.length === 0) for (const m of outside) rules.push(`${m} ${drop} -j DROP`);
  return rules;
}

/**
 * Filter rules for what NAT did not translate: service ports without backends, Local policies
 * without a backend here, then every other port of a service or load-balancer address. Undefined
 * when there are no services.
 */
export function serviceRejectChain(
  nodeIr: IR,
  node: string,
  family: Family = 4,
): { chain: ChainSpec; jumps: JumpSpec[] } | undefined {
  const tables = byId(tablesOfFamily(nodeIr.services, family));
  if (tables.length === 0) return undefined;
  const external = externalOf(nodeIr, node, family);
  const ports = tables.map((t) => portRules(t, node, external));
  const rules: string[] = [];
  for (const p of ports) for (const r of p.filter) rules.push(r);
  const addresses = new Set([...tables.map((t) => t.address), ...ports.flatMap((p) => p.loadBalancerIPs)]);
  for (const address of [...addresses].sort()) {
    const why = comment('port not defined by the service');
    const d = `-d ${hostMatch(address)}`;
    rules.push(
      flat(`${d} -p tcp ${why} ${reject('TCP', family)}`),
      flat(`${d} ${why} ${reject('UDP', family)}`),
    );
  }
  return {
    chain: { name: SERVICES_REJECT_CHAIN, rules: exact(rules) },
    jumps: (['FORWARD', 'INPUT', 'OUTPUT'] as const).map((builtin) => ({
      builtin,
      rule: `${JUMP_COMMENT} -j ${SERVICES_REJECT_CHAIN}`,
    })),
  };
}

/** The service part of a node's plan: its nat table and its reject chain. */
export interface ServicePlan {
  nat: TablePlan | undefined;
  reject: { chain: ChainSpec; jumps: JumpSpec[] } | undefined;
}

/**
 * The service part of the last IR service list rendered, per family, node and external address
 * (all it depends on): an incremental IR hands unchanged services as the same array, so a change
 * that leaves them alone reuses the whole part, the same table object included (the diff then
 * skips the table without comparing its rules). Only the last list is kept (LastMemo says why;
 * measured: a WeakMap kept one more nat table of ~80k rules, 32 MiB, after each service change).
 * Shared, never changed.
 */
const renderedServices = new LastMemo<IR['services'], ServicePlan>();

export function servicePlan(nodeIr: IR, node: string, family: Family): ServicePlan {
  const key = `${family}\0${node}\0${externalAddressOf(nodeIr, node) ?? ''}`;
  return renderedServices.get(key, nodeIr.services, () => ({
    nat: natTable(nodeIr, node, family),
    reject: serviceRejectChain(nodeIr, node, family),
  }));
}
