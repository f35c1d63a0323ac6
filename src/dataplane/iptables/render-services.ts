/**
 * IR service tables → kube-proxy-style NAT (IPv4 only: calc gives services IPv4 addresses and
 * backends):
 *
 *   nat PREROUTING/OUTPUT → SY-SERVICES: `-d VIP -p P --dport N -j SY-SVC-<port>` per service port
 *   with backends. SY-SVC-<port>: with ClientIP affinity first `-m recent --rcheck` per backend
 *   (a client seen within the timeout goes back to its backend), then one rule per backend with
 *   `-m statistic --mode random --probability 1/(n-i)` (the last one unconditional), which picks
 *   each of n backends with probability 1/n. SY-SEP-<backend>: (affinity: `-m recent --set`) and
 *   DNAT to the backend's address:port.
 *
 *   filter FORWARD/INPUT/OUTPUT → SY-SVC-REJECT: a service port without backends and any other
 *   port of a VIP are rejected, as kube-proxy does (REJECT only exists in the filter table; these
 *   packets were not DNATed, so their destination is still the VIP here).
 *
 * Chains are keyed by service port and backend, so one endpoint change rewrites that service's
 * SVC chain and adds or deletes its SEP chains only.
 */
import type { IR, ServiceBackend, ServicePortTable } from '../../ir/types.js';
import {
  commentText,
  quote,
  serviceChain,
  serviceEndpointChain,
  SERVICES_CHAIN,
  SERVICES_REJECT_CHAIN,
} from './names.js';
import type { ChainSpec, JumpSpec, TablePlan } from './plan.js';

const JUMP_COMMENT = `-m comment --comment ${quote('switchyard')}`;

function comment(text: string): string {
  return `-m comment --comment ${quote(commentText(text))}`;
}

function ipv4(tables: readonly ServicePortTable[]): ServicePortTable[] {
  return tables.filter((t) => !t.address.includes(':'));
}

function portMatch(t: ServicePortTable): string {
  const proto = t.protocol.toLowerCase();
  return `-d ${t.address}/32 -p ${proto} -m ${proto} --dport ${t.port}`;
}

/** kube-proxy's probabilities: 1/(n-i) for backend i of n, printed with its precision. */
export function probability(i: number, n: number): string {
  return (1 / (n - i)).toFixed(10);
}

function sepChain(t: ServicePortTable, b: ServiceBackend): string {
  return serviceEndpointChain(t.id, b.endpoint, b.address, b.port);
}

function backends(t: ServicePortTable): ServiceBackend[] {
  // Sorted so the chains do not depend on IR order; duplicates cannot arise (one per pod).
  return [...t.backends].sort((a, b) => (a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0));
}

function serviceChains(t: ServicePortTable): ChainSpec[] {
  const list = backends(t);
  const svc = serviceChain(t.id);
  const rules: string[] = [];
  const seps: ChainSpec[] = [];
  const proto = t.protocol.toLowerCase();
  if (t.affinity.mode === 'ClientIP') {
    for (const b of list) {
      const sep = sepChain(t, b);
      rules.push(
        `${comment(`${t.id} -> ${b.endpoint}`)} -m recent --name ${sep} --rcheck --seconds ${t.affinity.timeoutSeconds} --reap --mask 255.255.255.255 --rsource -j ${sep}`,
      );
    }
  }
  list.forEach((b, i) => {
    const sep = sepChain(t, b);
    const pick =
      i < list.length - 1 ? ` -m statistic --mode random --probability ${probability(i, list.length)}` : '';
    rules.push(`${comment(`${t.id} -> ${b.endpoint}`)}${pick} -j ${sep}`);
    const set =
      t.affinity.mode === 'ClientIP'
        ? [`-m recent --name ${sep} --set --mask 255.255.255.255 --rsource`]
        : [];
    seps.push({
      name: sep,
      rules: [
        `${comment(`${t.id} -> ${b.endpoint}`)} -p ${proto}${set.length ? ` ${set[0]}` : ''} -j DNAT --to-destination ${b.address}:${b.port}`,
      ],
    });
  });
  return [{ name: svc, rules }, ...seps];
}

/** The nat table of the node (IPv4), or undefined when no service port has a backend. */
export function natTable(nodeIr: IR): TablePlan | undefined {
  const tables = ipv4(nodeIr.services).filter((t) => t.backends.length > 0);
  if (tables.length === 0) return undefined;
  const dispatch: string[] = [];
  const chains: ChainSpec[] = [];
  for (const t of [...tables].sort((a, b) => (a.id < b.id ? -1 : 1))) {
    dispatch.push(`${portMatch(t)} ${comment(t.id)} -j ${serviceChain(t.id)}`);
    chains.push(...serviceChains(t));
  }
  const jumps: JumpSpec[] = (['PREROUTING', 'OUTPUT'] as const).map((builtin) => ({
    builtin,
    rule: `${JUMP_COMMENT} -j ${SERVICES_CHAIN}`,
  }));
  return { family: 4, table: 'nat', chains: [{ name: SERVICES_CHAIN, rules: dispatch }, ...chains], jumps };
}

/**
 * TCP gets a reset: a local client's connect() still holds its socket when the answer comes, and
 * Linux drops ICMP errors for a locked socket where it queues a RST.
 */
function reject(protocol: ServicePortTable['protocol']): string {
  return `-j REJECT --reject-with ${protocol === 'TCP' ? 'tcp-reset' : 'icmp-port-unreachable'}`;
}

/**
 * Filter rules for what NAT did not translate: service ports without backends, then every other
 * port of a service address. Undefined when there are no services.
 */
export function serviceRejectChain(nodeIr: IR): { chain: ChainSpec; jumps: JumpSpec[] } | undefined {
  const tables = ipv4(nodeIr.services);
  if (tables.length === 0) return undefined;
  const rules: string[] = [];
  for (const t of [...tables].sort((a, b) => (a.id < b.id ? -1 : 1))) {
    if (t.backends.length === 0)
      rules.push(`${portMatch(t)} ${comment(`${t.id} has no endpoints`)} ${reject(t.protocol)}`);
  }
  for (const vip of [...new Set(tables.map((t) => t.address))].sort()) {
    const why = comment('port not defined by the service');
    rules.push(`-d ${vip}/32 -p tcp ${why} ${reject('TCP')}`, `-d ${vip}/32 ${why} ${reject('UDP')}`);
  }
  return {
    chain: { name: SERVICES_REJECT_CHAIN, rules },
    jumps: (['FORWARD', 'INPUT', 'OUTPUT'] as const).map((builtin) => ({
      builtin,
      rule: `${JUMP_COMMENT} -j ${SERVICES_REJECT_CHAIN}`,
    })),
  };
}
