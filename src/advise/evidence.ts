/** Reading bench results as evidence: the rows a rule compares, and how they compare. */
import type { BenchReport, BenchRow, BenchScenarioResult } from '../bench/results.js';
import type { Evidence } from './advice.js';

export type { Evidence } from './advice.js';

/**
 * Two backends whose medians are closer than this factor are a tie: on a shared machine a run's
 * noise moves medians by several percent, so a 1.07x lead is not a result to choose by.
 */
export const TIE_RATIO = 1.1;

/** The tie rule in words, for the CLI, the console and the docs. */
export const TIE_RULE = `backends tie when their p10–p90 ranges overlap or the better median leads by less than ${TIE_RATIO.toFixed(2)}x`;

export interface Comparison {
  /** Best backend by median, per the scenario's direction of "better". */
  best: string;
  /** The best and every backend tied with it (TIE_RULE), best first. */
  tied: string[];
  /** Every backend's figure and its factor behind the best (1 = best). */
  ranking: { backend: string; median: number; behind: number; tie: boolean }[];
  evidence: Evidence[];
}

export class EvidenceBook {
  constructor(private readonly report?: BenchReport) {}

  scenario(name: string): BenchScenarioResult | undefined {
    return this.report?.scenarios.find((s) => s.name === name);
  }

  /**
   * Compares backends in `scenario` on the rows whose params match `where` (numeric params are
   * matched to the nearest measured value, so a workload of 800 rules reads the 1000-rule rows).
   */
  compare(
    scenario: string,
    where: Record<string, string | number> = {},
    backends?: readonly string[],
  ): Comparison | undefined {
    const s = this.scenario(scenario);
    if (!s) return undefined;
    let rows = s.rows.filter((r) => !backends || backends.includes(r.backend));
    for (const [key, want] of Object.entries(where)) {
      const values = [...new Set(rows.map((r) => r.params[key]).filter((v) => v !== undefined))];
      if (values.length === 0) continue;
      const chosen =
        typeof want === 'number' && values.every((v) => typeof v === 'number')
          ? (values as number[]).reduce((a, b) =>
              Math.abs(Math.log(b / want)) < Math.abs(Math.log(a / want)) ? b : a,
            )
          : want;
      rows = rows.filter((r) => r.params[key] === chosen);
    }
    const byBackend = new Map<string, BenchRow>();
    for (const r of rows) if (!byBackend.has(r.backend)) byBackend.set(r.backend, r);
    if (byBackend.size < 2) return undefined;
    const entries = [...byBackend.values()];
    const better = (a: number, b: number): boolean => (s.better === 'lower' ? a < b : a > b);
    const bestRow = entries.reduce((a, b) => (better(b.median, a.median) ? b : a));
    const ranking = entries
      .map((r) => {
        const behind = s.better === 'lower' ? r.median / bestRow.median : bestRow.median / r.median;
        return { backend: r.backend, median: r.median, behind, tie: ties(r, bestRow, behind) };
      })
      .sort((a, b) => a.behind - b.behind);
    return {
      best: bestRow.backend,
      tied: ranking.filter((r) => r.tie).map((r) => r.backend),
      ranking,
      evidence: entries.map((r) => ({
        scenario: s.name,
        backend: r.backend,
        params: r.params,
        median: r.median,
        unit: s.unit,
      })),
    };
  }
}

/** Whether `row` ties with the best row (TIE_RULE); the best ties with itself. */
function ties(row: BenchRow, best: BenchRow, behind: number): boolean {
  const overlap = row.p10 <= best.p90 && best.p10 <= row.p90;
  return row === best || behind < TIE_RATIO || overlap;
}

export function formatComparison(c: Comparison, unit: string): string {
  return c.ranking
    .map((r) => {
      const lag = r.behind > 1.005 ? `${r.behind.toFixed(2)}x behind` : '';
      const note = r.tie && r.backend !== c.best ? `${lag ? `${lag}, ` : ''}a tie` : lag;
      return `${r.backend} ${formatNumber(r.median)} ${unit}${note ? ` (${note})` : ''}`;
    })
    .join(', ');
}

export function formatNumber(n: number): string {
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (Math.abs(n) >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return Math.abs(n) >= 100 ? n.toFixed(0) : n.toPrecision(3);
}
