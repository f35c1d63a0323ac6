/**
 * How the pages ask for data. What the APIs answer is typed once, beside the servers that answer
 * it (src/agent/api-types.ts, src/console/api-types.ts); the pages import those types from here.
 */
import type * as AgentApi from '../src/agent/api-types.js';
import type {
  EndpointsResponse,
  ExplainResponse,
  FlowsResponse,
  InfoResponse,
  PoliciesResponse,
} from '../src/console/api-types.js';

export type {
  EndpointSide,
  Explanation,
  Flow,
  RuleRef,
  SideExplanation,
  StatusResponse,
} from '../src/agent/api-types.js';
export type {
  BenchResponse,
  EndpointsResponse,
  InfoResponse,
  Matrix,
  Merged,
  NodeEndpoint,
  NodeError,
  NodePolicy,
  PoliciesResponse,
  PrefiltersResponse,
  PrefilterView,
  ReachOutcome,
  ReachResponse,
  Recommendation,
  ServicesResponse,
  ServiceView,
} from '../src/console/api-types.js';

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

let agentNode: Promise<AgentApi.StatusResponse> | undefined;
const agentStatus = (): Promise<AgentApi.StatusResponse> =>
  (agentNode ??= fetchJson<AgentApi.StatusResponse>('/v1/status'));

/** The agent's own API, in the console API's shapes. */
async function fromAgent(path: string): Promise<unknown> {
  const [route = '', search = ''] = path.split('?');
  const q = search ? `?${search}` : '';
  const { node } = await agentStatus();
  switch (route) {
    case '/api/info': {
      const info: InfoResponse = {
        agents: [await fetchJson<AgentApi.StatusResponse>('/v1/status')],
        errors: [],
        bench: false,
      };
      return info;
    }
    case '/api/endpoints': {
      const list = await fetchJson<AgentApi.EndpointsResponse>('/v1/endpoints');
      const merged: EndpointsResponse = { items: list.map((e) => ({ ...e, node })), errors: [] };
      return merged;
    }
    case '/api/policies': {
      const list = await fetchJson<AgentApi.PoliciesResponse>('/v1/policies');
      const merged: PoliciesResponse = { items: list.map((p) => ({ ...p, nodes: [node] })), errors: [] };
      return merged;
    }
    case '/api/flows': {
      const merged: FlowsResponse = {
        items: (await fetchJson<AgentApi.FlowsResponse>(`/v1/flows${q}`)).flows,
        errors: [],
      };
      return merged;
    }
    case '/api/explain':
      return fetchJson<ExplainResponse>(`/v1/explain${q}`);
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
