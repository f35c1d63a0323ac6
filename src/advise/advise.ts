/** Per-concern recommendations → one backend to run, plus what belongs outside the packet filter. */
import { release } from 'node:os';
import type { BenchReport } from '../bench/results.js';
import { EvidenceBook } from './evidence.js';
import { ebpfSupported, RULES, type Choice, type Recommendation } from './rules.js';
import type { Workload } from './workload.js';

export type BackendChoice = 'ebpf' | 'iptables' | 'nftables';
const BACKENDS: readonly BackendChoice[] = ['ebpf', 'iptables', 'nftables'];
const OUTSIDE: ReadonlySet<Choice> = new Set(['proxy', 'mesh', 'wireguard']);

export interface Advice {
  backend: BackendChoice;
  summary: string;
  /** Concerns that decided the backend, in the order they weighed. */
  decidedBy: string[];
  recommendations: Recommendation[];
  /** Jobs for something other than a packet filter (proxy, mesh, WireGuard). */
  elsewhere: Recommendation[];
  kernel: string;
  measured: boolean;
}

const TIE_BREAK: Record<Workload['priority'], BackendChoice> = {
  simplicity: 'iptables',
  latency: 'ebpf',
  cpu: 'ebpf',
};

export function advise(workload: Workload, report?: BenchReport): Advice {
  const kernel = workload.kernel ?? report?.machine.kernel ?? release();
  const ctx = { workload, evidence: new EvidenceBook(report), kernel };
  const recommendations = RULES.map((r) => r(ctx)).filter((r): r is Recommendation => r !== undefined);
  const elsewhere = recommendations.filter((r) => OUTSIDE.has(r.choice));
  const votes = new Map<BackendChoice, Recommendation[]>(BACKENDS.map((b) => [b, []]));
  for (const r of recommendations) {
    if ((BACKENDS as readonly string[]).includes(r.choice)) votes.get(r.choice as BackendChoice)?.push(r);
  }
  const score = (b: BackendChoice): number => (votes.get(b) ?? []).reduce((n, r) => n + r.weight, 0);
  const allowed = BACKENDS.filter((b) => b !== 'ebpf' || ebpfSupported(kernel));
  const tieBreak = allowed.includes(TIE_BREAK[workload.priority]) ? TIE_BREAK[workload.priority] : 'nftables';
  const backend = allowed.reduce((best, b) => {
    const diff = score(b) - score(best);
    return diff > 0 || (diff === 0 && b === tieBreak) ? b : best;
  }, allowed[0] as BackendChoice);
  const decidedBy = (votes.get(backend) ?? []).sort((a, b) => b.weight - a.weight).map((r) => r.concern);
  const why = decidedBy.length
    ? `it wins on ${decidedBy.join(', ')}`
    : `no concern separates the backends, and your priority is ${workload.priority}`;
  const outside = elsewhere.length
    ? `; outside the packet filter: ${elsewhere.map((e) => `${e.concern} → ${e.choice}`).join(', ')}`
    : '';
  return {
    backend,
    summary: `Run the ${backend} backend: ${why}${outside}.`,
    decidedBy,
    recommendations,
    elsewhere,
    kernel,
    measured: recommendations.some((r) => r.measured),
  };
}
