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

export interface BenchContext {
  quick: boolean;
  /** Advances the progress bar; `total` may be called once up front. */
  progress: { total(n: number): void; tick(label?: string): void };
}

export interface BenchScenario {
  name: string;
  description: string;
  run(ctx: BenchContext): Promise<BenchScenarioResult>;
}
