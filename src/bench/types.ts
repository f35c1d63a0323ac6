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

/** A scenario in two steps: measure (options chosen by --quick), then read the data as a result. */
export function measuredScenario<O, D>(s: {
  name: string;
  description: string;
  options(quick: boolean): O;
  measure(ctx: BenchContext, options: O): Promise<D>;
  result(data: D): BenchScenarioResult;
}): BenchScenario {
  return {
    name: s.name,
    description: s.description,
    run: async (ctx) => s.result(await s.measure(ctx, s.options(ctx.quick))),
  };
}
