import { median, percentile } from '../util/stats.js';
import type { BenchRow } from './results.js';

export { median, percentile };

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

/** The upper middle value (of an even count, the larger of the two); NaN for no values. */
export function upperMedian(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}
