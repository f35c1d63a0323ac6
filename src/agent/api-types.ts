/**
 * The JSON the agent's API answers (src/agent/api.ts), endpoint by endpoint: the one description
 * of it that the server, its clients (src/console, the CLI) and the browser console (web/, with
 * `import type`) share. The server builds its answers as these types, so a change to what it
 * sends that the readers have not heard of fails to compile. web/ typechecks this file without
 * Node's types, so it imports only type modules that import nothing else (the flow records).
 */
import type { TableModeSummary } from '../ir/decision-table.js';
import type { Explanation } from '../calc/explanation.js';
import type { Flow, FlowStats } from '../observe/flow-types.js';

export type { ExplainPeer, Explanation, RuleRef, SideExplanation } from '../calc/explanation.js';

export type { Flow, FlowProcess, FlowStats, FlowVerdict } from '../observe/flow-types.js';

export type Verdict = 'allow' | 'deny' | 'log';
export type Direction = 'ingress' | 'egress';
export type ProtocolName = 'TCP' | 'UDP' | 'SCTP' | 'ICMP';

/** Every error: an HTTP status of 400 or more with this body. */
export interface ErrorResponse {
  error: string;
}

// --- GET /v1/status, POST /v1/sync -------------------------------------------------------------

export interface AgentError {
  at: string;
  stage: 'source' | 'apply' | 'drift';
  /** Revision the error is about (for `apply`). */
  revision?: string;
  message: string;
  /**
   * `backoff`: tried again, waiting longer each time; `on-change`: it would fail the same way
   * (verifier rejection, capacity, invalid input), so it waits for a new desired revision (or, for
   * a repair, for the kernel to change again).
   */
  retry?: 'backoff' | 'on-change';
}

export interface LastApply {
  at: string;
  mode: 'adopted' | 'incremental' | 'full' | 'repair';
  durationMs: number;
  changed: number;
  revision: string;
  /**
   * Where the time of this change went (ms): reading the source and calculating, comparing with
   * the state in force, the kernel write, reading the kernel's fingerprint (0 when it is left to
   * the drift check: an incremental apply) and recording the state.
   */
  phasesMs?: ApplyPhases;
}

export interface ApplyPhases {
  source: number;
  compare: number;
  apply: number;
  fingerprint: number;
  record: number;
}

/** What the agent has in force (POST /v1/sync answers this once the re-read is applied). */
export interface AgentStatus {
  node: string;
  backend: string;
  netns: string;
  scope: string;
  pid: number;
  source: string;
  /** The source's own counters (etcd: connected, lists, resumes, compactions, events, revision). */
  sourceStats?: Readonly<Record<string, number | boolean | undefined>>;
  startedAt: string;
  /** Revision in force (undefined before the first successful apply). */
  revision?: string;
  /** Latest revision read from the source. */
  desiredRevision?: string;
  lastApply?: LastApply;
  /** Set while the newest desired revision could not be applied (the previous state is in force). */
  lastError?: AgentError;
  repairs: number;
  /** Times the lab's supervisor started this node's agent again after it exited (0 when unsupervised). */
  restarts?: number;
  errors: number;
  /** Last time the kernel was confirmed equal to what was applied. */
  checkedAt?: string;
  /** How the node's rule sets in force are decided: tables, walks, and tables over the bound. */
  policy?: TableModeSummary;
  /** Where Prometheus scrapes this agent (loopback), when it serves metrics. */
  metricsUrl?: string;
  /** The heap compactions that give memory back (docs/agent.md, "Memory budget"). */
  memory?: AgentMemory;
}

export interface AgentMemory {
  compactions: number;
  compactedAt?: string;
  /** Whether a look at the process's growth after some work, or a compaction, is pending. */
  due: boolean;
}

/** GET /v1/status */
export interface StatusResponse extends AgentStatus {
  flows: FlowStats;
}

/** POST /v1/sync */
export type SyncResponse = AgentStatus;

// --- GET /v1/endpoints ---------------------------------------------------------------------------

/** One direction of an endpoint: the policies selecting it and what happens to the rest. */
export interface EndpointSide {
  globalPolicies: string[];
  networkPolicies: string[];
  default: 'allow' | 'deny';
  rules: number;
  /** A decision table (one lookup) or the rule walk decides this side. */
  decidedBy: 'table' | 'walk';
  /** Entries of the table, when a table decides. */
  tableEntries?: number;
}

export interface EndpointInfo {
  /** `namespace/pod`. */
  id: string;
  addresses: string[];
  labels: Record<string, string>;
  namespaceLabels: Record<string, string>;
  ports: { name?: string; port: number; protocol: 'TCP' | 'UDP' | 'SCTP' }[];
  interface: string;
  ingress: EndpointSide;
  egress: EndpointSide;
}

/** GET /v1/endpoints: this node's pods. */
export type EndpointsResponse = EndpointInfo[];

// --- GET /v1/policies ----------------------------------------------------------------------------

export interface PolicyInfo {
  /** `NetworkPolicy ns/name` or `GlobalPolicy name`. */
  policy: string;
  kind: string;
  namespace?: string;
  name: string;
  directions: string[];
  /** Pods of this node it selects. */
  selects: string[];
  rules: string[];
}

/** GET /v1/policies: policies selecting a pod on this node. */
export type PoliciesResponse = PolicyInfo[];

// --- GET /v1/flows -------------------------------------------------------------------------------

/** GET /v1/flows. With `follow=1` the answer is server-sent events named `flow` instead, each a {@link Flow}. */
export interface FlowsResponse {
  node: string;
  flows: Flow[];
  stats: FlowStats;
}

// --- GET /v1/explain -----------------------------------------------------------------------------

// --- All of it -----------------------------------------------------------------------------------

/** Each endpoint's path and what it answers, for typed clients (`askAgent` in ./client.ts). */
export interface AgentAnswers {
  '/v1/status': StatusResponse;
  '/v1/endpoints': EndpointsResponse;
  '/v1/policies': PoliciesResponse;
  '/v1/flows': FlowsResponse;
  '/v1/explain': Explanation;
  '/v1/sync': SyncResponse;
  /** Prometheus text. */
  '/metrics': string;
}
