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
import type { IR, ServicePortTable } from '../../ir/types.js';
import { LastMemo } from '../../util/last-memo.js';
import { externalAddressOf } from '../netfilter/service-view.js';
import {
  MASQ_MARK,
  NODEPORTS_CHAIN,
  POSTROUTING_CHAIN,
  quote,
  SERVICES_CHAIN,
  SERVICES_REJECT_CHAIN,
  type Family,
} from './names.js';
import { PiecesChain } from './pieces-chain.js';
import type { ChainSpec, JumpSpec, TablePlan } from './plan.js';
import { comment, hostMatch, reject, ServicePort } from './service-port.js';

const JUMP_COMMENT = `-m comment --comment ${quote('switchyard')}`;

/** The service tables of one family (an IPv6 table is marked `family: 6`, see ir/types.ts). */
function tablesOfFamily(tables: readonly ServicePortTable[], family: Family): ServicePortTable[] {
  return tables.filter((t) => (t.family ?? 4) === family);
}

function byId(tables: readonly ServicePortTable[]): ServicePortTable[] {
  return [...tables].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * Each service port as rendered: the incremental calculation hands an unchanged service table on
 * as the same object, so a service change makes that service's port anew and hands every other
 * port's chains on as the same objects, for the diff to compare by reference.
 */
const renderedPorts = new WeakMap<ServicePortTable, ServicePort>();

function servicePort(t: ServicePortTable, node: string, external: string | undefined): ServicePort {
  const hit = renderedPorts.get(t);
  if (hit?.node === node && hit.external === external) return hit;
  const port = new ServicePort(t, node, external);
  renderedPorts.set(t, port);
  return port;
}

/** The external address node ports are served on in `family`'s table: IPv4 only. */
function externalOf(nodeIr: IR, node: string, family: Family): string | undefined {
  return family === 4 ? externalAddressOf(nodeIr, node) : undefined;
}

/** SY-SERVICES' pieces: each port's entries, and last the jump into SY-NODEPORTS (a rule of its own). */
const dispatchOf = (piece: ServicePort | string): readonly string[] =>
  typeof piece === 'string' ? [piece] : piece.dispatch();
const nodePortsOf = (port: ServicePort): readonly string[] => port.nodePorts();

/** The nat table of the node in one family, or undefined when no service port of it has a backend. */
export function natTable(nodeIr: IR, node: string, family: Family = 4): TablePlan | undefined {
  // Node ports exist in the IPv4 table only (portView): the external address is IPv4.
  const external = externalOf(nodeIr, node, family);
  const ports: ServicePort[] = [];
  for (const t of byId(tablesOfFamily(nodeIr.services, family)))
    if (t.backends.length > 0) ports.push(servicePort(t, node, external));
  if (ports.length === 0) return undefined;
  const chains: ChainSpec[] = [];
  for (const p of ports) for (const c of p.chains) chains.push(c);
  const dispatch: (ServicePort | string)[] = ports.slice();
  if (external !== undefined && ports.some((p) => p.hasNodePort)) {
    dispatch.push(`-d ${hostMatch(external)} ${comment('node ports of this node')} -j ${NODEPORTS_CHAIN}`);
    chains.push(new PiecesChain(NODEPORTS_CHAIN, ports, nodePortsOf));
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
    chains: [new PiecesChain(SERVICES_CHAIN, dispatch, dispatchOf), ...chains],
    jumps,
  };
}

/** What NAT left untranslated at an address of a service or load balancer: any other port. */
function addressRejects(address: string, family: Family): string[] {
  const why = comment('port not defined by the service');
  const d = `-d ${hostMatch(address)}`;
  return [`${d} -p tcp ${why} ${reject('TCP', family)}`, `${d} ${why} ${reject('UDP', family)}`];
}

/** SY-SVC-REJECT's pieces in `family`: each port's filter rules, then each address's rejects. */
function rejectsIn(family: Family): (piece: ServicePort | string) => readonly string[] {
  return (piece) => (typeof piece === 'string' ? addressRejects(piece, family) : piece.filter());
}

/** One render per family, made once: PiecesChain compares two chains piece by piece only under the same render. */
const rejectsOf: Record<Family, (piece: ServicePort | string) => readonly string[]> = {
  4: rejectsIn(4),
  6: rejectsIn(6),
};

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
  const ports = tables.map((t) => servicePort(t, node, external));
  const addresses = new Set<string>();
  for (const p of ports) {
    addresses.add(p.table.address);
    for (const ip of p.loadBalancerIPs) addresses.add(ip);
  }
  const pieces: (ServicePort | string)[] = [...ports, ...[...addresses].sort()];
  return {
    chain: new PiecesChain(SERVICES_REJECT_CHAIN, pieces, rejectsOf[family]),
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
