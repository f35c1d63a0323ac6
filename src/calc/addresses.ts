/**
 * The project's address plan. Only 198.18.0.0/15 (RFC 2544 benchmarking space) is ever used:
 * pods 198.18.0.0/16 minus the infrastructure /24 at its top, service VIPs 198.19.0.0/17, and in
 * 198.19.128.0/17 what traffic from outside the cluster meets: the nodes' external addresses
 * (198.19.128.0/24), outside clients (198.19.129.0/24) and the load-balancer pool (198.19.192.0/18).
 */
import { cidrContains, formatAddress, parseAddress, parseCidr, type Address, type Cidr } from '../util/ip.js';

function cidr(s: string): Cidr {
  return parseCidr(s) as Cidr;
}

export const PROJECT_RANGE = cidr('198.18.0.0/15');
export const PROJECT_RANGE_V6 = cidr('fd00:5957::/32');
/**
 * The IPv6 plan, all inside fd00:5957::/48: pods fd00:5957::/64 (a pod's second address beside
 * its IPv4 one), service VIPs fd00:5957:0:1::/112, nodes' fabric addresses fd00:5957:0:ff::/64.
 */
export const POD_RANGE_V6 = cidr('fd00:5957::/64');
export const SERVICE_RANGE_V6 = cidr('fd00:5957:0:1::/112');
export const INFRA_RANGE_V6 = cidr('fd00:5957:0:ff::/64');
export const POD_RANGE = cidr('198.18.0.0/16');
/** Node fabric addresses and lab-external test hosts; never given to pods. */
export const INFRA_RANGE = cidr('198.18.255.0/24');
export const SERVICE_RANGE = cidr('198.19.0.0/17');
/** Node i's external address is 198.19.128.(i+1): where node ports are reached from outside. */
export const NODE_EXTERNAL_RANGE = cidr('198.19.128.0/24');
/** Clients outside the cluster (the lab's outside namespaces). */
export const OUTSIDE_RANGE = cidr('198.19.129.0/24');
/** Addresses of LoadBalancer services (status.loadBalancer.ingress). */
export const LOAD_BALANCER_POOL = cidr('198.19.192.0/18');
/** The API server's default service-node-port-range. */
export const NODE_PORT_RANGE = { first: 30000, last: 32767 } as const;

/** First host offset handed out in a range (skips .0 and .1 for readability). */
const FIRST_OFFSET = 2n;

export function isPodAddress(ip: string): boolean {
  const a = parseAddress(ip);
  if (a?.family === 6) return cidrContains(POD_RANGE_V6, a);
  return !!a && cidrContains(POD_RANGE, a) && !cidrContains(INFRA_RANGE, a);
}

/**
 * Hands out the lowest free addresses of `range` in request order, never one in `used` or
 * `reserved`. Throws when the range is exhausted.
 */
export function allocateAddresses(
  range: Cidr,
  count: number,
  used: ReadonlySet<string>,
  reserved?: Cidr,
): string[] {
  const out: string[] = [];
  const size = 1n << BigInt((range.family === 4 ? 32 : 128) - range.prefix);
  for (let off = FIRST_OFFSET; off < size - 1n && out.length < count; off++) {
    const a: Address = { family: range.family, value: range.base + off };
    if (reserved && cidrContains(reserved, a)) continue;
    const text = formatAddress(a);
    if (!used.has(text)) out.push(text);
  }
  if (out.length < count) {
    throw new Error(
      `address range ${formatAddress({ family: range.family, value: range.base })}/${range.prefix} is exhausted ` +
        `(${count - out.length} more addresses needed)`,
    );
  }
  return out;
}

const MAX_NODES = 200;

/** Fabric address of the i-th node (0-based, in sorted node order). */
export function nodeFabricAddress(index: number): string {
  if (index > MAX_NODES) throw new Error(`at most ${MAX_NODES} nodes fit the infrastructure range`);
  return formatAddress({ family: 4, value: INFRA_RANGE.base + BigInt(index + 1) });
}

/** IPv6 fabric address of the i-th node (0-based, in sorted node order): fd00:5957:0:ff::(i+1). */
export function nodeFabricAddressV6(index: number): string {
  if (index > MAX_NODES) throw new Error(`at most ${MAX_NODES} nodes fit the infrastructure range`);
  return formatAddress({ family: 6, value: INFRA_RANGE_V6.base + BigInt(index + 1) });
}

/** External address of the i-th node (0-based, in sorted node order), beside its fabric address. */
export function nodeExternalAddress(index: number): string {
  if (index > MAX_NODES) throw new Error(`at most ${MAX_NODES} nodes fit the external range`);
  return formatAddress({ family: 4, value: NODE_EXTERNAL_RANGE.base + BigInt(index + 1) });
}

export function inAddressRange(range: Cidr, ip: string): boolean {
  const a = parseAddress(ip);
  return !!a && cidrContains(range, a);
}
