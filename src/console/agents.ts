/**
 * Fan-out to a lab's agents (one per node) over their unix sockets, merging what they answer.
 * A node that does not answer is reported beside the others' data, never hides it.
 */
import type { AgentAnswers, Explanation, Flow, StatusResponse } from '../agent/api-types.js';
import { askAgent, followAgentFlows } from '../agent/client.js';
import { errorMessage } from '../util/errors.js';
import type { Merged, NodeEndpoint, NodeError, NodePolicy } from './api-types.js';

export type { Merged, NodeError };

export interface AgentRef {
  node: string;
  socket: string;
}

async function each<P extends keyof AgentAnswers>(
  agents: AgentRef[],
  path: P,
  query?: URLSearchParams,
): Promise<{ ok: [AgentRef, AgentAnswers[P]][]; errors: NodeError[] }> {
  const settled = await Promise.allSettled(
    agents.map((a) => askAgent(a.socket, path, { timeoutMs: 5000, ...(query ? { query } : {}) })),
  );
  const ok: [AgentRef, AgentAnswers[P]][] = [];
  const errors: NodeError[] = [];
  settled.forEach((s, i) => {
    const a = agents[i] as AgentRef;
    if (s.status === 'fulfilled') ok.push([a, s.value]);
    else errors.push({ node: a.node, error: errorMessage(s.reason) });
  });
  return { ok, errors };
}

export async function statuses(agents: AgentRef[]): Promise<Merged<StatusResponse>> {
  const { ok, errors } = await each(agents, '/v1/status');
  return { items: ok.map(([a, s]) => ({ ...s, node: a.node })), errors };
}

export async function endpoints(agents: AgentRef[]): Promise<Merged<NodeEndpoint>> {
  const { ok, errors } = await each(agents, '/v1/endpoints');
  const items = ok
    .flatMap(([a, list]) => list.map((e): NodeEndpoint => ({ ...e, node: a.node })))
    .sort((x, y) => x.id.localeCompare(y.id));
  return { items, errors };
}

/** One entry per policy, with the pods it selects on every node. */
export async function policies(agents: AgentRef[]): Promise<Merged<NodePolicy>> {
  const { ok, errors } = await each(agents, '/v1/policies');
  const merged = new Map<string, NodePolicy>();
  const union = (a: string[], b: string[]): string[] => [...new Set([...a, ...b])].sort();
  for (const [a, list] of ok) {
    for (const p of list) {
      const seen = merged.get(p.policy);
      if (!seen) merged.set(p.policy, { ...p, nodes: [a.node] });
      else
        merged.set(p.policy, {
          ...seen,
          directions: union(seen.directions, p.directions),
          selects: union(seen.selects, p.selects),
          rules: union(seen.rules, p.rules),
          nodes: union(seen.nodes, [a.node]),
        });
    }
  }
  return { items: [...merged.values()].sort((x, y) => x.policy.localeCompare(y.policy)), errors };
}

export async function flows(
  agents: AgentRef[],
  query: URLSearchParams,
  limit: number,
): Promise<Merged<Flow>> {
  const q = new URLSearchParams(query);
  q.set('limit', String(limit));
  const { ok, errors } = await each(agents, '/v1/flows', q);
  const items = ok
    .flatMap(([, r]) => r.flows)
    .sort((a, b) => (a.lastSeen < b.lastSeen ? 1 : -1))
    .slice(0, limit);
  return { items, errors };
}

/** Asks the agent of `node` (or the first that answers) which rule decides. */
export async function explain(
  agents: AgentRef[],
  node: string | undefined,
  query: URLSearchParams,
): Promise<Explanation> {
  const ordered = [...agents.filter((a) => a.node === node), ...agents.filter((a) => a.node !== node)];
  let last: unknown = new Error('no agent is running');
  for (const a of ordered) {
    try {
      return await askAgent(a.socket, '/v1/explain', { query });
    } catch (e) {
      last = e;
      // An agent that cannot explain (no model) or is down: try the next one.
    }
  }
  throw last;
}

/**
 * Follows every agent's flow stream until `signal` aborts, calling `onFlow` for each flow as it
 * arrives; a stream that ends (an agent restarting) is reopened every second.
 */
export function followFlows(
  agents: () => AgentRef[],
  query: URLSearchParams,
  onFlow: (f: Flow) => void,
  onError: (e: NodeError) => void,
  signal: AbortSignal,
): void {
  const following = new Set<string>();
  const follow = (a: AgentRef): void => {
    following.add(a.socket);
    followAgentFlows(a.socket, query, onFlow, signal)
      .catch((e: unknown) => onError({ node: a.node, error: errorMessage(e) }))
      .finally(() => following.delete(a.socket));
  };
  const check = (): void => {
    if (signal.aborted) return;
    let list: AgentRef[] = [];
    try {
      list = agents();
    } catch {
      // no agents right now (a lab being rebuilt): look again in a second
    }
    for (const a of list) if (!following.has(a.socket)) follow(a);
  };
  check();
  const timer = setInterval(check, 1000);
  signal.addEventListener('abort', () => clearInterval(timer), { once: true });
}
