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
import { probeMatrix } from './probe/prober.js';
import type { ProbeOutcome } from './probe/protocol.js';
import { DEFAULT_PROBE_TIMEOUT_MS, findPod, readyState } from './reach.js';
import type { LabState } from './state.js';
import { percentile } from '../util/stats.js';

export interface ServiceProbeOptions {
  /** Source pod `namespace/name`. */
  from: string;
  /** `IP:PORT` or `svc/NAMESPACE/NAME:PORT`. */
  to: string;
  protocol?: 'TCP' | 'UDP';
  count: number;
  /** Probes in flight at once (default 200). */
  concurrency?: number;
  timeoutMs?: number;
}

export interface LatencyPercentiles {
  p50: number;
  p90: number;
  p99: number;
}

export interface ServiceProbeResult {
  from: string;
  to: string;
  protocol: 'TCP' | 'UDP';
  count: number;
  /** Answering pod (`namespace/name`) → probes it answered. */
  answered: Record<string, number>;
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

/** Resolves `to` against the lab's IR: a service port must exist with that protocol. */
export function resolveTarget(
  ir: LabState['ir'],
  to: string,
  protocol: 'TCP' | 'UDP',
): { address: string; port: number } {
  const m = /^(?:svc\/([^/\s]+)\/([^/:\s]+)|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/.exec(to);
  const port = Number(m?.[4]);
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535)
    throw new LabError(`--to must be IP:PORT or svc/NAMESPACE/NAME:PORT, not '${to}'`);
  if (m[3] !== undefined) return { address: m[3], port };
  const service = `${m[1] ?? ''}/${m[2] ?? ''}`;
  const ports = ir.services.filter((t) => t.service === service);
  if (ports.length === 0) {
    const known = [...new Set(ir.services.map((t) => t.service))];
    throw new LabError(
      `the lab has no service '${service}' (services: ${known.slice(0, 20).join(', ') || 'none'})`,
    );
  }
  const table = ports.find((t) => t.port === port && t.protocol === protocol);
  if (!table)
    throw new LabError(
      `service ${service} has no port ${port}/${protocol} (ports: ${ports.map((t) => `${t.port}/${t.protocol}`).join(', ')})`,
    );
  return { address: table.address, port };
}

/** Tallies outcomes; pure, so the CLI's numbers can be checked without root. */
export function summarise(outcomes: readonly ProbeOutcome[]): {
  answered: Record<string, number>;
  failures: number;
  errors: Record<string, number>;
  latencyMs: LatencyPercentiles;
} {
  const answered: Record<string, number> = {};
  const errors: Record<string, number> = {};
  const latencies: number[] = [];
  let failures = 0;
  for (const o of outcomes) {
    // Connected but silent (a listener that is not a probe server) also counts as a failure:
    // the question is which backend answered.
    if (o.ok && o.answer) {
      answered[o.answer] = (answered[o.answer] ?? 0) + 1;
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
  const src = findPod(state, opts.from);
  const target = resolveTarget(state.ir, opts.to, protocol);
  const concurrency = Math.max(1, opts.concurrency ?? DEFAULT_PROBE_CONCURRENCY);
  const source = { id: src.id, netns: src.netns, cgroup: join(state.cgroupRoot, src.slug) };
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
    const row = results[src.id] ?? {};
    for (const t of targets) outcomes.push(row[t.id] ?? { ok: false, error: 'not probed', ms: 0 });
  }
  const durationMs = Math.round(performance.now() - started);
  return {
    from: src.id,
    to: opts.to,
    protocol,
    count: opts.count,
    ...summarise(outcomes),
    durationMs,
    rate: Math.round((opts.count / Math.max(1, durationMs)) * 1000),
  };
}
