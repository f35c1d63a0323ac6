/**
 * The nodeport bench's data read as results (rows, notes) and as the issue's targets, ratios of
 * one run: pure, so the arithmetic is tested without a kernel.
 */
import { median, percentile } from '../../../util/stats.js';
import type { BenchRow, BenchScenarioResult } from '../../results.js';
import { summarize } from '../../stats.js';

/** One 1-second wrk run of new connections (`Connection: close`). */
export interface ConnectionRun {
  connPerSec: number;
  connections: number;
  /** CPU seconds per 10k connections over the run: softirq of all CPUs, and the client's and backend's cgroups. */
  softirqPer10k: number;
  totalPer10k: number;
  /** wrk's request latency on a fresh connection (the handshake is not in it). */
  wrkP50Ms: number;
  wrkP99Ms: number;
  /** Socket errors plus answers that were not 2xx/3xx. */
  failed: number;
}

/** One 1-second wrk run over kept connections. */
export interface ReusedRun {
  reqPerSec: number;
  failed: number;
}

/** One (backend, services) point. */
export interface NodePortPoint {
  backend: string;
  services: number;
  applyMs: number;
  runs: ConnectionRun[];
  reused: ReusedRun[];
  /** Handshake times of the connect probes that completed. */
  connectMs: number[];
  connectFailed: number;
  /** Distinct peer addresses the `local` service's backend logged, and the client's own. */
  peers?: { client: string; seen: string[] };
  /** Set when the point could not be measured (no rows then). */
  problem?: string;
}

export interface NodePortData {
  entry: 'nodeport' | 'clusterip';
  /** How the run was made, for the notes. */
  method: string[];
  points: NodePortPoint[];
}

export const RATE_SCALE = 1000;
export const RATE_TARGET = 1.5;
export const FLAT_TARGET = 0.9;
export const CPU_TARGET = 0.5;

export function failedConnections(p: NodePortPoint): number {
  return (
    p.runs.reduce((n, r) => n + r.failed, 0) + p.reused.reduce((n, r) => n + r.failed, 0) + p.connectFailed
  );
}

function measured(data: NodePortData): NodePortPoint[] {
  return data.points.filter((p) => p.problem === undefined && p.runs.length > 0);
}

const perRun = (p: NodePortPoint, f: (r: ConnectionRun) => number): number => median(p.runs.map(f));

/** The rows of `nodeport`: new-connection rate (conn/s) and request rate on kept connections (req/s). */
export function nodePortRows(data: NodePortData): BenchRow[] {
  const rows: BenchRow[] = [];
  for (const p of measured(data)) {
    rows.push(
      summarize(
        p.backend,
        { services: p.services, metric: 'new connections' },
        p.runs.map((r) => r.connPerSec),
      ),
    );
    if (p.reused.length > 0)
      rows.push(
        summarize(
          p.backend,
          { services: p.services, metric: 'reused connections' },
          p.reused.map((r) => r.reqPerSec),
        ),
      );
  }
  return rows;
}

/** The rows of `nodeport-cpu`: CPU seconds per 10k new connections, softirq and total. */
export function nodePortCpuRows(data: NodePortData): BenchRow[] {
  return measured(data).flatMap((p) => [
    summarize(
      p.backend,
      { services: p.services, metric: 'softirq' },
      p.runs.map((r) => r.softirqPer10k),
    ),
    summarize(
      p.backend,
      { services: p.services, metric: 'total' },
      p.runs.map((r) => r.totalPer10k),
    ),
  ]);
}

const ms = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : '–');

/** One line per point: every figure of the issue's row (rate, connect p50/p99, CPU, failures). */
export function pointLine(p: NodePortPoint): string {
  const head = `${p.backend} N=${p.services}`;
  if (p.problem !== undefined) return `${head}: not measured: ${p.problem}`;
  const sorted = [...p.connectMs].sort((a, b) => a - b);
  const peers = p.peers
    ? `; peers the Local service's backend saw: ${p.peers.seen.join(', ') || 'none'} (client ${p.peers.client})`
    : '';
  const reused =
    p.reused.length > 0 ? `; reused ${median(p.reused.map((r) => r.reqPerSec)).toFixed(0)} req/s` : '';
  return (
    `${head}: ${perRun(p, (r) => r.connPerSec).toFixed(0)} conn/s, connect p50 ${ms(percentile(sorted, 50))} ms, ` +
    `p99 ${ms(percentile(sorted, 99))} ms (${sorted.length} handshakes), ` +
    `wrk request p50 ${ms(perRun(p, (r) => r.wrkP50Ms))} ms, p99 ${ms(perRun(p, (r) => r.wrkP99Ms))} ms, ` +
    `CPU per 10k connections softirq ${perRun(p, (r) => r.softirqPer10k).toFixed(2)} s, ` +
    `total ${perRun(p, (r) => r.totalPer10k).toFixed(2)} s, ${failedConnections(p)} failed connections` +
    `${reused}${peers}; lab apply ${Math.round(p.applyMs)} ms`
  );
}

function pointAt(
  points: readonly NodePortPoint[],
  backend: string,
  services: number,
): NodePortPoint | undefined {
  return points.find((p) => p.backend === backend && p.services === services);
}

/** The measured scale nearest `want` (on a log scale), among points of both backends. */
function nearestScale(
  points: readonly NodePortPoint[],
  want: number,
  backends: readonly string[],
): number | undefined {
  const scales = [...new Set(points.map((p) => p.services))].filter((s) =>
    backends.every((b) => pointAt(points, b, s)),
  );
  if (scales.length === 0) return undefined;
  return scales.reduce((a, b) => (Math.abs(Math.log(b / want)) < Math.abs(Math.log(a / want)) ? b : a));
}

const verdict = (met: boolean): string => (met ? 'met' : 'NOT met');

/**
 * The issue's targets as ratios of this run: eBPF's connection rate against iptables' at 1000
 * services and its flatness from the fewest to the most services, CPU per connection, failures,
 * and the source address under `externalTrafficPolicy: Local`.
 */
export function targetLines(data: NodePortData): string[] {
  const points = measured(data);
  const lines: string[] = [];
  const at = nearestScale(points, RATE_SCALE, ['ebpf', 'iptables']);
  const ebpf = at === undefined ? undefined : pointAt(points, 'ebpf', at);
  const iptables = at === undefined ? undefined : pointAt(points, 'iptables', at);
  if (ebpf && iptables) {
    const rate = perRun(ebpf, (r) => r.connPerSec) / perRun(iptables, (r) => r.connPerSec);
    lines.push(
      `target: eBPF connection rate ≥ ${RATE_TARGET}× iptables at ${at} services: ${rate.toFixed(2)}× (${verdict(rate >= RATE_TARGET)})`,
    );
    const cpu = perRun(ebpf, (r) => r.totalPer10k) / perRun(iptables, (r) => r.totalPer10k);
    const softirq = perRun(ebpf, (r) => r.softirqPer10k) / perRun(iptables, (r) => r.softirqPer10k);
    lines.push(
      `target: eBPF CPU per connection ≤ ${CPU_TARGET}× iptables at ${at} services: total ${cpu.toFixed(2)}× (${verdict(cpu <= CPU_TARGET)}), softirq ${softirq.toFixed(2)}×`,
    );
  } else
    lines.push('target: eBPF vs iptables rate and CPU: not measured (a backend has no point in this run)');
  const tcOnly = at === undefined ? undefined : pointAt(points, 'ebpf-tc', at);
  if (ebpf && tcOnly) {
    const rate = perRun(ebpf, (r) => r.connPerSec) / perRun(tcOnly, (r) => r.connPerSec);
    const cpu = perRun(ebpf, (r) => r.totalPer10k) / perRun(tcOnly, (r) => r.totalPer10k);
    lines.push(
      `eBPF with node ports at XDP vs at tcx only (ebpf-tc) at ${at} services: rate ${rate.toFixed(2)}×, CPU per connection ${cpu.toFixed(2)}× (no target)`,
    );
  }
  const ebpfPoints = points.filter((p) => p.backend === 'ebpf').sort((a, b) => a.services - b.services);
  const first = ebpfPoints[0];
  const last = ebpfPoints[ebpfPoints.length - 1];
  if (first && last && first !== last) {
    const base = perRun(first, (r) => r.connPerSec);
    // The fewest services are the reference; the worst of the others is what flatness is about.
    const worst = ebpfPoints
      .slice(1)
      .reduce((a, b) => (perRun(b, (r) => r.connPerSec) < perRun(a, (r) => r.connPerSec) ? b : a));
    const ratio = perRun(worst, (r) => r.connPerSec) / base;
    lines.push(
      `target: eBPF flat (each ≥ ${FLAT_TARGET}× the rate at ${first.services}) from ${first.services} to ${last.services} services: ` +
        `lowest ${ratio.toFixed(2)}× (at ${worst.services}) (${verdict(ratio >= FLAT_TARGET)})`,
    );
  }
  const failing = data.points.filter((p) => p.problem === undefined && failedConnections(p) > 0);
  lines.push(
    `target: 0 failed connections in every row: ${
      failing.length === 0
        ? `met (${points.length} points)`
        : `NOT met: ${failing.map((p) => `${p.backend} N=${p.services} ${failedConnections(p)}`).join(', ')}`
    }`,
  );
  const checked = points.filter((p) => p.peers);
  if (checked.length > 0) {
    const kept = (p: NodePortPoint): boolean =>
      !!p.peers && p.peers.seen.length > 0 && p.peers.seen.every((a) => a === p.peers?.client);
    const lost = checked.filter((p) => !kept(p));
    lines.push(
      `target: source address preserved under externalTrafficPolicy: Local (the backend's $remote_addr is the client's): ${
        lost.length === 0
          ? `met (${checked.length} points)`
          : `NOT met: ${lost.map((p) => `${p.backend} N=${p.services} saw ${p.peers?.seen.join(', ') || 'nothing'}`).join('; ')}`
      }`,
    );
  }
  return lines;
}

const NOTES = (data: NodePortData): string[] => [
  ...data.method,
  ...data.points.map(pointLine),
  ...targetLines(data),
];

export function nodePortResult(data: NodePortData): BenchScenarioResult {
  return {
    name: 'nodeport',
    unit: 'conn/s (new) · req/s (reused)',
    better: 'higher',
    rows: nodePortRows(data),
    notes: NOTES(data),
  };
}

export function nodePortCpuResult(data: NodePortData): BenchScenarioResult {
  return {
    name: 'nodeport-cpu',
    unit: 'CPU-s per 10k connections',
    better: 'lower',
    rows: nodePortCpuRows(data),
    notes: [
      ...data.method,
      'softirq: the softirq column of /proc/stat over each 1-s run (all CPUs, the whole machine: other work on it counts too); ' +
        "total: usage_usec of the client's and the backend pod's cgroups (wrk, nginx, and the kernel work done on their time, " +
        'which on veths is most of the path; work ksoftirqd did is not in it)',
      ...targetLines(data),
    ],
  };
}
