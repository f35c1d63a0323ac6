/** Nearest-rank percentile of ascending values; NaN for no values. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number;
}

/**
 * Median of values in any order: the nearest-rank 50th percentile (the lower middle value of an
 * even count, so it is always a measured sample), as bench rows report it; NaN for no values.
 */
export function median(values: readonly number[]): number {
  return percentile(
    [...values].sort((a, b) => a - b),
    50,
  );
}
