import type { BenchScenario } from './types.js';

/** Every scenario `switchyard bench` knows, loaded lazily so one scenario's deps don't slow the others. */
export const scenarioLoaders: Record<string, () => Promise<BenchScenario>> = {
  lab: async () => (await import('./scenarios/lab.js')).scenario,
  'bpf-maps': async () => (await import('./scenarios/bpf-maps.js')).scenario,
  'netfilter-update': async () => (await import('./scenarios/netfilter-update.js')).scenario,
};

export function scenarioNames(): string[] {
  return Object.keys(scenarioLoaders);
}
