/** Per-concern recommendations → one backend to run, plus what belongs outside the packet filter. */
import type { BenchReport } from '../bench/results.js';
import type { BackendName } from '../dataplane/backend.js';
import { ADVISED_BACKENDS, canRun, lackedFeatures, type Capabilities } from './capabilities.js';
import { EvidenceBook } from './evidence.js';
import { RULES, type Choice, type Recommendation } from './rules.js';
import type { Workload } from './workload.js';
import type { Advice } from './advice.js';

export type { Advice } from './advice.js';

export type BackendChoice = BackendName;
const BACKENDS = ADVISED_BACKENDS;
const OUTSIDE: ReadonlySet<Choice> = new Set(['proxy', 'mesh', 'wireguard']);

const TIE_BREAK: Record<Workload['priority'], BackendChoice> = {
  simplicity: 'iptables',
  latency: 'ebpf',
  cpu: 'ebpf',
};

/** `capabilities`: the kernel's answers to the feature probes (src/advise/probe.ts at the edge). */
export function advise(
  workload: Workload,
  report: BenchReport | undefined,
  capabilities: Capabilities,
): Advice {
  const ctx = { workload, evidence: new EvidenceBook(report), capabilities };
  const recommendations = RULES.map((r) => r(ctx)).filter((r): r is Recommendation => r !== undefined);
  const elsewhere = recommendations.filter((r) => OUTSIDE.has(r.choice));
  const votes = new Map<BackendChoice, Recommendation[]>(BACKENDS.map((b) => [b, []]));
  for (const r of recommendations) {
    if ((BACKENDS as readonly string[]).includes(r.choice)) votes.get(r.choice as BackendChoice)?.push(r);
  }
  const score = (b: BackendChoice): number => (votes.get(b) ?? []).reduce((n, r) => n + r.weight, 0);
  const allowed = BACKENDS.filter((b) => canRun(b, capabilities));
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
    kernelLacks: lackedFeatures(capabilities),
    measured: recommendations.some((r) => r.measured),
  };
}
