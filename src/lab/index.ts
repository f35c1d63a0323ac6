/** The lab: nodes and pods as network namespaces on one machine, with probes and real traffic. */
export { converge, type ConvergeOptions, type ConvergeResult } from './converge.js';
export { labDown, labDownAll, labsOnMachine, destroyLab, type CleanupReport } from './down.js';
export { measureReach, DEFAULT_PROBE_TIMEOUT_MS, type ReachOptions, type ReachResult } from './reach.js';
export {
  dropsBetween,
  hintLine,
  hintsFor,
  labDropHints,
  recentKernelDrops,
  type KernelDropHint,
} from './kernel-drops.js';
export { labExec } from './exec.js';
export { outsideClient, runOutside, spawnOutside } from './outside-exec.js';
export { DEFAULT_OUTSIDE, OUTSIDE_REF_PREFIX, type LabOutside, type LabLoadBalancer } from './outside.js';
export {
  probeService,
  DEFAULT_PROBE_CONCURRENCY,
  type ServiceProbeOptions,
  type ServiceProbeResult,
} from './probe-service.js';
export {
  labSummary,
  labDetail,
  allLabSummaries,
  allLabStatuses,
  type LabSummary,
  type LabDetail,
} from './status.js';
export { LabError } from './errors.js';
export { DEFAULT_LAB, checkLabName, labNameError } from './names.js';
export type { Progress } from './progress.js';
export type { LabState, LabBackend } from './state.js';
export type { LabPod, LabNode, Topology } from './topology.js';
export { agentStateDir, desiredDir, labAgents, findAgents, type AgentProcess } from './agents.js';
export { stateLabs } from './state.js';
