import type { BenchScenario } from './types.js';

/** Every scenario `switchyard bench` knows, loaded lazily so one scenario's deps don't slow the others. */
export const scenarioLoaders: Record<string, () => Promise<BenchScenario>> = {};

export function scenarioNames(): string[] {
  return Object.keys(scenarioLoaders);
}
