export { advise, type Advice, type BackendChoice } from './advise.js';
export { workloadFromIR } from './from-ir.js';
export { parseWorkload, workloadSchema, type Workload, type WorkloadInput } from './workload.js';
export type { Recommendation, Choice } from './rules.js';
export type { Capabilities } from './capabilities.js';
