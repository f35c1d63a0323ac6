/**
 * `lab probe`: many new connections from one pod to one address (typically a service VIP), and
 * which backend answered each. Uses the lab's prober, so every socket is created inside the pod's
 * network namespace and cgroup (eBPF cgroup hooks see the pod, as for `lab reach`); each TCP
 * probe is a new connection and each UDP probe a fresh socket, so each is load-balanced anew.
 */
import { join } from 'node:path';
import { requireRoot } from '../netns/index.js';
import { LabError } from './errors.js';
import { isProbeServer } from './probe/control.js';
import { probeMatrix, type ProbeSource } from './probe/prober.js';
import { nodeExternalAddress, OUTSIDE_REF_PREFIX, outsideRef } from './outside.js';
import { findOutside } from './outside-exec.js';
import type { ProbeOutcome } from './probe/protocol.js';
import { DEFAULT_PROBE_TIMEOUT_MS, findPod, readyState } from './reach.js';
import type { LabState } from './state.js';
import { percentile } from '../util/stats.js';
import { parseAddress } from '../util/ip.js';

export interface ServiceProbeOptions {
  /** Source pod `namespace/name`, or `outside:NAME` (a client outside the cluster). */
  from: string;
  /** `IP:PORT`, `[IPv6]:PORT`, `svc/NAMESPACE/NAME:PORT`, `nodeport/NODE:PORT` or `lb/IP:PORT`. */
  to: string;
  protocol?: 'TCP' | 'UDP';
  count: number;
  /** Probes in flight at once (default 200). */
  concurrency?: number;
  timeoutMs?: number;
  /**
   * 6: a service's IPv6 cluster IP (its `/IPv6` table) from the pod's IPv6 address; every backend
   * translates IPv6 service tables. A literal `[IPv6]:PORT` target implies 6.
   */
  family?: 4 | 6;
}

export interface LatencyPercentiles {
  p50: number;
  p90: number;
  p99: number;
}

export interface ServiceProbeResult {
  from: string;
  /** The source's own address: compare with `peers` to see whether it survived NAT. */
  fromAddress: string;
  to: string;
  /** The address and port `to` resolved to. */
  address: string;
  port: number;
  protocol: 'TCP' | 'UDP';
  /** Set when asked with `family` (JSON as before plus this field). */
  family?: 4 | 6;
  count: number;
  /** Answering pod (`namespace/name`) → probes it answered. */
  answered: Record<string, number>;
  /** Answering pod → the client address it saw (after NAT) → probes. */
  peers: Record<string, Record<string, number>>;
  failures: number;
  /** Why probes failed (errno name or `timeout`) → how many. */
  errors: Record<string, number>;
  /** Of answered probes, connect (or send) to answer. */
  latencyMs: LatencyPercentiles;
  durationMs: number;
  /** Probes per second over the whole run. */
  rate: number;
}

export const DEFAULT_PROBE_CONCURRENCY = 200;
const MAX_COUNT = 1_000_000;

const TARGET =
  /^(?:svc\/([^/\s]+)\/([^/:\s]+)|nodeport\/([^/:\s]+)|(?:lb\/)?(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\])):(\d{1,5})$/;
const TARGET_FORMS = 'IP:PORT, [IPv6]:PORT, svc/NAMESPACE/NAME:PORT, nodeport/NODE:PORT or lb/IP:PORT';

/**
 * Resolves `to` against the lab's IR: a service port must exist with that protocol; a node port
 * is the node's external address (any port: one without a service is refused, which is worth
 * probing too); `lb/IP` and a bare IP are taken as given.
 */
export function resolveTarget(
  ir: LabState['ir'],
  to: string,
  protocol: 'TCP' | 'UDP',
  family: 4 | 6 = 4,
): { address: string; port: number } {
  const m = TARGET.exec(to);
  const port = Number(m?.[5]);
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535)
    throw new LabError(`--to must be ${TARGET_FORMS}, not '${to}'`);
  if (m[4] !== undefined) {
    const literal = m[4].replace(/^\[(.*)\]$/, '$1');
    if (parseAddress(literal) === undefined)
      throw new LabError(`--to '${to}': '${literal}' is not an IP address`);
    return { address: literal, port };
  }
  if (m[3] !== undefined) return { address: nodePortAddress(ir, m[3]), port };
  const service = `${m[1] ?? ''}/${m[2] ?? ''}`;
  const ports = ir.services.filter((t) => t.service === service);
  if (ports.length === 0) {
    const known = [...new Set(ir.services.map((t) => t.service))];
    throw new LabError(
      `the lab has no service '${service}' (services: ${known.slice(0, 20).join(', ') || 'none'})`,
    );
  }
  const sameFamily = ports.filter((t) => (t.family ?? 4) === family);
  if (sameFamily.length === 0)
    throw new LabError(`service ${service} has no IPv${family} cluster IP (see its spec.ipFamilies)`);
  const table = sameFamily.find((t) => t.port === port && t.protocol === protocol);
  if (!table)
    throw new LabError(
      `service ${service} has no port ${port}/${protocol} (ports: ${sameFamily.map((t) => `${t.port}/${t.protocol}`).join(', ')})`,
    );
  return { address: table.address, port };
}

function nodePortAddress(ir: LabState['ir'], name: string): string {
  const node = ir.nodes.find((n) => n.name === name);
  const address = node && nodeExternalAddress(node);
  if (!address)
    throw new LabError(
      `the lab has no node '${name}' with an external address (nodes: ${ir.nodes.map((n) => n.name).join(', ')})`,
    );
  return address;
}

/** Tallies outcomes; pure, so the CLI's numbers can be checked without root. */
export function summarise(outcomes: readonly ProbeOutcome[]): {
  answered: Record<string, number>;
  peers: Record<string, Record<string, number>>;
  failures: number;
  errors: Record<string, number>;
  latencyMs: LatencyPercentiles;
} {
  const answered: Record<string, number> = {};
  const peers: Record<string, Record<string, number>> = {};
  const errors: Record<string, number> = {};
  const latencies: number[] = [];
  let failures = 0;
  for (const o of outcomes) {
    // Connected but silent (a listener that is not a probe server) also counts as a failure:
    // the question is which backend answered.
    if (o.ok && o.answer) {
      answered[o.answer] = (answered[o.answer] ?? 0) + 1;
      const seen = (peers[o.answer] ??= {});
      const peer = o.peer ?? 'unknown';
      seen[peer] = (seen[peer] ?? 0) + 1;
      latencies.push(o.ms);
    } else {
      failures++;
      const why = o.error ?? 'no answer';
      errors[why] = (errors[why] ?? 0) + 1;
    }
  }
  latencies.sort((a, b) => a - b);
  const sortedAnswered = Object.fromEntries(Object.entries(answered).sort(([a], [b]) => (a < b ? -1 : 1)));
  return {
    answered: sortedAnswered,
    peers: Object.fromEntries(Object.keys(sortedAnswered).map((pod) => [pod, peers[pod] ?? {}])),
    failures,
    errors,
    // No answers, no latencies: report 0 so the JSON stays numeric.
    latencyMs: {
      p50: latencies.length ? percentile(latencies, 50) : 0,
      p90: latencies.length ? percentile(latencies, 90) : 0,
      p99: latencies.length ? percentile(latencies, 99) : 0,
    },
  };
}

export async function probeService(name: string, opts: ServiceProbeOptions): Promise<ServiceProbeResult> {
  requireRoot('switchyard lab probe');
  if (!Number.isInteger(opts.count) || opts.count < 1 || opts.count > MAX_COUNT)
    throw new LabError(`--count must be 1-${MAX_COUNT}, not ${opts.count}`);
  const started = performance.now();
  const state = readyState(name);
  if (!state.probe || !isProbeServer(state.probe.pid, name)) {
    throw new LabError(`the probe server of lab '${name}' is not running: 'switchyard lab up' restarts it`);
  }
  const protocol = opts.protocol ?? 'TCP';
  const target = resolveTarget(state.ir, opts.to, protocol, opts.family);
  const targetFamily = target.address.includes(':') ? 6 : 4;
  // A literal IPv6 target is probed from the pod's IPv6 address without asking for it.
  const family = opts.family ?? targetFamily;
  if (family !== targetFamily)
    throw new LabError(
      `--to ${opts.to} is an IPv${targetFamily} address: probe it with --family ${targetFamily}`,
    );
  const { source, address: fromAddress } = probeSource(state, opts.from, family);
  const concurrency = Math.max(1, opts.concurrency ?? DEFAULT_PROBE_CONCURRENCY);
  const outcomes: ProbeOutcome[] = [];
  // Batches of fresh sockets: each is its own connection (TCP) or socket (UDP), so each gets its
  // own NAT or connect-time decision.
  for (let done = 0; done < opts.count; done += concurrency) {
    const n = Math.min(concurrency, opts.count - done);
    const targets = Array.from({ length: n }, (_, i) => ({ id: String(i), address: target.address }));
    const results = await probeMatrix({
      protocol,
      port: target.port,
      timeoutMs: opts.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS,
      sources: [source],
      targets,
    });
    const row = results[source.id] ?? {};
    for (const t of targets) outcomes.push(row[t.id] ?? { ok: false, error: 'not probed', ms: 0 });
  }
  const durationMs = Math.round(performance.now() - started);
  return {
    from: source.id,
    fromAddress,
    to: opts.to,
    address: target.address,
    port: target.port,
    protocol,
    ...(opts.family !== undefined || family === 6 ? { family } : {}),
    count: opts.count,
    ...summarise(outcomes),
    durationMs,
    rate: Math.round((opts.count / Math.max(1, durationMs)) * 1000),
  };
}

/**
 * A pod probes from inside its namespace and cgroup; an outside client (`outside:NAME`) from its
 * namespace alone, so the lab's cgroup socket hooks never see it: its packets reach a node the
 * way a remote client's would.
 */
export function probeSource(
  state: ReturnType<typeof readyState>,
  from: string,
  family: 4 | 6 = 4,
): { source: ProbeSource; address: string } {
  const name = outsideRef(from);
  if (name === undefined) {
    const pod = findPod(state, from);
    const address = family === 6 ? pod.addressV6 : pod.address;
    if (address === undefined) throw new LabError(`pod ${pod.id} has no IPv6 address`);
    return {
      source: { id: pod.id, netns: pod.netns, cgroup: join(state.cgroupRoot, pod.slug) },
      address,
    };
  }
  if (family === 6) throw new LabError('outside clients are IPv4 only: probe from a pod with --family 6');
  const client = findOutside(state.topology, name);
  return {
    source: { id: `${OUTSIDE_REF_PREFIX}${client.name}`, netns: client.netns },
    address: client.address,
  };
}
