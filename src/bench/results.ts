/**
 * Bench results: the report `switchyard bench --json` writes and the advisor and the console
 * read, and its chart. A leaf module (it imports nothing of the project but its chart and
 * palette, leaves too), so a reader of results does not pull in the scenarios, the labs and the
 * backends that produced them.
 */

/** One measured configuration of one backend in a scenario. */
export interface BenchRow {
  backend: string;
  params: Record<string, string | number>;
  median: number;
  p10: number;
  p90: number;
  samples: number[];
}

export interface BenchScenarioResult {
  name: string;
  unit: string;
  /** Whether a lower figure is better (latency, ns/packet) or a higher one (rates). */
  better: 'lower' | 'higher';
  rows: BenchRow[];
  notes?: string[];
}

export interface BenchReport {
  machine: { kernel: string; cpus: number; node: string };
  scenarios: BenchScenarioResult[];
}

/** The chart of a scenario (SVG), in its own module: src/bench/chart.ts. */
export { scenarioSvg } from './chart.js';
/** Each backend's colour (src/bench/palette.ts), for readers that draw beside the charts. */
export { paletteFor } from './palette.js';
