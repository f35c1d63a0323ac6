/** Per-concern recommendations → one backend to run, plus what belongs outside the packet filter. */
import type { BenchReport } from '../bench/results.js';
import type { BackendName } from '../dataplane/backend.js';
import { ADVISED_BACKENDS, canRun, lackedFeatures, type Capabilities } from './capabilities.js';
import { EvidenceBook, TIE_RULE } from './evidence.js';
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

/** Whether a recommendation votes for `b`: its choice, or a backend tied with it. */
const votesFor = (r: Recommendation, b: BackendChoice): boolean => r.choice === b || r.tiedWith.includes(b);

/** The sentence after "Run the X backend:", built only from the votes, so it cannot contradict the rows. */
function headline(
  backend: BackendChoice,
  runnerUp: BackendChoice | undefined,
  decidedBy: Recommendation[],
  tiedOn: Recommendation[],
  priority: Workload['priority'],
): string {
  const tieNote = tiedOn.length
    ? `${tiedOn.map((r) => r.concern).join(', ')} ${tiedOn.length === 1 ? 'is a tie' : 'are ties'} (${tiedOn
        .map((r) => [r.choice, ...r.tiedWith].join(' = '))
        .join('; ')})`
    : '';
  if (decidedBy.length === 0) {
    const rest = runnerUp
      ? `nothing measured separates it from ${runnerUp}`
      : 'no concern separates the backends';
    return [tieNote, `${rest}, and your priority is ${priority}`].filter(Boolean).join('; ');
  }
  const wins = decidedBy.map((r) => (r.weight < 1 ? `${r.concern} (as fast, and simpler)` : r.concern));
  return [`it wins on ${wins.join(', ')}`, tieNote].filter(Boolean).join('; ');
}

/** `capabilities`: the kernel's answers to the feature probes (src/advise/probe.ts at the edge). */
export function advise(
  workload: Workload,
  report: BenchReport | undefined,
  capabilities: Capabilities,
): Advice {
  const ctx = { workload, evidence: new EvidenceBook(report), capabilities };
  const recommendations = RULES.map((r) => r(ctx)).filter((r): r is Recommendation => r !== undefined);
  const elsewhere = recommendations.filter((r) => OUTSIDE.has(r.choice));
  const score = (b: BackendChoice): number =>
    recommendations.filter((r) => votesFor(r, b)).reduce((n, r) => n + r.weight, 0);
  const allowed = BACKENDS.filter((b) => canRun(b, capabilities));
  const tieBreak = allowed.includes(TIE_BREAK[workload.priority]) ? TIE_BREAK[workload.priority] : 'nftables';
  // Highest score first; equal scores go to the priority's backend.
  const ranked = [...allowed].sort(
    (a, b) => score(b) - score(a) || (b === tieBreak ? 1 : a === tieBreak ? -1 : 0),
  );
  const backend = ranked[0] as BackendChoice;
  const runnerUp = ranked[1];
  const mine = recommendations.filter((r) => votesFor(r, backend)).sort((a, b) => b.weight - a.weight);
  const decidedBy = mine.filter((r) => !runnerUp || !votesFor(r, runnerUp));
  const tiedOn = mine.filter((r) => r.tiedWith.length > 0 && runnerUp !== undefined && votesFor(r, runnerUp));
  const outside = elsewhere.length
    ? `; outside the packet filter: ${elsewhere.map((e) => `${e.concern} → ${e.choice}`).join(', ')}`
    : '';
  return {
    backend,
    summary: `Run the ${backend} backend: ${headline(backend, runnerUp, decidedBy, tiedOn, workload.priority)}${outside}.`,
    decidedBy: decidedBy.map((r) => r.concern),
    tiedOn: tiedOn.map((r) => r.concern),
    ...(runnerUp ? { runnerUp } : {}),
    scores: Object.fromEntries(allowed.map((b) => [b, score(b)])),
    tieRule: TIE_RULE,
    recommendations,
    elsewhere,
    kernelLacks: lackedFeatures(capabilities),
    measured: recommendations.some((r) => r.measured),
  };
}
