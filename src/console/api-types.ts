/**
 * The JSON `switchyard console` answers (src/console/server.ts), endpoint by endpoint, shared with
 * the browser pages (web/, `import type` only). Most of it is the agents' answers
 * (../agent/api-types.ts) merged over the lab's nodes. Imports nothing but types web/ can check.
 */
import type {
  EndpointInfo,
  Explanation,
  Flow,
  PolicyInfo,
  ProtocolName,
  StatusResponse,
} from '../agent/api-types.js';
import type { Advice } from '../advise/advice.js';

export type { Advice, Evidence, Recommendation } from '../advise/advice.js';

/** A node whose agent did not answer: reported beside the others' data, never hiding it. */
export interface NodeError {
  node: string;
  error: string;
}

/** What every node answered, and the nodes that did not. */
export interface Merged<T> {
  items: T[];
  errors: NodeError[];
}

// --- GET /api/info -------------------------------------------------------------------------------

export interface LabInfo {
  name: string;
  status: string;
  backend?: string;
  revision?: number;
  nodes?: string[];
  pods?: { id: string; node: string; address: string }[];
  /** The ports pods serve (TCP and UDP), for the reach page's choices. */
  ports?: { port: number; protocol: string }[];
}

export interface InfoResponse {
  lab?: LabInfo;
  agents: StatusResponse[];
  errors: NodeError[];
  /** Whether there are bench results to show. */
  bench: boolean;
}

// --- GET /api/endpoints, /api/policies, /api/flows, /api/explain ----------------------------------

export type NodeEndpoint = EndpointInfo & { node: string };
/** A policy with the pods it selects on every node, and those nodes. */
export type NodePolicy = PolicyInfo & { nodes: string[] };

export type EndpointsResponse = Merged<NodeEndpoint>;
export type PoliciesResponse = Merged<NodePolicy>;
/** GET /api/flows; GET /api/flows/stream sends events `flow` (a Flow) and `node-error` (a NodeError). */
export type FlowsResponse = Merged<Flow>;
export type ExplainResponse = Explanation;

// --- GET /api/reach ------------------------------------------------------------------------------

export interface Matrix {
  port: number;
  protocol: string;
  /** results[src][dst], keys `namespace/pod`. */
  results: Record<string, Record<string, boolean>>;
  /** outcomes[src][dst]: `allowed`, `denied` (by policy) or `unserved` (allowed, but nothing serves the port). */
  outcomes: Record<string, Record<string, 'allowed' | 'denied' | 'unserved'>>;
}

/**
 * What a failed connection means, when the lab's reach measurement says (`switchyard lab reach`
 * distinguishing policy denial from a port nobody serves, issue 22 item 5). Until it does, the
 * console tells them apart with `served` below.
 */
export type ReachOutcome = 'connected' | 'denied' | 'not-served';

export interface ReachResponse {
  lab: string;
  backend: string;
  port: number;
  protocol: ProtocolName;
  /** Real connections between the lab's pods; absent when only the prediction was asked for (`measure=0`). */
  measured?: Matrix & { outcomes?: Record<string, Record<string, ReachOutcome>> };
  /** What the evaluator predicts from the IR. */
  predicted: Matrix;
  /** Whether each pod serves the port: a connection to one that does not fails whatever policy says. */
  served: Record<string, boolean>;
  durationMs: number;
}

// --- GET /api/services, /api/prefilters -----------------------------------------------------------

/** One service port of the lab (a ClusterIP, its port and the pods behind it). */
export interface ServiceView {
  /** `namespace/name` */
  service: string;
  portName?: string;
  address: string;
  port: number;
  protocol: string;
  backends: { endpoint: string; address: string; port: number; node?: string }[];
  affinity: string;
}

export interface PrefilterView {
  name: string;
  nodes: string[];
  set: string;
  /** Deny-listed source CIDRs, merged and normalised as the dataplane installs them. */
  cidrs: string[];
}

export interface ServicesResponse {
  lab: string;
  items: ServiceView[];
}

export interface PrefiltersResponse {
  lab: string;
  items: PrefilterView[];
}

// --- GET /api/bench ------------------------------------------------------------------------------

export interface BenchScenarioInfo {
  name: string;
  unit: string;
  better: 'lower' | 'higher';
  backends: string[];
  notes: string[];
}

export interface BenchResponse {
  file: string;
  machine: { kernel: string; cpus: number; node: string };
  scenarios: BenchScenarioInfo[];
  /** Scenarios `switchyard bench` knows that the file has no results for. */
  missing: string[];
  /** Each backend's colour, the same in the charts and on the page (src/bench/palette.ts). */
  colors: Record<string, string>;
  /** `defaults` or `lab NAME`. */
  workloadFrom: string;
  workload: Record<string, unknown>;
  advice: Advice;
}
