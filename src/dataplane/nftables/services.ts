/**
 * IR service tables → NAT in `table inet switchyard`, kube-proxy's nftables mode in miniature. The
 * IPv4 tables are described below; the IPv6 tables (`…/IPv6`, whose addresses and backends are all
 * IPv6) get twins of every keyed object, named with a `-v6` suffix (`services-v6`,
 * `service-ports-v6`, `no-endpoints-v6`, `no-local-endpoints-v6`, `service-ips-v6`, `hairpin-v6`)
 * and matched with `ip6 daddr`/`ip6 saddr`, in the same base chains (nft sets hold one key type, so
 * a family cannot share them). Their pick chains `dnat ip6 …`, their affinity sets hold
 * `ipv6_addr`. Node ports are served on the node's external address, which is IPv4: there is no
 * IPv6 `nodeports` map.
 *
 *
 *   nat-prerouting / nat-output (type nat, priority dstnat): one lookup
 *   `ip daddr . meta l4proto . th dport vmap @services` → `goto svc-<port>` for a cluster IP
 *   (`svl-<port>` under internalTrafficPolicy Local), `goto ext-<port>` for a load-balancer address;
 *   then `… vmap @nodeports`, keyed on this node's external address only (`EXT . tcp . 30080`).
 *   nat-output first marks the node's own service traffic for masquerade: its source is an address
 *   of the node that no pod routes back to.
 *   ext-<port> (externalTrafficPolicy): Cluster marks for masquerade and goes to svc-<port>; Local
 *   keeps the client address and goes to svl-<port> (this node's backends only), except traffic
 *   from the node itself (`fib saddr type local`), which goes to svc-<port>.
 *   svc-<port> / svl-<port> without affinity: one rule,
 *   `dnat ip addr . port to numgen random mod N map { i : addr . port }`.
 *   svc-<port> with ClientIP affinity: nft has no `recent` and dynamic sets cannot hold verdicts, so
 *   each backend gets a dynamic timeout set `aff-<backend>` of client addresses (kube-proxy's
 *   per-endpoint recent list): `ip saddr @aff-<b> goto sep-<b>` per backend, then
 *   `numgen random mod N vmap { i : goto sep-<b> }`; sep-<b> does `update @aff-<b> { ip saddr }`
 *   (adds the client or restarts its timeout) and DNATs. svl-<port> does the same over its backends.
 *   nat-postrouting (type nat, priority srcnat): masquerades a backend that reached itself through
 *   its service (hairpin: `ip saddr . ip daddr @hairpin`, one `B . B` element per backend address;
 *   the kernel drops a packet carrying its receiver's own address as source), then what carries
 *   MASQ_MARK.
 *   svc-reject (type filter hook prerouting, priority dstnat - 10, before NAT changes the
 *   destination): rejects service ports without backends (at the VIP, load-balancer addresses and
 *   node port), drops Local traffic where this node has no backend (kube-proxy's "has no local
 *   endpoints"), and rejects every undefined port of a VIP or load-balancer address.
 *
 * Incremental updates come from diff.ts: a backend change flushes and refills that service's
 * chain (and sep chains) and touches no vmap element; a new or vanished port adds or deletes one
 * element, all in one transaction.
 */
import { createHash } from 'node:crypto';
import type { IR, ServiceBackend, ServicePortTable } from '../../ir/types.js';
import { hostPort } from '../../util/ip.js';
import { externalAddressOf, picksLocal, portView, type PortView } from '../netfilter/service-view.js';
import { quoted, type Family } from './names.js';
import type { NftChain, NftSet } from './objects.js';

export const SERVICES_MAP = 'services';
/** This node's external address . protocol . node port → ext-<port>. */
export const NODEPORTS_MAP = 'nodeports';
export const SERVICE_PORTS_SET = 'service-ports';
export const NO_ENDPOINTS_SET = 'no-endpoints';
/** Local policies without a backend on this node: dropped, as kube-proxy does. */
export const NO_LOCAL_ENDPOINTS_SET = 'no-local-endpoints';
export const SERVICE_IPS_SET = 'service-ips';
/** `B . B` per backend address: a backend reaching itself through its service. */
export const HAIRPIN_SET = 'hairpin';
export const NAT_PREROUTING_CHAIN = 'nat-prerouting';
export const NAT_OUTPUT_CHAIN = 'nat-output';
export const NAT_POSTROUTING_CHAIN = 'nat-postrouting';
export const SERVICE_REJECT_CHAIN = 'svc-reject';

/**
 * Masquerade mark (kube-proxy's bit for the same job): set on traffic that must leave with the
 * node's address (from outside under Cluster, from the node itself), read in nat-postrouting.
 */
export const MASQ_MARK = '0x00004000';
const MARK_MASQ = `meta mark set meta mark or ${MASQ_MARK}`;

function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

export function serviceChainName(tableId: string): string {
  return `svc-${hash(tableId)}`;
}

/** The service port's pick among this node's backends only (kube-proxy's KUBE-SVL). */
export function localServiceChainName(tableId: string): string {
  return `svl-${hash(tableId)}`;
}

/** The service port's chain for traffic from outside: its externalTrafficPolicy. */
export function externalChainName(tableId: string): string {
  return `ext-${hash(tableId)}`;
}

export function backendChainName(tableId: string, b: ServiceBackend): string {
  return `sep-${hash(`${tableId}|${b.endpoint}|${b.address}:${b.port}`)}`;
}

export function affinitySetName(tableId: string, b: ServiceBackend): string {
  return `aff-${hash(`${tableId}|${b.endpoint}|${b.address}:${b.port}`)}`;
}

/** How one address family is spelled: its match keyword, key type and object-name suffix. */
interface Syntax {
  family: Family;
  /** `ip` or `ip6`: the address match and the dnat family. */
  ip: 'ip' | 'ip6';
  addr: 'ipv4_addr' | 'ipv6_addr';
}

const SYNTAX: Record<Family, Syntax> = {
  v4: { family: 'v4', ip: 'ip', addr: 'ipv4_addr' },
  v6: { family: 'v6', ip: 'ip6', addr: 'ipv6_addr' },
};

/** A keyed object's name in `family`: the IPv4 name as before, `-v6` for the IPv6 twin. */
export function familyObject(name: string, family: Family): string {
  return family === 'v4' ? name : `${name}-v6`;
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

function key(t: ServicePortTable, address = t.address, port = t.port): string {
  return `${address} . ${l4(t)} . ${port}`;
}

function sorted<T>(items: readonly T[], by: (x: T) => string): T[] {
  return [...items].sort((a, b) => (by(a) < by(b) ? -1 : by(a) > by(b) ? 1 : 0));
}

/** The note of a pick chain: the port and the backends it picks among. */
function pickNote(t: ServicePortTable, list: readonly ServiceBackend[], local: boolean): string {
  const which = list.map((b) => `${b.endpoint}=${hostPort(b.address, b.port)}`).join(', ');
  return `${t.id}${local ? " (this node's backends)" : ''}: ${which}`;
}

function syntaxOf(t: ServicePortTable): Syntax {
  return t.family === 6 ? SYNTAX.v6 : SYNTAX.v4;
}

/** A chain that picks one of `list` (svc over every backend, svl over this node's). */
function pickChain(
  name: string,
  t: ServicePortTable,
  list: readonly ServiceBackend[],
  local: boolean,
): NftChain {
  const proto = `meta l4proto ${l4(t)}`;
  const note = pickNote(t, list, local);
  const { ip } = syntaxOf(t);
  if (t.affinity.mode === 'None') {
    const targets = list.map((b, i) => `${i} : ${b.address} . ${b.port}`).join(', ');
    return {
      name,
      spec: '',
      base: false,
      rules: [
        `${proto} counter dnat ${ip} addr . port to numgen random mod ${list.length} map { ${targets} } comment ${quoted(t.id)}`,
      ],
      note,
    };
  }
  const rules = list.map((b) => `${ip} saddr @${affinitySetName(t.id, b)} goto ${backendChainName(t.id, b)}`);
  rules.push(
    `numgen random mod ${list.length} vmap { ${list.map((b, i) => `${i} : goto ${backendChainName(t.id, b)}`).join(', ')} }`,
  );
  return { name, spec: '', base: false, rules, note };
}

/** With ClientIP affinity: per backend, its client set and its chain (shared by svc and svl). */
function affinityObjects(
  t: ServicePortTable,
  list: readonly ServiceBackend[],
): { chains: NftChain[]; sets: NftSet[] } {
  if (t.affinity.mode === 'None') return { chains: [], sets: [] };
  const timeout = t.affinity.timeoutSeconds;
  const { ip, addr } = syntaxOf(t);
  const sets: NftSet[] = [];
  const chains: NftChain[] = [];
  for (const b of list) {
    const aff = affinitySetName(t.id, b);
    sets.push({
      kind: 'set',
      name: aff,
      spec: `{ type ${addr}; flags dynamic,timeout; timeout ${timeout}s; }`,
      elements: [],
      note: `${t.id}: clients sent to ${b.endpoint} in the last ${timeout}s (ClientIP affinity)`,
    });
    chains.push({
      name: backendChainName(t.id, b),
      spec: '',
      base: false,
      rules: [
        `update @${aff} { ${ip} saddr } meta l4proto ${l4(t)} counter dnat ${ip} to ${hostPort(b.address, b.port)} comment ${quoted(`${t.id} -> ${b.endpoint}`)}`,
      ],
    });
  }
  return { chains, sets };
}

/** ext-<port>: what traffic from outside gets, by externalTrafficPolicy. */
function externalChain(v: PortView): NftChain {
  const t = v.table;
  const svc = serviceChainName(t.id);
  if (t.externalTrafficPolicy !== 'Local')
    return {
      name: externalChainName(t.id),
      spec: '',
      base: false,
      rules: [`${MARK_MASQ} goto ${svc}`],
      note: `${t.id} from outside: masquerade, every backend (externalTrafficPolicy Cluster)`,
    };
  // No backend here: nothing translates, and svc-reject dropped it already (no-local-endpoints).
  return {
    name: externalChainName(t.id),
    spec: '',
    base: false,
    rules: [
      `fib saddr type local ${MARK_MASQ} goto ${svc}`,
      ...(v.local.length > 0 ? [`goto ${localServiceChainName(t.id)}`] : []),
    ],
    note: `${t.id} from outside: this node's backends, client address kept (externalTrafficPolicy Local)`,
  };
}

interface PortObjects {
  chains: NftChain[];
  sets: NftSet[];
  /** `services` map elements (cluster IP and load-balancer addresses). */
  services: string[];
  /** `nodeports` map elements. */
  nodePorts: string[];
}

function portObjects(v: PortView, external: string | undefined): PortObjects {
  const t = v.table;
  const out: PortObjects = {
    chains: [pickChain(serviceChainName(t.id), t, v.all, false)],
    sets: [],
    services: [],
    nodePorts: [],
  };
  if (picksLocal(v)) out.chains.push(pickChain(localServiceChainName(t.id), t, v.local, true));
  if (v.internal.length > 0) {
    const target = t.internalTrafficPolicy === 'Local' ? localServiceChainName(t.id) : serviceChainName(t.id);
    out.services.push(`${key(t)} : goto ${target}`);
  }
  if (v.exposed) {
    const ext = externalChainName(t.id);
    out.chains.push(externalChain(v));
    for (const ip of v.loadBalancerIPs) out.services.push(`${key(t, ip)} : goto ${ext}`);
    if (v.nodePort !== undefined && external !== undefined)
      out.nodePorts.push(`${key(t, external, v.nodePort)} : goto ${ext}`);
  }
  const affinity = affinityObjects(t, v.all);
  out.chains.push(...affinity.chains);
  out.sets.push(...affinity.sets);
  return out;
}

/** Every key a packet from outside or a pod may carry to this port (VIP, load-balancer addresses, node port). */
function keysOf(v: PortView, external: string | undefined): { internal: string; outside: string[] } {
  const t = v.table;
  return {
    internal: key(t),
    outside: [
      ...v.loadBalancerIPs.map((ip) => key(t, ip)),
      ...(v.nodePort !== undefined && external !== undefined ? [key(t, external, v.nodePort)] : []),
    ],
  };
}

/** Which keys are translated, refused (no backend at all) or dropped (Local without a backend here). */
function filterSets(
  views: readonly PortView[],
  external: string | undefined,
): Record<'translated' | 'refused' | 'dropped', string[]> {
  const out = { translated: [] as string[], refused: [] as string[], dropped: [] as string[] };
  for (const v of views) {
    const k = keysOf(v, external);
    if (v.all.length === 0) {
      out.refused.push(k.internal, ...k.outside);
      continue;
    }
    (v.internal.length > 0 ? out.translated : out.dropped).push(k.internal);
    (v.external.length > 0 ? out.translated : out.dropped).push(...k.outside);
  }
  return out;
}

function natBase(name: string, hook: string, rules: string[], note: string): NftChain {
  return {
    name,
    // -100 is dstnat; nft 1.0.6 accepts the name only on the prerouting hook.
    spec: `{ type nat hook ${hook} priority -100; policy accept; }`,
    base: true,
    rules,
    note,
  };
}

function rejectRules(match: string, why: string): string[] {
  return [
    `${match} meta l4proto tcp counter reject with tcp reset comment ${quoted(why)}`,
    `${match} counter reject comment ${quoted(why)}`,
  ];
}

/** One family's keyed objects and its rules in the shared base chains. */
interface FamilyObjects {
  sets: NftSet[];
  maps: NftSet[];
  /** Regular chains (pick, external, backend chains). */
  chains: NftChain[];
  /** svc-reject's rules. */
  reject: string[];
  /** nat-prerouting's lookups (nat-output runs them too). */
  dispatch: string[];
  /** nat-output's mark for the node's own service traffic. */
  outputMark: string;
  /** nat-postrouting's hairpin rule. */
  hairpin: string;
}

/** The objects of one family's service tables (all of `views` are of that family). */
function familyObjects(
  syntax: Syntax,
  views: readonly PortView[],
  external: string | undefined,
): FamilyObjects {
  const { ip, addr, family } = syntax;
  const name = (base: string): string => familyObject(base, family);
  const sets: NftSet[] = [];
  const chains: NftChain[] = [];
  const services: string[] = [];
  const nodePorts: string[] = [];
  for (const v of views.filter((x) => x.all.length > 0)) {
    const o = portObjects(v, external);
    sets.push(...o.sets);
    chains.push(...o.chains);
    services.push(...o.services);
    nodePorts.push(...o.nodePorts);
  }
  const keys = filterSets(views, external);
  const tuple = `{ type ${addr} . inet_proto . inet_service; }`;
  const backendAddresses = [...new Set(views.flatMap((v) => v.all.map((b) => b.address)))].sort();
  const serviceIps = [
    ...new Set([...views.map((v) => v.table.address), ...views.flatMap((v) => v.loadBalancerIPs)]),
  ].sort();
  sets.push(
    {
      kind: 'set',
      name: name(SERVICE_PORTS_SET),
      spec: tuple,
      elements: keys.translated,
      note: 'service ports with backends for this traffic (NAT translates them)',
    },
    {
      kind: 'set',
      name: name(NO_ENDPOINTS_SET),
      spec: tuple,
      elements: keys.refused,
      note: 'service ports without backends: rejected',
    },
    {
      kind: 'set',
      name: name(NO_LOCAL_ENDPOINTS_SET),
      spec: tuple,
      elements: keys.dropped,
      note: 'Local traffic policies without a backend on this node: dropped',
    },
    {
      kind: 'set',
      name: name(SERVICE_IPS_SET),
      spec: `{ type ${addr}; }`,
      elements: serviceIps,
      note: 'service and load-balancer addresses: any port they do not define is rejected',
    },
    {
      kind: 'set',
      name: name(HAIRPIN_SET),
      spec: `{ type ${addr} . ${addr}; }`,
      elements: backendAddresses.map((a) => `${a} . ${a}`),
      note: 'backend . itself: a backend reaching itself through its service (hairpin)',
    },
  );
  const maps: NftSet[] = [
    {
      kind: 'map',
      name: name(SERVICES_MAP),
      spec: `{ type ${addr} . inet_proto . inet_service : verdict; }`,
      elements: services,
      note: 'service or load-balancer address . protocol . port → the service port chain',
    },
  ];
  const dispatch = [`${ip} daddr . meta l4proto . th dport vmap @${name(SERVICES_MAP)}`];
  // Node ports: this node's external address is IPv4, so only the IPv4 family has them.
  if (family === 'v4') {
    maps.push({
      kind: 'map',
      name: NODEPORTS_MAP,
      spec: `{ type ${addr} . inet_proto . inet_service : verdict; }`,
      elements: nodePorts,
      note: "this node's external address . protocol . node port → the port's external chain",
    });
    dispatch.push(`${ip} daddr . meta l4proto . th dport vmap @${NODEPORTS_MAP}`);
  }
  const daddrKey = `${ip} daddr . meta l4proto . th dport`;
  return {
    sets,
    maps,
    chains,
    // TCP gets a reset: the node answers while the client's connect() still holds its socket,
    // and Linux drops ICMP errors for a locked socket (LockDroppedIcmps) where it queues a RST.
    reject: [
      ...rejectRules(`${daddrKey} @${name(NO_ENDPOINTS_SET)}`, 'service has no endpoints'),
      `${daddrKey} @${name(NO_LOCAL_ENDPOINTS_SET)} counter drop comment ${quoted('service has no local endpoints')}`,
      `${daddrKey} @${name(SERVICE_PORTS_SET)} return`,
      ...rejectRules(`${ip} daddr @${name(SERVICE_IPS_SET)}`, 'port not defined by the service'),
    ],
    dispatch,
    outputMark: `${daddrKey} @${name(SERVICE_PORTS_SET)} ${MARK_MASQ}`,
    hairpin: `ct status dnat ${ip} saddr . ${ip} daddr @${name(HAIRPIN_SET)} counter masquerade fully-random comment ${quoted('hairpin')}`,
  };
}

/** The node's service objects; empty when the IR has no service. */
export function serviceObjects(ir: IR, node: string): ServiceObjects {
  const tables = sorted(ir.services, (t) => t.id);
  if (tables.length === 0) return { sets: [], maps: [], chains: [] };
  const external = externalAddressOf(ir, node);
  const families = (['v4', 'v6'] as const)
    .map((f) => {
      const own = tables.filter((t) => syntaxOf(t).family === f);
      if (own.length === 0) return undefined;
      // Node ports are served through the IPv4 tables only (portView).
      return familyObjects(
        SYNTAX[f],
        own.map((t) => portView(t, node, external)),
        external,
      );
    })
    .filter((f): f is FamilyObjects => f !== undefined);
  const chains = families.flatMap((f) => f.chains);
  const dispatch = families.flatMap((f) => f.dispatch);
  chains.push(
    {
      name: SERVICE_REJECT_CHAIN,
      // Before NAT (dstnat - 10): the destination is still the VIP. The filter hook allows reject.
      spec: '{ type filter hook prerouting priority dstnat - 10; policy accept; }',
      base: true,
      rules: families.flatMap((f) => f.reject),
      note: 'services: reject ports without backends and ports no service defines, drop Local without a backend here',
    },
    natBase(
      NAT_PREROUTING_CHAIN,
      'prerouting',
      dispatch,
      'services: DNAT of traffic from pods, the fabric and outside',
    ),
    natBase(
      NAT_OUTPUT_CHAIN,
      'output',
      [...families.map((f) => f.outputMark), ...dispatch],
      'services: DNAT of traffic from the node itself (masqueraded: its source is the node)',
    ),
    {
      name: NAT_POSTROUTING_CHAIN,
      spec: '{ type nat hook postrouting priority 100; policy accept; }',
      base: true,
      rules: [
        ...families.map((f) => f.hairpin),
        `meta mark & ${MASQ_MARK} == 0 return`,
        // Cleared so a packet that comes through again is not masqueraded twice.
        `meta mark set meta mark xor ${MASQ_MARK} counter masquerade fully-random`,
      ],
      note: 'services: leave with the node address (hairpin, traffic from outside under Cluster, the node itself)',
    },
  );
  return { sets: families.flatMap((f) => f.sets), maps: families.flatMap((f) => f.maps), chains };
}
