import type { BenchRow } from './types.js';

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.round((p / 100) * (sorted.length - 1))));
  return sorted[idx] as number;
}

/** Summarises repeated measurements of one configuration into a row. */
export function summarize(backend: string, params: BenchRow['params'], samples: number[]): BenchRow {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    backend,
    params,
    median: percentile(sorted, 50),
    p10: percentile(sorted, 10),
    p90: percentile(sorted, 90),
    samples,
  };
}
