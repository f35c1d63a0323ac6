/**
 * How `reach` and `lab reach` show a matrix to people: one symbol per outcome (the legend says
 * which), mismatches with the prediction marked, and above a terminal's width a per-namespace
 * summary and a list of the pairs that matter instead of the full grid.
 */
import type { ReachComparison, ReachMatrix, ReachMismatch, ReachOutcome } from '../calc/index.js';
import { formatTable } from './output.js';

export const REACH_SYMBOL: Readonly<Record<ReachOutcome, string>> = {
  allowed: '.',
  denied: 'X',
  unserved: '-',
};

/** Marks a measured cell that differs from the prediction. */
export const MISMATCH_MARK = '!';

/** Above this many destination pods the grid is wider than a terminal: summarise instead (`--full` forces it). */
export const FULL_GRID_MAX_PODS = 20;

/** Pairs listed under a summary before the rest is only counted. */
export const LIST_LIMIT = 40;

export function reachLegend(compared: boolean): string {
  const legend = `. allowed   X denied by policy   - allowed, but nothing serves the port`;
  return compared ? `${legend}   ${MISMATCH_MARK} differs from the prediction` : legend;
}

function mismatchKeys(mismatches: readonly ReachMismatch[]): Set<string> {
  return new Set(mismatches.map((m) => `${m.from}\u0000${m.to}`));
}

/** Sources down, destinations across, one symbol per pair (`!` after it when the prediction differs). */
export function formatReachGrid(matrix: ReachMatrix, mismatches: readonly ReachMismatch[] = []): string {
  const wrong = mismatchKeys(mismatches);
  const sources = Object.keys(matrix.outcomes);
  const dests = [...new Set(sources.flatMap((s) => Object.keys(matrix.outcomes[s] ?? {})))];
  const rows = sources.map((s) => [
    s,
    ...dests.map((d) => {
      const o = matrix.outcomes[s]?.[d];
      if (o === undefined) return '?';
      return REACH_SYMBOL[o] + (wrong.has(`${s}\u0000${d}`) ? MISMATCH_MARK : '');
    }),
  ]);
  return formatTable(['from \\ to', ...dests], rows);
}

function namespaceOf(pod: string): string {
  const i = pod.indexOf('/');
  return i < 0 ? pod : pod.slice(0, i);
}

/**
 * Namespaces down and across; each cell counts the pairs between them as
 * `allowed/denied/unserved`, with `!N` when N of them differ from the prediction.
 */
export function formatNamespaceSummary(
  matrix: ReachMatrix,
  mismatches: readonly ReachMismatch[] = [],
): string {
  type Cell = Record<ReachOutcome, number> & { wrong: number };
  const cells = new Map<string, Cell>();
  const cell = (from: string, to: string): Cell => {
    const key = `${from}\u0000${to}`;
    let c = cells.get(key);
    if (!c) cells.set(key, (c = { allowed: 0, denied: 0, unserved: 0, wrong: 0 }));
    return c;
  };
  const namespaces = new Set<string>();
  for (const [from, row] of Object.entries(matrix.outcomes)) {
    for (const [to, o] of Object.entries(row)) {
      namespaces.add(namespaceOf(from)).add(namespaceOf(to));
      cell(namespaceOf(from), namespaceOf(to))[o]++;
    }
  }
  for (const m of mismatches) cell(namespaceOf(m.from), namespaceOf(m.to)).wrong++;
  const sorted = [...namespaces].sort();
  const rows = sorted.map((from) => [
    from,
    ...sorted.map((to) => {
      const c = cells.get(`${from}\u0000${to}`);
      if (!c) return '';
      return `${c.allowed}/${c.denied}/${c.unserved}` + (c.wrong > 0 ? ` ${MISMATCH_MARK}${c.wrong}` : '');
    }),
  ]);
  return formatTable(['from \\ to (allowed/denied/unserved)', ...sorted], rows);
}

/** A titled list of pairs, the first `limit` shown and the rest counted. */
export function formatPairList(title: string, pairs: readonly string[], limit = LIST_LIMIT): string {
  if (pairs.length === 0) return `${title}: none`;
  const shown = pairs.slice(0, limit).map((p) => `  ${p}`);
  const more =
    pairs.length > limit ? [`  … and ${pairs.length - limit} more (--full or --json for all)`] : [];
  return [`${title} (${pairs.length}):`, ...shown, ...more].join('\n');
}

export function mismatchLines(mismatches: readonly ReachMismatch[]): string[] {
  return mismatches.map((m) => `${m.from} → ${m.to}: measured ${m.measured}, predicted ${m.predicted}`);
}

/** Pairs with a given outcome, as `from → to`. */
export function pairsWith(matrix: ReachMatrix, outcome: ReachOutcome): string[] {
  return Object.entries(matrix.outcomes).flatMap(([from, row]) =>
    Object.entries(row)
      .filter(([, o]) => o === outcome)
      .map(([to]) => `${from} → ${to}`),
  );
}

/** `16 pairs probed: 9 allowed, 5 denied, 2 unserved; 0 mismatches with the prediction (312 ms)` */
export function reachSummaryLine(c: ReachComparison, v: Pick<ReachView, 'compared' | 'durationMs'>): string {
  const verb = v.durationMs === undefined ? 'predicted' : 'probed';
  const counts = `${c.pairs} pairs ${verb}: ${c.allowed} allowed, ${c.denied} denied, ${c.unserved} unserved`;
  const vs = v.compared
    ? `; ${c.mismatches.length} mismatch${c.mismatches.length === 1 ? '' : 'es'} with the prediction`
    : '';
  return `${counts}${vs}${v.durationMs === undefined ? '' : ` (${v.durationMs} ms)`}`;
}

export interface ReachView {
  matrix: ReachMatrix;
  comparison: ReachComparison;
  /** Whether `comparison` holds a comparison with a prediction (`lab reach`), or only counts (`reach`). */
  compared: boolean;
  /** How long measuring took; absent for a prediction. */
  durationMs?: number;
  /** The pod×pod grid whatever the number of pods. */
  full: boolean;
}

/** Everything `reach` and `lab reach` print after their header line. */
export function formatReachView(v: ReachView): string {
  const mismatches = v.comparison.mismatches;
  const dests = new Set(Object.values(v.matrix.outcomes).flatMap((row) => Object.keys(row)));
  const grid = v.full || dests.size <= FULL_GRID_MAX_PODS;
  const parts = grid
    ? [formatReachGrid(v.matrix, mismatches), reachLegend(v.compared)]
    : [
        formatNamespaceSummary(v.matrix, mismatches),
        `(${dests.size} pods: a summary per namespace; --full prints the pod×pod grid)`,
        formatPairList('denied by policy', pairsWith(v.matrix, 'denied')),
        formatPairList('unserved', pairsWith(v.matrix, 'unserved')),
      ];
  if (v.compared && mismatches.length > 0)
    parts.push(
      formatPairList('differ from the prediction', mismatchLines(mismatches), grid ? Infinity : LIST_LIMIT),
    );
  parts.push(reachSummaryLine(v.comparison, v));
  return parts.join('\n');
}
