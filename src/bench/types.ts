import type { BenchScenarioResult } from './results.js';

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
