/**
 * IR service tables → NAT in `table inet switchyard` (IPv4: calc gives services IPv4 addresses
 * and backends), kube-proxy's nftables mode in miniature:
 *
 *   nat-prerouting / nat-output (type nat, priority dstnat): one lookup
 *   `ip daddr . meta l4proto . th dport vmap @services` → `goto svc-<port>`.
 *   svc-<port> without affinity: one rule, `dnat ip addr . port to numgen random mod N map { i : addr . port }`.
 *   svc-<port> with ClientIP affinity: nft has no `recent` and dynamic sets cannot hold verdicts, so
 *   each backend gets a dynamic timeout set `aff-<backend>` of client addresses (kube-proxy's
 *   per-endpoint recent list): `ip saddr @aff-<b> goto sep-<b>` per backend, then
 *   `numgen random mod N vmap { i : goto sep-<b> }`; sep-<b> does `update @aff-<b> { ip saddr }`
 *   (adds the client or restarts its timeout) and DNATs.
 *   svc-reject (type filter hook prerouting, priority dstnat - 10, before NAT changes the
 *   destination): rejects service ports without backends and every undefined port of a VIP.
 *
 * Incremental updates come from diff.ts: a backend change flushes and refills that service's
 * chain (and sep chains) and touches no vmap element; a new or vanished port adds or deletes one
 * element, all in one transaction.
 */
import { createHash } from 'node:crypto';
import type { IR, ServiceBackend, ServicePortTable } from '../../ir/types.js';
import { quoted } from './names.js';
import type { NftChain, NftSet } from './objects.js';

export const SERVICES_MAP = 'services';
export const SERVICE_PORTS_SET = 'service-ports';
export const NO_ENDPOINTS_SET = 'no-endpoints';
export const SERVICE_IPS_SET = 'service-ips';
export const NAT_PREROUTING_CHAIN = 'nat-prerouting';
export const NAT_OUTPUT_CHAIN = 'nat-output';
export const SERVICE_REJECT_CHAIN = 'svc-reject';

function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

export function serviceChainName(tableId: string): string {
  return `svc-${hash(tableId)}`;
}

export function backendChainName(tableId: string, b: ServiceBackend): string {
  return `sep-${hash(`${tableId}|${b.endpoint}|${b.address}:${b.port}`)}`;
}

export function affinitySetName(tableId: string, b: ServiceBackend): string {
  return `aff-${hash(`${tableId}|${b.endpoint}|${b.address}:${b.port}`)}`;
}

export interface ServiceObjects {
  sets: NftSet[];
  maps: NftSet[];
  /** Regular chains first, then base chains. */
  chains: NftChain[];
}

function l4(t: ServicePortTable): string {
  return t.protocol.toLowerCase();
}

function key(t: ServicePortTable): string {
  return `${t.address} . ${l4(t)} . ${t.port}`;
}

function sorted<T>(items: readonly T[], by: (x: T) => string): T[] {
  return [...items].sort((a, b) => (by(a) < by(b) ? -1 : by(a) > by(b) ? 1 : 0));
}

function portChains(t: ServicePortTable): { chains: NftChain[]; sets: NftSet[] } {
  const list = sorted(t.backends, (b) => b.endpoint);
  const name = serviceChainName(t.id);
  const proto = `meta l4proto ${l4(t)}`;
  const note = `${t.id}: ${list.map((b) => `${b.endpoint}=${b.address}:${b.port}`).join(', ')}`;
  if (t.affinity.mode === 'None') {
    const targets = list.map((b, i) => `${i} : ${b.address} . ${b.port}`).join(', ');
    return {
      sets: [],
      chains: [
        {
          name,
          spec: '',
          base: false,
          rules: [
            `${proto} counter dnat ip addr . port to numgen random mod ${list.length} map { ${targets} } comment ${quoted(t.id)}`,
          ],
          note,
        },
      ],
    };
  }
  const timeout = t.affinity.timeoutSeconds;
  const sets: NftSet[] = [];
  const seps: NftChain[] = [];
  const rules: string[] = [];
  for (const b of list) {
    const aff = affinitySetName(t.id, b);
    const sep = backendChainName(t.id, b);
    sets.push({
      kind: 'set',
      name: aff,
      spec: `{ type ipv4_addr; flags dynamic,timeout; timeout ${timeout}s; }`,
      elements: [],
      note: `${t.id}: clients sent to ${b.endpoint} in the last ${timeout}s (ClientIP affinity)`,
    });
    rules.push(`ip saddr @${aff} goto ${sep}`);
    seps.push({
      name: sep,
      spec: '',
      base: false,
      rules: [
        `update @${aff} { ip saddr } ${proto} counter dnat ip to ${b.address}:${b.port} comment ${quoted(`${t.id} -> ${b.endpoint}`)}`,
      ],
    });
  }
  rules.push(
    `numgen random mod ${list.length} vmap { ${list.map((b, i) => `${i} : goto ${backendChainName(t.id, b)}`).join(', ')} }`,
  );
  return { sets, chains: [{ name, spec: '', base: false, rules, note }, ...seps] };
}

function natBase(name: string, hook: string, note: string): NftChain {
  return {
    name,
    // -100 is dstnat; nft 1.0.6 accepts the name only on the prerouting hook.
    spec: `{ type nat hook ${hook} priority -100; policy accept; }`,
    base: true,
    rules: [`ip daddr . meta l4proto . th dport vmap @${SERVICES_MAP}`],
    note,
  };
}

function rejectRules(match: string, why: string): string[] {
  return [
    `${match} meta l4proto tcp counter reject with tcp reset comment ${quoted(why)}`,
    `${match} counter reject comment ${quoted(why)}`,
  ];
}

/** The node's service objects; empty when the IR has no IPv4 service. */
export function serviceObjects(ir: IR): ServiceObjects {
  const tables = sorted(
    ir.services.filter((t) => !t.address.includes(':')),
    (t) => t.id,
  );
  if (tables.length === 0) return { sets: [], maps: [], chains: [] };
  const withBackends = tables.filter((t) => t.backends.length > 0);
  const sets: NftSet[] = [];
  const chains: NftChain[] = [];
  for (const t of withBackends) {
    const c = portChains(t);
    sets.push(...c.sets);
    chains.push(...c.chains);
  }
  const tuple = '{ type ipv4_addr . inet_proto . inet_service; }';
  sets.push(
    {
      kind: 'set',
      name: SERVICE_PORTS_SET,
      spec: tuple,
      elements: withBackends.map(key),
      note: 'service ports with backends (NAT translates them)',
    },
    {
      kind: 'set',
      name: NO_ENDPOINTS_SET,
      spec: tuple,
      elements: tables.filter((t) => t.backends.length === 0).map(key),
      note: 'service ports without backends: rejected',
    },
    {
      kind: 'set',
      name: SERVICE_IPS_SET,
      spec: '{ type ipv4_addr; }',
      elements: [...new Set(tables.map((t) => t.address))].sort(),
      note: 'service addresses: any port they do not define is rejected',
    },
  );
  const maps: NftSet[] = [
    {
      kind: 'map',
      name: SERVICES_MAP,
      spec: '{ type ipv4_addr . inet_proto . inet_service : verdict; }',
      elements: withBackends.map((t) => `${key(t)} : goto ${serviceChainName(t.id)}`),
      note: 'service address . protocol . port → the service port chain',
    },
  ];
  chains.push(
    {
      name: SERVICE_REJECT_CHAIN,
      // Before NAT (dstnat - 10): the destination is still the VIP. The filter hook allows reject.
      spec: '{ type filter hook prerouting priority dstnat - 10; policy accept; }',
      base: true,
      // TCP gets a reset: the node answers while the client's connect() still holds its socket,
      // and Linux drops ICMP errors for a locked socket (LockDroppedIcmps) where it queues a RST.
      rules: [
        ...rejectRules(`ip daddr . meta l4proto . th dport @${NO_ENDPOINTS_SET}`, 'service has no endpoints'),
        `ip daddr . meta l4proto . th dport @${SERVICE_PORTS_SET} return`,
        ...rejectRules(`ip daddr @${SERVICE_IPS_SET}`, 'port not defined by the service'),
      ],
      note: 'services: reject ports without backends and ports no service defines',
    },
    natBase(NAT_PREROUTING_CHAIN, 'prerouting', 'services: DNAT of traffic from pods and the fabric'),
    natBase(NAT_OUTPUT_CHAIN, 'output', 'services: DNAT of traffic from the node itself'),
  );
  return { sets, maps, chains };
}
