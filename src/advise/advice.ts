/**
 * What `switchyard advise` answers: one backend to run, each concern's recommendation and the
 * measurements behind it. The one definition that the advisor, the CLI and the console (server
 * and browser) share; type-only, so web/ can typecheck it.
 */
import type { BenchRow } from '../bench/results.js';
import type { BackendName } from '../dataplane/backend.js';

export type Choice = BackendName | 'any' | 'proxy' | 'mesh' | 'wireguard';

/** One bench row a recommendation rests on. */
export interface Evidence {
  scenario: string;
  backend: string;
  params: BenchRow['params'];
  median: number;
  unit: string;
}

export interface Recommendation {
  concern: string;
  choice: Choice;
  /**
   * Backends the measurements cannot tell from `choice` (TIE_RULE in evidence.ts): the concern
   * votes for each of them as much as for `choice`, so it does not decide between them.
   */
  tiedWith: BackendName[];
  /** One sentence a reader acts on. */
  advice: string;
  reasons: string[];
  evidence: Evidence[];
  /** False when no bench in this run measured the question and the rule fell back on documented behaviour. */
  measured: boolean;
  /**
   * How much this concern weighs in choosing one backend: 1 for a need or a measured win, less
   * for a preference ("as fast, and simpler"), so a preference never outvotes a need.
   */
  weight: number;
}

export interface Advice {
  backend: BackendName;
  summary: string;
  /** Concerns that voted for the backend and not for the runner-up, heaviest first. */
  decidedBy: string[];
  /** Concerns that voted for the backend and the runner-up alike (a measured tie, or 'any'-free ties). */
  tiedOn: string[];
  /** The backend with the next-highest weighted votes, if any other can run. */
  runnerUp?: BackendName;
  /** Weighted votes per backend (a need or a measured win 1, a preference 0.5). */
  scores: Partial<Record<BackendName, number>>;
  /** When two measurements count as a tie, in words (TIE_RULE). */
  tieRule: string;
  recommendations: Recommendation[];
  /** Jobs for something other than a packet filter (proxy, mesh, WireGuard). */
  elsewhere: Recommendation[];
  /** Kernel features some backend needs that the probes found missing, e.g. "tcx (Linux 6.6+)". */
  kernelLacks: string[];
  measured: boolean;
}
