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

export interface ReachResponse {
  lab: string;
  backend: string;
  port: number;
  protocol: ProtocolName;
  /** Real connections between the lab's pods. */
  measured: Matrix;
  /** What the evaluator predicts from the IR. */
  predicted: Matrix;
  durationMs: number;
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
  /** `defaults` or `lab NAME`. */
  workloadFrom: string;
  workload: Record<string, unknown>;
  advice: Advice;
}
