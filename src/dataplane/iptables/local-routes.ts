/**
 * Service and load-balancer addresses routed locally in the node namespace (`local A/32 dev lo`,
 * `local A/128 dev lo` for IPv6 cluster IPs,
 * kube-proxy's IPVS mode does the same with its dummy interface), so that a packet NAT did not
 * translate — a port without backends, a port the service does not define, a Local policy without
 * a backend here — goes up to INPUT, where SY-SVC-REJECT refuses or drops it. Without the route the
 * node has nowhere to send it: the kernel answers "host unreachable" (rate-limited) before any
 * filter chain runs, and the client times out. Translated packets are unaffected: DNAT happens in
 * PREROUTING, before the route lookup.
 *
 * Only addresses the IR gives services are routed (whole runs of them as one prefix), only in the node namespace, and tagged with
 * our own routing protocol number so read-back, repair and remove find exactly ours.
 */
import type { IR } from '../../ir/types.js';
import { ApplyError } from '../backend.js';
import { compareCidr, normalizeCidrList, parseCidr } from '../../util/ip.js';
import { runInNetns, ToolError } from '../exec.js';

/** `proto 83` ('S'): unassigned in /etc/iproute2/rt_protos; marks the routes as ours. */
export const LOCAL_ROUTE_PROTO = 83;

/**
 * The IR's service and load-balancer addresses of both families as the fewest prefixes that
 * cover exactly them (calc allocates them in runs, so 10,000 services are a handful of routes),
 * sorted, IPv4 first.
 */
export function localRoutePrefixes(ir: IR): string[] {
  const out = new Set<string>();
  for (const t of ir.services) {
    for (const a of [t.address, ...(t.loadBalancerIPs ?? [])]) out.add(`${a}/${a.includes(':') ? 128 : 32}`);
  }
  return normalizeCidrList([...out]);
}

function route(verb: 'replace' | 'del', prefix: string): string {
  return `route ${verb} local ${prefix} dev lo table local proto ${LOCAL_ROUTE_PROTO}`;
}

/** `ip -batch` lines that turn `have` into `want`. */
export function localRouteScript(want: readonly string[], have: readonly string[]): string[] {
  const wanted = new Set(want);
  const present = new Set(have);
  return [
    ...want.filter((a) => !present.has(a)).map((a) => route('replace', a)),
    ...have.filter((a) => !wanted.has(a)).map((a) => route('del', a)),
  ];
}

/**
 * Prefixes of `ip route show table local proto 83` output, either family (a host route is printed
 * without its length: /32, or /128 for IPv6), in normalizeCidrList's order: IPv4 first.
 */
export function parseLocalRoutes(text: string): string[] {
  const routes = text
    .split('\n')
    .map((l) => /^local ([0-9a-f.:]+)(\/\d+)? /.exec(l.trim()))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => {
      const address = m[1] as string;
      return `${address}${m[2] ?? (address.includes(':') ? '/128' : '/32')}`;
    });
  const v4 = routes.filter((r) => !r.includes(':')).sort();
  const v6 = routes
    .filter((r) => r.includes(':'))
    .map((r) => ({ text: r, cidr: parseCidr(r) }))
    .sort((a, b) => (a.cidr && b.cidr ? compareCidr(a.cidr, b.cidr) : a.text < b.text ? -1 : 1))
    .map((r) => r.text);
  return [...v4, ...v6];
}

async function readFamily(netns: string, family: '-4' | '-6'): Promise<string> {
  const r = await runInNetns(netns, 'ip', [
    family,
    'route',
    'show',
    'table',
    'local',
    'proto',
    String(LOCAL_ROUTE_PROTO),
  ]);
  // A namespace whose loopback never came up has no local table yet: it holds none of ours.
  if (r.code !== 0 && /FIB table does not exist/.test(r.stderr)) return '';
  if (r.code !== 0) throw new ToolError('ip', r);
  return r.stdout;
}

/** Our local routes in the namespace now, both families. */
export async function readLocalRoutes(netns: string): Promise<string[]> {
  const [v4, v6] = await Promise.all([readFamily(netns, '-4'), readFamily(netns, '-6')]);
  return parseLocalRoutes(`${v4}\n${v6}`);
}

/**
 * Makes our local routes exactly `want`; returns what changed (`route local P (added|deleted)`).
 * `known`: what our last apply left (the backend's shadow), read from the kernel when absent.
 */
export async function syncLocalRoutes(
  netns: string,
  want: readonly string[],
  known?: readonly string[],
): Promise<string[]> {
  const have = known ?? (await readLocalRoutes(netns));
  const lines = localRouteScript(want, have);
  if (lines.length === 0) return [];
  const r = await runInNetns(netns, 'ip', ['-batch', '-'], lines.join('\n') + '\n');
  if (r.code !== 0)
    throw new ApplyError(
      `iptables: routing service addresses locally in ${netns} failed; the rules are in force, ` +
        `untranslated service traffic may time out instead of being refused until the next apply`,
      'iptables',
      r.stderr.trim(),
    );
  const before = new Set(have);
  return lines.map((l) => {
    const prefix = /local (\S+) /.exec(l)?.[1] ?? l;
    return `route local ${prefix} (${before.has(prefix) ? 'deleted' : 'added'})`;
  });
}
