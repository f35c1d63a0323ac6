export type { BuildOptions, Packet, ReachMatrix, ReachOutcome } from './api.js';
export {
  allocate,
  DEFAULT_NODE_COUNT,
  MissingAllocationError,
  type AllocateOptions,
  type Allocations,
} from './allocate.js';
export { buildIR, withRuleSetsOf } from './build.js';
export { evaluate, Oracle, type SideVerdict, type Verdict, type SideReason } from './evaluate.js';
export { familyAddress, reachMatrix } from './reach.js';
export { compareReach, type ReachComparison, type ReachMismatch } from './reach-compare.js';
export { selectorMatches, selectorText } from './selectors.js';
export * from './addresses.js';
export {
  destinationHasPort,
  explain,
  impliedFamily,
  resolveEndpointOrAddress,
  type Explanation,
  type ExplainQuery,
  type ExternalEntryExplanation,
  type ServiceBackendExplanation,
  type ServiceExplanation,
  type SideExplanation,
  type RuleRef,
} from './explain.js';
export { parseDestination } from './explain-service.js';
export { servedPorts, servesPort } from './serving.js';
export {
  ClientIpAffinity,
  eligibleBackends,
  entryText,
  evaluateExternal,
  externalTable,
  internalBackends,
  parseExternalEntry,
  type ExternalEntry,
  type ExternalPath,
  type ExternalProblem,
  type ExternalSource,
  type ExternalVerdict,
} from './outside.js';
export {
  DEFAULT_OUTSIDE_CLIENT,
  OUTSIDE_PREFIX,
  otherSourceText,
  resolveOutside,
} from './explain-outside.js';
export {
  buildDecisionTable,
  withDecisionTables,
  type DecisionTableBuild,
  type DecisionTableOptions,
} from './decision-table.js';
export { IncrementalCalculation } from './incremental/calculation.js';
export { emptyDelta, isEmptyDelta, ruleSetKey, type IdChanges, type IrDelta } from './incremental/delta.js';
export {
  applyModelChanges,
  diffModels,
  modelKey,
  type ModelChange,
  type ModelKind,
} from '../model/changes.js';
