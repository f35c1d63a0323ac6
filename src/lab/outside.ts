/**
 * The lab's outside: client namespaces beyond the cluster, the way a user on another network sees
 * it. Each client hangs off the fabric namespace, which routes between them and the nodes'
 * external addresses (a second address on each node's fabric link, where a NIC would be) and sends
 * each load-balancer address to the nodes that can serve it. Pure: names, addresses and routes
 * are decided here, and plan.ts turns them into `ip` lines.
 */
import { allocateAddresses, INFRA_RANGE, NODE_EXTERNAL_RANGE, OUTSIDE_RANGE } from '../calc/index.js';
import type { IR, Node } from '../ir/types.js';
import { formatAddress, parseAddress } from '../util/ip.js';
import { LabError } from './errors.js';
import { shortHash, type SlugAllocator } from './names.js';

/** Every lab has this outside client; `lab up --outside` adds more. */
export const DEFAULT_OUTSIDE = 'client';
/** How `lab probe --from` and `lab exec` name an outside client: `outside:NAME`. */
export const OUTSIDE_REF_PREFIX = 'outside:';
const OUTSIDE_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
const OUTSIDE_NAME_MAX = 20;
/** At most this many clients: they share one /24. */
export const OUTSIDE_MAX = 200;

/** The prefix length of node external addresses on their fabric links (calc's NODE_EXTERNAL_RANGE). */
export const EXTERNAL_PREFIX_LENGTH = NODE_EXTERNAL_RANGE.prefix;
/**
 * The fabric namespace's own address on the external network (on its bridge): the nodes' way back
 * to the outside range. Node external addresses stop at .201 (200 nodes), so .254 is free.
 */
export const EXTERNAL_GATEWAY = '198.19.128.254';

export interface LabOutside {
  name: string;
  /** Namespace name without `sy-<lab>-`: `outside.<name>`, which no pod's `<ns>-<pod>` can be. */
  slug: string;
  netns: string;
  /** In OUTSIDE_RANGE; kept across runs. */
  address: string;
  /** The client's link as seen in the fabric namespace. */
  fabricPeer: string;
}

/** A load-balancer address and the node external addresses the fabric sends it to (ECMP). */
export interface LabLoadBalancer {
  address: string;
  via: string[];
}

export function outsideNameError(name: string): string | undefined {
  if (name.length > OUTSIDE_NAME_MAX || !OUTSIDE_NAME.test(name))
    return `invalid outside client name '${name}': use at most ${OUTSIDE_NAME_MAX} lower-case letters, digits and '-'`;
  return undefined;
}

/** The clients a lab has: `client` always, plus `extra`, sorted and without repeats. */
export function outsideNames(extra: readonly string[] = []): string[] {
  for (const n of extra) {
    const e = outsideNameError(n);
    if (e) throw new LabError(e);
  }
  const names = [...new Set([DEFAULT_OUTSIDE, ...extra])].sort();
  if (names.length > OUTSIDE_MAX) throw new LabError(`at most ${OUTSIDE_MAX} outside clients fit a lab`);
  return names;
}

function outsidePeerName(name: string): string {
  const readable = `o-${name}`;
  return readable.length <= 15 ? readable : `o-${shortHash(name, 10)}`;
}

/**
 * Where outside traffic reaches a node: the IR's `externalAddress`, else (a lab state whose IR
 * predates it) the external range's address with the same host number as its fabric address,
 * which is what calc's plan gives node i (198.19.128.(i+1)).
 */
export function nodeExternalAddress(n: Node): string | undefined {
  if (n.externalAddress) return n.externalAddress;
  const a = parseAddress(n.address);
  if (!a || a.family !== 4 || a.value < INFRA_RANGE.base || a.value >= INFRA_RANGE.base + 256n)
    return undefined;
  return formatAddress({ family: 4, value: NODE_EXTERNAL_RANGE.base + (a.value - INFRA_RANGE.base) });
}

/** Clients named `names`: a client keeps its slug and address; newcomers take the lowest free ones. */
export function buildOutside(
  prefix: string,
  names: readonly string[],
  previous: readonly LabOutside[],
  slugs: SlugAllocator,
): LabOutside[] {
  const prev = new Map(previous.map((o) => [o.name, o]));
  const kept = names.flatMap((n) => {
    const o = prev.get(n);
    return o ? [o] : [];
  });
  for (const o of kept) slugs.keep(o.slug);
  const fresh = names.filter((n) => !prev.has(n));
  const addresses = allocateAddresses(OUTSIDE_RANGE, fresh.length, new Set(kept.map((o) => o.address)));
  const made = fresh.map((name, i): LabOutside => {
    const slug = slugs.assign(`outside:${name}`, `outside.${name}`);
    return {
      name,
      slug,
      netns: prefix + slug,
      address: addresses[i] as string,
      fabricPeer: outsidePeerName(name),
    };
  });
  return [...kept, ...made].sort((a, b) => (a.name < b.name ? -1 : 1));
}

/**
 * Each load-balancer address → the nodes the fabric sends it to, as a cloud load balancer's
 * health checks would: under `externalTrafficPolicy: Local` the nodes with a backend of the
 * service (only they serve; kube-proxy's healthCheckNodePort), else every node. A Local service
 * without backends is sent to every node, which refuses it. Several ports (or services) on one
 * address get the union.
 */
export function loadBalancerRoutes(ir: IR, external: ReadonlyMap<string, string>): LabLoadBalancer[] {
  const every = [...external.values()];
  const via = new Map<string, Set<string>>();
  for (const t of ir.services) {
    if (!t.loadBalancerIPs?.length) continue;
    const local = t.externalTrafficPolicy === 'Local';
    const nodes = local
      ? t.backends.flatMap((b) => {
          const a = b.node === undefined ? undefined : external.get(b.node);
          return a ? [a] : [];
        })
      : every;
    for (const ip of t.loadBalancerIPs) {
      const set = via.get(ip) ?? new Set<string>();
      for (const a of nodes.length > 0 ? nodes : every) set.add(a);
      via.set(ip, set);
    }
  }
  return [...via]
    .map(([address, s]) => ({ address, via: [...s].sort(byAddress) }))
    .filter((lb) => lb.via.length > 0)
    .sort((a, b) => byAddress(a.address, b.address));
}

function byAddress(a: string, b: string): number {
  const x = parseAddress(a)?.value ?? 0n;
  const y = parseAddress(b)?.value ?? 0n;
  return x < y ? -1 : x > y ? 1 : 0;
}

/** `outside:NAME` → NAME; undefined for anything else (a pod id). */
export function outsideRef(ref: string): string | undefined {
  return ref.startsWith(OUTSIDE_REF_PREFIX) ? ref.slice(OUTSIDE_REF_PREFIX.length) : undefined;
}
