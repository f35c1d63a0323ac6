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
  /** Concerns that decided the backend, in the order they weighed. */
  decidedBy: string[];
  recommendations: Recommendation[];
  /** Jobs for something other than a packet filter (proxy, mesh, WireGuard). */
  elsewhere: Recommendation[];
  /** Kernel features some backend needs that the probes found missing, e.g. "tcx (Linux 6.6+)". */
  kernelLacks: string[];
  measured: boolean;
}
