/**
 * Fan-out to a lab's agents (one per node) over their unix sockets, merging what they answer.
 * A node that does not answer is reported beside the others' data, never hides it.
 */
import { agentRequest, agentStream } from '../agent/client.js';
import type { Flow } from '../observe/flows.js';

export interface AgentRef {
  node: string;
  socket: string;
}

export interface NodeError {
  node: string;
  error: string;
}

export interface Merged<T> {
  items: T[];
  errors: NodeError[];
}

async function each<T>(
  agents: AgentRef[],
  path: string,
): Promise<{ ok: [AgentRef, T][]; errors: NodeError[] }> {
  const settled = await Promise.allSettled(
    agents.map((a) => agentRequest<T>(a.socket, path, { timeoutMs: 5000 })),
  );
  const ok: [AgentRef, T][] = [];
  const errors: NodeError[] = [];
  settled.forEach((s, i) => {
    const a = agents[i] as AgentRef;
    if (s.status === 'fulfilled') ok.push([a, s.value]);
    else errors.push({ node: a.node, error: (s.reason as Error).message });
  });
  return { ok, errors };
}

export async function statuses(
  agents: AgentRef[],
): Promise<Merged<Record<string, unknown> & { node: string }>> {
  const { ok, errors } = await each<Record<string, unknown>>(agents, '/v1/status');
  return { items: ok.map(([a, s]) => ({ ...s, node: a.node })), errors };
}

export async function endpoints(agents: AgentRef[]): Promise<Merged<Record<string, unknown>>> {
  const { ok, errors } = await each<Record<string, unknown>[]>(agents, '/v1/endpoints');
  const items = ok
    .flatMap(([a, list]) => list.map((e): Record<string, unknown> => ({ ...e, node: a.node })))
    .sort((x, y) => String(x.id).localeCompare(String(y.id)));
  return { items, errors };
}

interface AgentPolicy {
  policy: string;
  kind: string;
  namespace?: string;
  name: string;
  directions: string[];
  selects: string[];
  rules: string[];
}

/** One entry per policy, with the pods it selects on every node. */
export async function policies(agents: AgentRef[]): Promise<Merged<AgentPolicy & { nodes: string[] }>> {
  const { ok, errors } = await each<AgentPolicy[]>(agents, '/v1/policies');
  const merged = new Map<string, AgentPolicy & { nodes: string[] }>();
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
  const { ok, errors } = await each<{ flows: Flow[] }>(agents, `/v1/flows?${q.toString()}`);
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
): Promise<unknown> {
  const ordered = [...agents.filter((a) => a.node === node), ...agents.filter((a) => a.node !== node)];
  let last: unknown = new Error('no agent is running');
  for (const a of ordered) {
    try {
      return await agentRequest(a.socket, `/v1/explain?${query.toString()}`);
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
  const q = new URLSearchParams(query);
  q.set('follow', '1');
  const following = new Set<string>();
  const follow = (a: AgentRef): void => {
    following.add(a.socket);
    agentStream(a.socket, `/v1/flows?${q.toString()}`, (data) => onFlow(data as Flow), signal)
      .catch((e: unknown) => onError({ node: a.node, error: (e as Error).message }))
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
