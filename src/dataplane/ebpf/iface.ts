/**
 * Interfaces of a node namespace, read in-process: with the thread inside the namespace,
 * /proc/thread-self/net/{dev,route} and if_nametoindex describe that namespace. No `ip` process
 * per apply (a fork costs more than the rest of a no-op apply).
 */
import { readFileSync } from 'node:fs';
import { codecs, resolveIfindex, withNetns } from '../../bpf/index.js';

export interface NetnsInterface {
  ifname: string;
  ifindex: number;
  /** Connected IPv4 routes on the interface (host-order network and mask). */
  connected: { network: number; mask: number }[];
}

export function checkNetns(netns: string): void {
  if (!netns.startsWith('sy-'))
    throw new Error(`refusing to touch network namespace '${netns}': only project namespaces (sy-…)`);
}

/** /proc/net/route holds addresses as the hex of their in-memory (little-endian) value. */
function routeAddress(hex: string): number {
  const v = Number.parseInt(hex, 16);
  return (((v & 0xff) << 24) | (((v >>> 8) & 0xff) << 16) | (((v >>> 16) & 0xff) << 8) | (v >>> 24)) >>> 0;
}

export function listInterfaces(netns: string): NetnsInterface[] {
  checkNetns(netns);
  return withNetns(netns, () => {
    const names = readFileSync('/proc/thread-self/net/dev', 'utf8')
      .split('\n')
      .slice(2)
      .map((l) => l.split(':')[0]?.trim() ?? '')
      .filter(Boolean);
    // Connected routes (no gateway) by interface, read once: a node has a /32 route per pod.
    const connected = new Map<string, NetnsInterface['connected']>();
    for (const line of readFileSync('/proc/thread-self/net/route', 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[0] === undefined || f[2] !== '00000000') continue;
      let routes = connected.get(f[0]);
      if (!routes) connected.set(f[0], (routes = []));
      routes.push({ network: routeAddress(f[1] ?? '0'), mask: routeAddress(f[7] ?? '0') });
    }
    return names.map((ifname) => ({
      ifname,
      ifindex: resolveIfindex({ ifname }),
      connected: connected.get(ifname) ?? [],
    }));
  });
}

/**
 * Where the fabric enters the node: the interface whose connected route holds the node's fabric
 * address; without one, every interface that is neither loopback nor a pod's host veth (what the
 * netfilter backends treat as "not from a local pod").
 */
export function fabricInterfaces(
  all: readonly NetnsInterface[],
  nodeAddress: string | undefined,
  podInterfaces: ReadonlySet<string>,
): NetnsInterface[] {
  const candidates = all.filter((i) => i.ifname !== 'lo' && !podInterfaces.has(i.ifname));
  if (nodeAddress) {
    const a = codecs.parseIpv4(nodeAddress);
    const byRoute = candidates.filter((i) =>
      i.connected.some((r) => r.mask !== 0 && (a & r.mask) >>> 0 === r.network),
    );
    if (byRoute.length > 0) return byRoute;
  }
  return candidates;
}
