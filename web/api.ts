/** What the console's API answers (a subset of the server's shapes), and how the pages ask for it. */

export interface SideInfo {
  globalPolicies: string[];
  networkPolicies: string[];
  default: 'allow' | 'deny';
  rules: number;
}

export interface Endpoint {
  id: string;
  node: string;
  addresses: string[];
  labels: Record<string, string>;
  ports: { name?: string; port: number; protocol: string }[];
  interface: string;
  ingress: SideInfo;
  egress: SideInfo;
}

export interface Policy {
  policy: string;
  kind: string;
  name: string;
  namespace?: string;
  directions: string[];
  selects: string[];
  rules: string[];
  nodes: string[];
}

export interface Flow {
  key: string;
  node: string;
  firstSeen: string;
  lastSeen: string;
  protocol: string;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  direction: 'ingress' | 'egress';
  endpoint?: string;
  verdict: 'allow' | 'deny' | 'log';
  rule: string;
  policy?: string;
  packets: number;
  bytes: number;
  process?: { pid: number; comm: string; pod?: string };
}

export interface NodeError {
  node: string;
  error: string;
}

export interface Merged<T> {
  items: T[];
  errors: NodeError[];
}

export interface AgentStatus {
  node: string;
  backend: string;
  revision?: string;
  lastError?: { message: string };
  repairs: number;
  flows?: { flows: number; events: number };
}

export interface Info {
  lab?: {
    name: string;
    status: string;
    backend?: string;
    revision?: number;
    nodes?: string[];
    pods?: { id: string; node: string; address: string }[];
    ports?: { port: number; protocol: string }[];
  };
  agents: AgentStatus[];
  errors: NodeError[];
  bench: boolean;
}

export interface RuleRef {
  id: string;
  policy: string;
  ruleIndex: number;
  action: string;
  source?: string;
}

export interface SideExplanation {
  endpoint: string;
  direction: 'egress' | 'ingress';
  allowed: boolean;
  reason: string;
  globalPolicies: string[];
  networkPolicies: string[];
  rule?: RuleRef;
  passedBy?: RuleRef;
  logged: RuleRef[];
  text: string;
}

export interface Explanation {
  from: { given: string; address: string; endpoint?: string; node?: string };
  to: { given: string; address: string; endpoint?: string; node?: string };
  protocol: string;
  port?: number;
  allowed: boolean;
  decidedAt: string;
  prefilter?: string;
  egress?: SideExplanation;
  ingress?: SideExplanation;
  summary: string;
}

export interface Matrix {
  port: number;
  protocol: string;
  results: Record<string, Record<string, boolean>>;
}

export interface Reach {
  lab: string;
  backend: string;
  port: number;
  protocol: string;
  measured: Matrix;
  predicted: Matrix;
  durationMs: number;
}

export interface Recommendation {
  concern: string;
  choice: string;
  advice: string;
  reasons: string[];
  measured: boolean;
  weight: number;
}

export interface Bench {
  file: string;
  machine: { kernel: string; cpus: number; node: string };
  scenarios: { name: string; unit: string; better: string; backends: string[]; notes: string[] }[];
  workloadFrom: string;
  advice: {
    backend: string;
    summary: string;
    decidedBy: string[];
    recommendations: Recommendation[];
    elsewhere: Recommendation[];
    kernel: string;
    measured: boolean;
  };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function fetchJson<T>(path: string): Promise<T> {
  const res = await fetch(path, { credentials: 'same-origin', headers: { accept: 'application/json' } });
  const body = (await res.json().catch(() => ({ error: res.statusText }))) as T & { error?: string };
  if (!res.ok) throw new ApiError(res.status, body.error ?? res.statusText);
  return body;
}

/**
 * `console`: served by `switchyard console` (every node of a lab, the reach matrix, bench);
 * `agent`: served by one agent's `--listen` port, which has only its own node's /v1 API.
 */
export const MODE: 'console' | 'agent' =
  document.querySelector<HTMLMetaElement>('meta[name="switchyard-mode"]')?.content === 'agent'
    ? 'agent'
    : 'console';

let agentNode: Promise<AgentStatus> | undefined;
const agentStatus = (): Promise<AgentStatus> => (agentNode ??= fetchJson<AgentStatus>('/v1/status'));

/** The agent's own API, in the console API's shapes. */
async function fromAgent(path: string): Promise<unknown> {
  const [route = '', search = ''] = path.split('?');
  const q = search ? `?${search}` : '';
  const { node } = await agentStatus();
  switch (route) {
    case '/api/info':
      return { agents: [await fetchJson<AgentStatus>('/v1/status')], errors: [], bench: false };
    case '/api/endpoints':
      return {
        items: (await fetchJson<Endpoint[]>('/v1/endpoints')).map((e) => ({ ...e, node })),
        errors: [],
      };
    case '/api/policies':
      return {
        items: (await fetchJson<Policy[]>('/v1/policies')).map((p) => ({ ...p, nodes: [node] })),
        errors: [],
      };
    case '/api/flows':
      return { items: (await fetchJson<{ flows: Flow[] }>(`/v1/flows${q}`)).flows, errors: [] };
    case '/api/explain':
      return fetchJson(`/v1/explain${q}`);
    default:
      throw new ApiError(404, 'this page needs `switchyard console` (the agent serves only its own node)');
  }
}

export function get<T>(path: string): Promise<T> {
  return MODE === 'agent' ? (fromAgent(path) as Promise<T>) : fetchJson<T>(path);
}

/** Where live flows stream from (server-sent events named `flow`). */
export function flowStreamUrl(): string {
  return MODE === 'agent' ? '/v1/flows?follow=1' : '/api/flows/stream';
}

export function query(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}
