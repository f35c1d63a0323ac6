import type { ReachMatrix, ReachOutcome } from './api.js';

export interface ReachMismatch {
  from: string;
  to: string;
  predicted: ReachOutcome;
  measured: ReachOutcome;
}

/** How a measured matrix compares with the one predicted: counts of the measured outcomes, and the pairs that differ. */
export interface ReachComparison {
  pairs: number;
  allowed: number;
  denied: number;
  unserved: number;
  /** Pairs measured but absent from the prediction (a pod the prediction does not know). */
  unpredicted: number;
  mismatches: ReachMismatch[];
}

/** Compares pair by pair, in the measured matrix's order (sources, then destinations). */
export function compareReach(measured: ReachMatrix, predicted: ReachMatrix | undefined): ReachComparison {
  const out: ReachComparison = {
    pairs: 0,
    allowed: 0,
    denied: 0,
    unserved: 0,
    unpredicted: 0,
    mismatches: [],
  };
  for (const [from, row] of Object.entries(measured.outcomes)) {
    for (const [to, got] of Object.entries(row)) {
      out.pairs++;
      out[got]++;
      if (!predicted) continue;
      const want = predicted.outcomes[from]?.[to];
      if (want === undefined) out.unpredicted++;
      else if (want !== got) out.mismatches.push({ from, to, predicted: want, measured: got });
    }
  }
  return out;
}
