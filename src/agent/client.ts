/** Talking to agents over their unix sockets: one request, or a stream of server-sent events. */
import { existsSync, readdirSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { errorMessage } from '../util/errors.js';
import type { AgentAnswers, ErrorResponse, Flow } from './api-types.js';
import { AGENTS_ROOT, apiSocket } from './paths.js';

export class AgentUnreachable extends Error {
  constructor(
    readonly socket: string,
    cause: unknown,
  ) {
    super(`no agent answers on ${socket}: ${errorMessage(cause)}`, { cause });
    this.name = 'AgentUnreachable';
  }
}

export function agentRequest<T>(
  socket: string,
  path: string,
  opts: { method?: 'GET' | 'POST'; timeoutMs?: number } = {},
): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, path, method: opts.method ?? 'GET' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('error', (e) => reject(new AgentUnreachable(socket, e)));
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          body = text;
        }
        if ((res.statusCode ?? 500) >= 400) {
          const message = (body as Partial<ErrorResponse>).error ?? text;
          reject(new Error(`agent at ${socket}: ${message}`));
        } else resolve(body as T);
      });
    });
    req.setTimeout(opts.timeoutMs ?? 10_000, () => req.destroy(new Error('timed out')));
    req.on('error', (e) => reject(new AgentUnreachable(socket, e)));
    req.end();
  });
}

/**
 * `path` (a key of {@link AgentAnswers}, with `query` appended) answered as its type says; POST
 * for /v1/sync.
 */
export function askAgent<P extends keyof AgentAnswers>(
  socket: string,
  path: P,
  opts: { query?: URLSearchParams; timeoutMs?: number } = {},
): Promise<AgentAnswers[P]> {
  const search = opts.query?.toString();
  return agentRequest<AgentAnswers[P]>(socket, search ? `${path}?${search}` : path, {
    method: path === '/v1/sync' ? 'POST' : 'GET',
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
  });
}

/** Follows the agent's flows (`query`: pod, verdict, policy) until the stream ends or `signal` aborts. */
export function followAgentFlows(
  socket: string,
  query: URLSearchParams,
  onFlow: (flow: Flow) => void,
  signal?: AbortSignal,
): Promise<void> {
  const q = new URLSearchParams(query);
  q.set('follow', '1');
  return agentStream(socket, `/v1/flows?${q.toString()}`, (data) => onFlow(data as Flow), signal);
}

/** Follows `path` as server-sent events, calling `onEvent` with each `data:` payload parsed; resolves when the stream ends. */
export function agentStream(
  socket: string,
  path: string,
  onEvent: (data: unknown) => void,
  signal?: AbortSignal,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, path, ...(signal ? { signal } : {}) }, (res) => {
      if ((res.statusCode ?? 500) >= 400) {
        reject(new Error(`agent at ${socket} answered ${res.statusCode ?? '?'}`));
        res.resume();
        return;
      }
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block
            .split('\n')
            .filter((l) => l.startsWith('data: '))
            .map((l) => l.slice(6))
            .join('\n');
          if (data) onEvent(JSON.parse(data));
        }
      });
      res.on('end', () => resolve());
      res.on('error', () => resolve());
    });
    req.on('error', (e) => (signal?.aborted ? resolve() : reject(new AgentUnreachable(socket, e))));
    req.end();
  });
}

/** Sockets of the agents kept in `dir`'s subdirectories (one per node). */
export function socketsIn(dir: string): { node: string; socket: string }[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .sort()
    .map((node) => ({ node, socket: apiSocket(join(dir, node)) }))
    .filter((a) => existsSync(a.socket));
}

/** Standalone agents (not a lab's) of every scope. */
export function standaloneAgents(): { scope: string; node: string; socket: string }[] {
  if (!existsSync(AGENTS_ROOT)) return [];
  return readdirSync(AGENTS_ROOT).flatMap((scope) =>
    socketsIn(join(AGENTS_ROOT, scope)).map((a) => ({ scope, ...a })),
  );
}
