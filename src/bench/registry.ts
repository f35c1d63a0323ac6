import type { BenchScenario } from './types.js';

/** Every scenario `switchyard bench` knows, loaded lazily so one scenario's deps don't slow the others. */
export const scenarioLoaders: Record<string, () => Promise<BenchScenario>> = {
  lab: async () => (await import('./scenarios/lab.js')).scenario,
  'bpf-maps': async () => (await import('./scenarios/bpf-maps.js')).scenario,
  'netfilter-update': async () => (await import('./scenarios/netfilter-update.js')).scenario,
  services: async () => (await import('./scenarios/services.js')).scenario,
  nodeport: async () => (await import('./scenarios/nodeport.js')).scenario,
  'nodeport-cpu': async () => (await import('./scenarios/nodeport.js')).cpuScenario,
  policy: async () => (await import('./scenarios/policy.js')).scenario,
  'set-update': async () => (await import('./scenarios/set-update.js')).scenario,
  prefilter: async () => (await import('./scenarios/prefilter.js')).scenario,
  redirect: async () => (await import('./scenarios/redirect.js')).scenario,
  throughput: async () => (await import('./scenarios/throughput.js')).scenario,
  'throughput-cpu': async () => (await import('./scenarios/throughput.js')).cpuScenario,
  observe: async () => (await import('./scenarios/observe.js')).scenario,
  agent: async () => (await import('./scenarios/agent.js')).scenario,
  cluster: async () => (await import('./scenarios/cluster.js')).scenario,
};

export function scenarioNames(): string[] {
  return Object.keys(scenarioLoaders);
}
