/**
 * Service and load-balancer addresses routed locally in the node namespace (`local A/32 dev lo`,
 * kube-proxy's IPVS mode does the same with its dummy interface), so that a packet NAT did not
 * translate — a port without backends, a port the service does not define, a Local policy without
 * a backend here — goes up to INPUT, where SY-SVC-REJECT refuses or drops it. Without the route the
 * node has nowhere to send it: the kernel answers "host unreachable" (rate-limited) before any
 * filter chain runs, and the client times out. Translated packets are unaffected: DNAT happens in
 * PREROUTING, before the route lookup.
 *
 * Only addresses the IR gives services are routed, only in the node namespace, and tagged with
 * our own routing protocol number so read-back, repair and remove find exactly ours.
 */
import type { IR } from '../../ir/types.js';
import { ApplyError } from '../backend.js';
import { runInNetns, runInNetnsOrThrow } from '../exec.js';

/** `proto 83` ('S'): unassigned in /etc/iproute2/rt_protos; marks the routes as ours. */
export const LOCAL_ROUTE_PROTO = 83;

/** IPv4 service and load-balancer addresses of the IR, sorted, each once. */
export function localRouteAddresses(ir: IR): string[] {
  const out = new Set<string>();
  for (const t of ir.services) {
    for (const a of [t.address, ...(t.loadBalancerIPs ?? [])]) if (!a.includes(':')) out.add(a);
  }
  return [...out].sort();
}

function route(verb: 'replace' | 'del', address: string): string {
  return `route ${verb} local ${address}/32 dev lo table local proto ${LOCAL_ROUTE_PROTO}`;
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

/** Addresses of `ip route show table local proto 83` output. */
export function parseLocalRoutes(text: string): string[] {
  return text
    .split('\n')
    .map((l) => /^local (\d+\.\d+\.\d+\.\d+)(?:\/32)? /.exec(l.trim())?.[1])
    .filter((a): a is string => a !== undefined)
    .sort();
}

/** Our local routes in the namespace now. */
export async function readLocalRoutes(netns: string): Promise<string[]> {
  const r = await runInNetnsOrThrow(netns, 'ip', [
    '-4',
    'route',
    'show',
    'table',
    'local',
    'proto',
    String(LOCAL_ROUTE_PROTO),
  ]);
  return parseLocalRoutes(r.stdout);
}

/** Makes our local routes exactly `want`; returns what changed (`route local A/32 (added|deleted)`). */
export async function syncLocalRoutes(netns: string, want: readonly string[]): Promise<string[]> {
  const have = await readLocalRoutes(netns);
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
  const added = new Set(have);
  return lines.map((l) => {
    const address = /local (\S+)\/32/.exec(l)?.[1] ?? l;
    return `route local ${address}/32 (${added.has(address) ? 'deleted' : 'added'})`;
  });
}
